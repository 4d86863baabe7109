"""Event-loop stall probe: how late does a 10 ms timer fire?

Works on any asyncio loop, qasync's included (it only uses ``call_later``
and ``time()``), so the benchmark can run it inside the GUI process while a
transfer runs. A late timer means the loop was blocked: the UI froze for
that long.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["StallProbe", "StallReport"]


@dataclass(frozen=True)
class StallReport:
    samples: int
    max_ms: float
    p99_ms: float
    mean_ms: float

    def to_json(self) -> dict:
        return {"samples": self.samples, "max_ms": round(self.max_ms, 1),
                "p99_ms": round(self.p99_ms, 1), "mean_ms": round(self.mean_ms, 2)}


class StallProbe:
    """Schedules a timer every ``interval`` seconds and records how late it fires.

    ``probe.start()`` (from the loop's thread, or pass ``loop``), later
    ``report = probe.stop()``. Also an async context manager.
    """

    def __init__(self, interval: float = 0.010, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        self.interval = interval
        self._loop = loop
        self._handle: Optional[asyncio.TimerHandle] = None
        self._due = 0.0
        self.delays: List[float] = []  # seconds late, one per tick

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> "StallProbe":
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self.delays = []
        self._schedule()
        return self

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self.delays.append(max(0.0, self._loop.time() - self._due))
        self._schedule()

    def stop(self) -> StallReport:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        return self.report()

    def report(self) -> StallReport:
        if not self.delays:
            return StallReport(0, 0.0, 0.0, 0.0)
        ordered = sorted(self.delays)
        # Nearest-rank percentile: the delay that 99 % of ticks did not exceed.
        rank = max(0, math.ceil(0.99 * len(ordered)) - 1)
        return StallReport(samples=len(ordered), max_ms=ordered[-1] * 1000,
                           p99_ms=ordered[rank] * 1000,
                           mean_ms=sum(ordered) / len(ordered) * 1000)

    async def __aenter__(self) -> "StallProbe":
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
