"""What a page of patients costs the window's thread, without a server (CPU time, not wall time).

    QT_QPA_PLATFORM=offscreen python -m tests.ui.study_tree_cost --patients 50000

Appends pages of 1,600 made-up patients to a shown pane's study tree, as the
browser does with a server's answers, and reports the thread's CPU time for
appending a page (nodes and Qt rows) and for the view's layout and paint
that follow, first and last page; then for sorting the whole list, for a
reset of it (as a search does) and for a full cyclic collection with the
rows loaded. CPU time is what the window
itself spends: on a shared machine the wall clock also counts the time the
process waited for a core. Compare two versions of the model by pointing
PYTHONPATH at each.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Callable, Dict, List

PAGE = 1600


def cpu_ms(action: Callable[[], object]) -> float:
    start = time.thread_time()
    action()
    return round(1000 * (time.thread_time() - start), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=50000)
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])
    from gui.ui import study_browser
    from gui.ui.peer_pane import PeerPane

    pane = PeerPane()
    pane.resize(1200, 700)
    pane.show()
    app.processEvents()
    browser = pane.model.browser
    gc.collect()
    gc.freeze()   # as the app does once its window shows

    def fill(first_seed: int) -> Dict[str, List[float]]:
        costs: Dict[str, List[float]] = {"append": [], "layout": []}
        seed = first_seed
        while browser.top_level_count < args.patients:
            items = [("Patient", f"{seed + i:08x}-00000000-00000000-00000000-00000000",
                      {"PatientName": f"DOE^JOHN{seed + i}", "PatientID": f"PAT{seed + i}",
                       "PatientBirthDate": "19600101", "PatientSex": "M"}) for i in range(PAGE)]
            seed += PAGE
            costs["append"].append(cpu_ms(lambda: browser._append(browser.root, items)))
            costs["layout"].append(cpu_ms(app.processEvents))   # the view's delayed layout, a paint
        return costs

    costs = fill(0)
    # Without a running asyncio loop the browser would free the old rows at once: keep them,
    # and time one slice of what the loop frees after a reset.
    kept: List[list] = []
    if hasattr(study_browser, "_release_in_slices"):
        study_browser._release_in_slices = lambda *tables, size=5000: kept.append(list(tables))  # type: ignore
    from gui.ui.study_tree_model import COL_PATIENT_ID
    sort_ms = cpu_ms(lambda: pane.model.sort(COL_PATIENT_ID))   # with the pane restoring its view
    sort_layout_ms = cpu_ms(app.processEvents)
    result = {"patients": args.patients, "page": PAGE, "sort_ms": sort_ms, "after_sort_ms": sort_layout_ms,
              "append_first_ms": costs["append"][0], "append_last_ms": costs["append"][-1],
              "append_max_ms": max(costs["append"]),
              "layout_first_ms": costs["layout"][0], "layout_last_ms": costs["layout"][-1],
              "layout_max_ms": max(costs["layout"]),
              "remember_view_ms": cpu_ms(pane._remember_view),
              "reset_ms": cpu_ms(browser.reset), "after_reset_ms": cpu_ms(app.processEvents)}
    if kept:
        ids, nodes = kept[0]
        ids.clear()   # the keys (tuples); then one slice of the rows themselves
        result["free_5000_rows_ms"] = cpu_ms(lambda: [nodes.popitem() for _ in range(5000)])
        kept.clear()
    fill(10 ** 7)
    # What a full collection walks when the rows are not frozen (the browser freezes each
    # page it loads; this loop appends without it).
    result["full_collection_ms"] = cpu_ms(gc.collect)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
