"""How long does the window's event loop stall on a large server? (issue 15's target: 50 ms)

    QT_QPA_PLATFORM=offscreen python -m tests.ui.large_server_stall --patients 10000

Generates a server with N patients (one tiny instance each; kept in
``--workdir`` so the next run starts at once), opens the real main window on
it and runs the benchmark's stall probe (a 10 ms timer on the qasync loop)
while the list loads, while the tree scrolls from top to bottom, and while a
search runs and is cleared. Prints one JSON line per phase: the longest
stall, the 99th percentile and, for stalls over 40 ms, where the loop was;
and the CPU time the loop's thread spent between two ticks (the longest,
the 99th percentile, and within the longest stall): on a shared machine a
stall can be time the process was not scheduled. ``--no-stacks`` leaves
out the probe's watchdog thread (the stacks of stalls over 40 ms): the
window has no such thread, and on a busy machine each of its GIL
hand-offs can wait for a core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess
from tests.devtools.bench.stall_probe import StallProbe


def fill(server: OrthancProcess, patients: int) -> None:
    have = len(server.request("GET", "/patients"))
    if have >= patients:
        return
    print(f"generating {patients - have} patients…", file=sys.stderr, flush=True)

    def one(seed: int) -> None:
        spec = synth.make_study_spec(seed, f"STUDY {seed}")
        for data in synth.tiny_instances(spec, 1, size=300, seed=seed):
            server.upload(data)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(100000 + have, 100000 + patients)))


def run_queue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a core (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuProbe:
    """Beside the stall probe: how much CPU the loop's thread used between two ticks of a
    10 ms timer, and how long it waited for a core meanwhile. On a shared machine a late
    tick can mean the process was not scheduled; the CPU time says how long the window
    itself was busy, the wait how long it was kept off the cores."""

    def __init__(self, interval: float = 0.010) -> None:
        self.interval = interval
        self.busy: List[float] = []   # CPU seconds of the loop's thread between two ticks
        # (seconds late, CPU seconds, seconds waiting for a core) between two ticks
        self.late_busy: List[Tuple[float, float, float]] = []
        self._handle: Optional[asyncio.TimerHandle] = None

    def start(self) -> "CpuProbe":
        self._last = (time.monotonic(), time.thread_time(), run_queue_wait())
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)
        return self

    def _tick(self) -> None:
        wall, cpu, wait = time.monotonic(), time.thread_time(), run_queue_wait()
        late = wall - self._last[0] - self.interval
        self.busy.append(cpu - self._last[1])
        self.late_busy.append((late, cpu - self._last[1], wait - self._last[2]))
        self._last = (wall, cpu, wait)
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> Dict[str, Any]:
        if self._handle is not None:
            self._handle.cancel()
        busy = sorted(self.busy) or [0.0]
        worst_late = max(self.late_busy, default=(0.0, 0.0, 0.0))
        # The stall the window caused itself: lateness less the time it waited for a core.
        own = max((max(0.0, late - wait) for late, _cpu, wait in self.late_busy), default=0.0)
        return {"max_cpu_ms": round(1000 * busy[-1], 1),
                "p99_cpu_ms": round(1000 * busy[min(len(busy) - 1, int(len(busy) * 0.99))], 1),
                "cpu_in_longest_stall_ms": round(1000 * worst_late[1], 1),
                "core_wait_in_longest_stall_ms": round(1000 * worst_late[2], 1),
                "max_stall_less_core_wait_ms": round(1000 * own, 1)}


TIMEOUT = 600.0
STACKS = True
SEARCH = "PAT1000*"


async def until(predicate: Callable[[], bool], timeout: Optional[float] = None) -> None:
    timeout = TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the window did not finish in time")
        await asyncio.sleep(0.01)


async def measure(url: str, page_size: int) -> Dict[str, Any]:
    from gui.client import Peer
    from gui.config import AppConfig
    from gui.app import settle_heap
    from gui.ui.main_window import MainWindow

    config = AppConfig(path=Path("/nonexistent/config.json"))
    config.peers = [Peer("Large", url, local=True)]
    results: Dict[str, Any] = {}

    class Probes:
        def __init__(self) -> None:
            self.stall = StallProbe(capture_stacks=STACKS, stack_threshold=0.040).start()
            self.cpu = CpuProbe().start()

        def stop(self) -> Dict[str, Any]:
            return {**self.stall.stop().to_json(), **self.cpu.stop()}

    def probe() -> Probes:
        return Probes()

    started = time.monotonic()
    window = MainWindow(config, None, page_size=page_size)
    window.resize(1200, 760)
    window.show()
    settle_heap()   # as the app does once its window shows
    p = probe()   # from the window shown: the load, not the start-up's imports
    pane = window.panes[0]
    await until(lambda: pane.model.top_level_count >= page_size)
    first_rows = time.monotonic() - started
    await until(lambda: pane.model.is_complete)
    results["load"] = {**p.stop(), "rows": pane.model.top_level_count,
                       "first_rows_s": round(first_rows, 2), "all_rows_s": round(time.monotonic() - started, 2)}

    p = probe()
    bar = pane.tree.verticalScrollBar()
    for step in range(41):
        bar.setValue(bar.maximum() * step // 40)
        await asyncio.sleep(0.05)
    results["scroll"] = p.stop()

    p = probe()
    pane.search(SEARCH)
    await until(lambda: pane.model.is_complete and pane.model.search_text == SEARCH)
    found = pane.model.top_level_count
    pane.search("")
    await until(lambda: pane.model.is_complete and pane.model.search_text == "")
    results["search"] = {**p.stop(), "matching": found}
    window.force_close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--workdir", type=Path, help="keep the generated server here (default /tmp/stall-N)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="seconds to wait for the list (Orthanc 1.10 answers each page of a 50,000-patient "
                             "list in time growing with its offset: minutes on a busy machine)")
    parser.add_argument("--no-stacks", action="store_true",
                        help="no watchdog thread catching the loop's stack in a long stall (on a busy machine "
                             "its GIL hand-offs, every 5 ms, lengthen the stalls it watches)")
    parser.add_argument("--search", default=SEARCH,
                        help="the search run and cleared (default: PAT1000*, 100 matches; PAT1* matches every patient)")
    args = parser.parse_args()
    globals()["TIMEOUT"] = args.timeout
    globals()["SEARCH"] = args.search
    globals()["STACKS"] = not args.no_stacks
    workdir = args.workdir or Path(f"/tmp/stall-{args.patients}")
    workdir.mkdir(parents=True, exist_ok=True)
    server = OrthancProcess(name="large", workdir=workdir, keep_storage=True).start()
    try:
        fill(server, args.patients)
        import qasync
        from PySide6.QtWidgets import QApplication
        app = QApplication.instance() or QApplication([])
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        results = loop.run_until_complete(measure(server.url, args.page_size))
        for phase, data in results.items():
            print(json.dumps({"patients": args.patients, "phase": phase, **data}), flush=True)
        # The machine may be shared: how busy it was (1, 5 and 15 minutes).
        print(json.dumps({"patients": args.patients, "load_average": [round(x, 2) for x in os.getloadavg()],
                          "stacks": STACKS}),
              flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
