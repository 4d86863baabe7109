"""How long does the window's event loop stall on a large server? (issue 15's target: 50 ms)

    QT_QPA_PLATFORM=offscreen python -m tests.ui.large_server_stall --patients 10000

Generates a server with N patients (one tiny instance each; kept in
``--workdir`` so the next run starts at once), opens the real main window on
it and runs the benchmark's stall probe (a 10 ms timer on the qasync loop)
while the list loads, while the tree scrolls from top to bottom, and while a
search runs and is cleared. Prints one JSON line per phase: the longest
stall, the 99th percentile and, for stalls over 40 ms, where the loop was.
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
from typing import Any, Callable, Dict

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


async def until(predicate: Callable[[], bool], timeout: float = 600.0) -> None:
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

    def probe() -> StallProbe:
        return StallProbe(capture_stacks=True, stack_threshold=0.040).start()

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
    results["load"] = {**p.stop().to_json(), "rows": pane.model.top_level_count,
                       "first_rows_s": round(first_rows, 2), "all_rows_s": round(time.monotonic() - started, 2)}

    p = probe()
    bar = pane.tree.verticalScrollBar()
    for step in range(41):
        bar.setValue(bar.maximum() * step // 40)
        await asyncio.sleep(0.05)
    results["scroll"] = p.stop().to_json()

    p = probe()
    pane.search("PAT1000*")
    await until(lambda: pane.model.is_complete and pane.model.search_text == "PAT1000*")
    found = pane.model.top_level_count
    pane.search("")
    await until(lambda: pane.model.is_complete and pane.model.search_text == "")
    results["search"] = {**p.stop().to_json(), "matching": found}
    window.force_close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--workdir", type=Path, help="keep the generated server here (default /tmp/stall-N)")
    args = parser.parse_args()
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
        print(json.dumps({"patients": args.patients, "load_average": [round(x, 2) for x in os.getloadavg()]}),
              flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
