"""Event-loop stall probe: how late does a 10 ms timer fire?

Works on any asyncio loop, qasync's included (it only uses ``call_later``
and ``time()``), so the benchmark can run it inside the GUI process while a
transfer runs. A late timer means the loop was blocked: the UI froze for
that long.

With ``capture_stacks=True`` a watchdog thread also records where the
loop's thread was when a stall passed ``stack_threshold``: the culprit of
each long stall, file and line, without a profiler.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

__all__ = ["StallProbe", "StallReport"]


@dataclass(frozen=True)
class StallReport:
    samples: int
    max_ms: float
    p99_ms: float
    mean_ms: float
    # (how long the loop was blocked, innermost frames "file:line function" when caught)
    stacks: Tuple[Tuple[float, Tuple[str, ...]], ...] = field(default=())

    def to_json(self) -> dict:
        data = {"samples": self.samples, "max_ms": round(self.max_ms, 1),
                "p99_ms": round(self.p99_ms, 1), "mean_ms": round(self.mean_ms, 2)}
        if self.stacks:
            data["stalls"] = [{"blocked_ms": round(ms, 1), "stack": list(frames)} for ms, frames in self.stacks]
        return data


class StallProbe:
    """Schedules a timer every ``interval`` seconds and records how late it fires.

    ``probe.start()`` (from the loop's thread, or pass ``loop``), later
    ``report = probe.stop()``. Also an async context manager.
    """

    def __init__(self, interval: float = 0.010, loop: Optional[asyncio.AbstractEventLoop] = None, *,
                 capture_stacks: bool = False, stack_threshold: float = 0.040, max_stacks: int = 10) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        self.interval = interval
        self._loop = loop
        self._handle: Optional[asyncio.TimerHandle] = None
        self._due = 0.0
        self.delays: List[float] = []  # seconds late, one per tick
        self.capture_stacks = capture_stacks
        self.stack_threshold = stack_threshold
        self.max_stacks = max_stacks
        self.stacks: List[Tuple[float, Tuple[str, ...]]] = []
        self._last_tick = 0.0
        self._loop_thread = 0
        self._watchdog: Optional[threading.Thread] = None
        self._stop_watchdog = threading.Event()
        self._open_capture: Optional[list] = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> "StallProbe":
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self.delays = []
        self.stacks = []
        self._last_tick = time.monotonic()
        self._schedule()
        if self.capture_stacks:
            self._loop_thread = threading.get_ident()
            self._stop_watchdog.clear()
            self._watchdog = threading.Thread(target=self._watch, name="stall-probe", daemon=True)
            self._watchdog.start()
        return self

    def _watch(self) -> None:
        """Runs in its own thread: catch the loop's thread in the act of stalling."""
        caught_tick = -1.0
        while not self._stop_watchdog.wait(0.005):
            last = self._last_tick
            blocked = time.monotonic() - last - self.interval
            if blocked < self.stack_threshold or last == caught_tick or len(self.stacks) >= self.max_stacks:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            caught_tick = last  # one capture per stall
            frames = traceback.extract_stack(frame)[-16:]
            record = [blocked * 1000, tuple(f"{f.filename}:{f.lineno} {f.name}" for f in reversed(frames))]
            self.stacks.append(record)  # type: ignore[arg-type]
            self._open_capture = record  # the tick that ends this stall sets its full length

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        delay = max(0.0, self._loop.time() - self._due)
        self.delays.append(delay)
        capture, self._open_capture = self._open_capture, None
        if capture is not None:
            capture[0] = max(capture[0], delay * 1000)
        self._last_tick = time.monotonic()
        self._schedule()

    def stop(self) -> StallReport:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._watchdog is not None:
            self._stop_watchdog.set()
            self._watchdog.join()
            self._watchdog = None
        return self.report()

    def report(self) -> StallReport:
        if not self.delays:
            return StallReport(0, 0.0, 0.0, 0.0, self._stacks())
        ordered = sorted(self.delays)
        # Nearest-rank percentile: the delay that 99 % of ticks did not exceed.
        rank = max(0, math.ceil(0.99 * len(ordered)) - 1)
        return StallReport(samples=len(ordered), max_ms=ordered[-1] * 1000,
                           p99_ms=ordered[rank] * 1000,
                           mean_ms=sum(ordered) / len(ordered) * 1000, stacks=self._stacks())

    def _stacks(self) -> Tuple[Tuple[float, Tuple[str, ...]], ...]:
        """Captured stalls, longest first."""
        return tuple(sorted(((float(ms), tuple(frames)) for ms, frames in self.stacks), key=lambda x: -x[0]))

    async def __aenter__(self) -> "StallProbe":
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
