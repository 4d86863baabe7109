#!/usr/bin/env python3
"""Render the main window offscreen during and after a real transfer; save PNGs.

Starts the two demo Orthanc servers ("Local demo" with generated studies,
"Remote demo"), puts an emulated 40 Mbit/s link in front of "Remote demo" so
the transfer lasts long enough to be caught half-way, sends the largest
study with the "Send →" button and grabs the window:

    resources/screenshots/speed-limit-menu.png   the job's context menu, Speed limit… highlighted
    resources/screenshots/transfer-running.png   buckets filling up, the job capped at 2 MB/s
    resources/screenshots/transfer-finished.png  the green storage commitment
    resources/screenshots/commitment-audit.png   the commitment table's audit columns, widened
    resources/screenshots/retrieve-confirm.png   "← Retrieve" of a study only the remote has: the confirmation
    resources/screenshots/transfer-failed.png    the link cut: a job that failed, and says why

Run:  QT_QPA_PLATFORM=offscreen python scripts/take_screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ORTHANC_TRANSFERS_KEYRING", "0")

WINDOW_SIZE = (1400, 850)
LINK_MBIT = 40.0
LIMIT_KB = 2048          # the cap set from the job's menu: 2 MB/s, under the 5 MB/s link
AUDIT_SIZE = (2300, 1000)   # wide enough for the commitment's audit columns side by side


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def settle(seconds: float = 0.4) -> None:
    """Let pending repaints and the event bridge's next frame happen."""
    await asyncio.sleep(seconds)


async def capture(out: Path) -> None:
    from PySide6.QtCore import QItemSelectionModel
    from PySide6.QtWidgets import QApplication

    from gui.client.peer import Peer
    from gui.engine import TransferEngine
    from gui.engine.events import JobState
    from tests.devtools.netem.wan_proxy import ThreadedWanProxy
    from gui.sandbox.demo import DemoServers, REMOTE_NAME
    from gui.ui.main_window import MainWindow

    demo = DemoServers(studies=3, ct_slices=40)
    proxy = None
    engine = None
    window = None
    try:
        config = await asyncio.get_running_loop().run_in_executor(None, demo.start)
        remote_server = demo.servers[1]
        proxy = ThreadedWanProxy("127.0.0.1", remote_server.http_port, latency_ms=5,
                                 bandwidth_mbit=LINK_MBIT).start()
        config.peers = [p if p.name != REMOTE_NAME else Peer(REMOTE_NAME, proxy.url) for p in config.peers]
        config.transfers.BucketSize = 256      # KB: more, smaller buckets to watch
        config.ui["ConfirmTransfers"] = False
        engine = TransferEngine(config.transfers, data_dir=Path(tempfile.mkdtemp(prefix="shots-engine-")))
        await engine.start()

        window = MainWindow(config, engine)
        window.resize(*WINDOW_SIZE)
        window.show()
        window.transfers._size_dock()   # again, now that the window has its final size
        left, right = window.panes
        await until(lambda: left.model.is_complete and right.model.is_complete, 30, "the study lists")

        # Pick the largest study on the left, expand it, select it.
        studies = [s for s in remote_studies(demo.servers[0])]
        study_id, patient_id = max(studies, key=lambda s: s[2])[:2]
        left.tree.expand(left.model.index_of("Patient", patient_id))
        await until(lambda: left.model.index_of("Study", study_id).isValid(), 10, "the study row")
        index = left.model.index_of("Study", study_id)
        left.tree.expand(index)
        left.tree.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                          | QItemSelectionModel.SelectionFlag.Rows)
        first_patient = right.model.index(0, 0)
        if first_patient.isValid():
            right.tree.expand(first_patient)
        await settle()

        ui = window.transfers
        ui.send_action.trigger()
        await until(lambda: bool(engine.jobs()), 20, "the job")
        job = engine.jobs()[-1]
        await until(lambda: job.progress is not None and job.progress.raw_done > 0
                    or job.state.finished, 120, "the transfer to start sending")
        # Cap the job from its context menu, as a user on a shared WAN link would (early, so
        # that its average speed at the end is the cap's).
        await settle(0.3)
        menu = save_with_job_menu(window, job.id, out / "speed-limit-menu.png")
        ui.panel.ask_rate = lambda _current: LIMIT_KB     # the dialog's answer
        next(a for a in menu.actions() if a.objectName() == "limitJobAction").trigger()
        menu.close()
        await until(lambda: job.progress is not None and job.progress.fraction >= 0.45
                    or job.state.finished, 120, "the transfer to get half-way")
        await settle(0.3)
        save(window, out / "transfer-running.png")

        report = await asyncio.wait_for(job.wait(), 300)
        if report.state != JobState.SUCCESS:
            raise RuntimeError(f"the transfer did not succeed: {report.error}")
        await until(lambda: ui.panel.detail.commitment.report is not None, 10, "the commitment")
        await until(lambda: right.model.index_of("Study", study_id).isValid() or
                    right.model.is_complete and right.model.top_level_count > 1, 20, "the target to refresh")
        patient_index = right.model.index_of("Patient", patient_id)
        if patient_index.isValid():
            right.tree.expand(patient_index)
            await until(lambda: right.model.index_of("Study", study_id).isValid(), 10, "the new study")
            right.tree.selectionModel().select(right.model.index_of("Study", study_id),
                                               QItemSelectionModel.SelectionFlag.ClearAndSelect
                                               | QItemSelectionModel.SelectionFlag.Rows)
        # Export the audit record under its proposed name (in a scratch folder, not the user's
        # Documents), so the picture shows the "Saved …" note beside the buttons.
        commitment = ui.panel.detail.commitment
        commitment.export(Path(tempfile.mkdtemp(prefix="shots-export-"))
                          / commitment.default_export_path("csv").name, "csv")
        await settle(0.6)
        save(window, out / "transfer-finished.png")
        QApplication.processEvents()
        await save_audit_columns(window, out / "commitment-audit.png")

        # A retrieve: the study only "Remote demo" has comes back, through the confirmation.
        remote_only = [s for s in remote_studies(remote_server) if s[1] != patient_id]
        await retrieve_with_confirmation(window, engine, config, remote_only[0][0], remote_only[0][1],
                                         out / "retrieve-confirm.png")

        # A failure: the link to "Remote demo" goes down, the next study cannot be sent.
        proxy.stop()
        proxy = None
        config.transfers.MaxHttpRetries = 0
        other_id, other_patient = min(studies, key=lambda s: s[2])[:2]
        left.tree.expand(left.model.index_of("Patient", other_patient))
        await until(lambda: left.model.index_of("Study", other_id).isValid(), 10, "the second study")
        left.tree.selectionModel().select(left.model.index_of("Study", other_id),
                                          QItemSelectionModel.SelectionFlag.ClearAndSelect
                                          | QItemSelectionModel.SelectionFlag.Rows)
        done = {j.id for j in engine.jobs()}
        ui.send_action.trigger()
        await until(lambda: any(j.id not in done for j in engine.jobs()), 20, "the second job")
        failed = next(j for j in engine.jobs() if j.id not in done)
        await asyncio.wait_for(failed.wait(), 120)
        await until(lambda: ui.panel.detail.commitment.report is not None
                    and ui.panel.detail.job_id == failed.id, 10, "the failure's report")
        await settle(0.6)
        save(window, out / "transfer-failed.png")
    finally:
        if window is not None:
            window.force_close()
            await window.shutdown()
        if engine is not None:
            await engine.close()
        if proxy is not None:
            proxy.stop()
        await asyncio.get_running_loop().run_in_executor(None, demo.stop)


def remote_studies(server: Any) -> list:
    """(study id, patient id, size) of every study on a server."""
    out = []
    for study_id in server.request("GET", "/studies"):
        study = server.request("GET", f"/studies/{study_id}")
        size = server.request("GET", f"/studies/{study_id}/statistics")["DiskSize"]
        out.append((study_id, study["ParentPatient"], int(size)))
    return out


def save_with_job_menu(window: Any, job_id: str, path: Path) -> Any:
    """The window with the job's context menu open on its row, "Speed limit…" highlighted.

    A menu is a window of its own, which ``window.grab()`` leaves out, and the offscreen
    screen is smaller than the window (Qt would move the menu to fit it): the menu is
    painted where a right-click on the row opens it on a screen large enough."""
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QPainter

    panel = window.transfers.panel
    index = panel.proxy.mapFromSource(panel.model.index(panel.model.row_of(job_id), 2))
    click = panel.table.visualRect(index).center()
    menu = panel.context_menu_for(job_id)
    menu.popup(panel.table.viewport().mapToGlobal(click))
    menu.setActiveAction(next(a for a in menu.actions() if a.objectName() == "limitJobAction"))
    menu.repaint()
    picture = window.grab()
    painter = QPainter(picture)
    painter.drawPixmap(panel.table.viewport().mapTo(window, click) + QPoint(2, 2), menu.grab())
    painter.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not picture.save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"saved {path}", flush=True)
    return menu


async def retrieve_with_confirmation(window: Any, engine: Any, config: Any, study_id: str, patient_id: str,
                                     path: Path) -> None:
    """Select a study in the right pane, press "← Retrieve", grab the confirmation once it has
    the plan (painted over the window, centred as Qt places it), start it and wait for the end."""
    from PySide6.QtCore import QItemSelectionModel, QPoint
    from PySide6.QtGui import QColor, QPainter

    from gui.engine.events import JobState
    ui = window.transfers
    right = window.panes[1]
    right.tree.expand(right.model.index_of("Patient", patient_id))
    await until(lambda: right.model.index_of("Study", study_id).isValid(), 10, "the remote study")
    right.tree.selectionModel().select(right.model.index_of("Study", study_id),
                                       QItemSelectionModel.SelectionFlag.ClearAndSelect
                                       | QItemSelectionModel.SelectionFlag.Rows)
    config.ui["ConfirmTransfers"] = True
    before = {j.id for j in engine.jobs()}
    ui.retrieve_action.trigger()
    controller = ui.controller
    await until(lambda: controller.active_confirm is not None and controller.active_confirm.plan is not None,
                30, "the confirmation's plan")
    dialog = controller.active_confirm
    await settle(0.3)
    picture = window.grab()
    box = dialog.grab()
    painter = QPainter(picture)
    painter.fillRect(picture.rect(), QColor(0, 0, 0, 60))       # the window behind a modal dialog
    painter.drawPixmap(QPoint((picture.width() - box.width()) // 2, (picture.height() - box.height()) // 3), box)
    painter.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not picture.save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"saved {path}", flush=True)
    dialog.accept()
    await until(lambda: any(j.id not in before for j in engine.jobs()), 20, "the retrieve job")
    job = next(j for j in engine.jobs() if j.id not in before)
    report = await asyncio.wait_for(job.wait(), 120)
    if report.state != JobState.SUCCESS:
        raise RuntimeError(f"the retrieve did not succeed: {report.error}")
    config.ui["ConfirmTransfers"] = False
    await settle(0.6)


async def save_audit_columns(window: Any, path: Path) -> None:
    """The storage commitment alone, the window widened so that every audit column shows."""
    commitment = window.transfers.panel.detail.commitment
    size = window.size()
    panel = window.transfers.panel
    splitters = [(w, w.sizes()) for w in (panel.splitter, panel.detail.splitter)]
    window.resize(*AUDIT_SIZE)
    window.transfers._size_dock()
    await settle(0.3)
    # Most of the window to the dock and of the dock to the commitment: a dozen rows show.
    from PySide6.QtCore import Qt
    window.resizeDocks([window.transfers.dock], [AUDIT_SIZE[1] - 200], Qt.Orientation.Vertical)
    await settle(0.2)
    panel.splitter.setSizes([90, 2000])
    panel.detail.splitter.setSizes([60, 2000])
    await settle(0.3)
    commitment.table.resizeColumnsToContents()
    await settle(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not commitment.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"saved {path}", flush=True)
    window.resize(size)
    window.transfers._size_dock()
    for splitter, sizes in splitters:
        splitter.setSizes(sizes)
    await settle(0.3)


def save(window: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"saved {path}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "screenshots")
    args = parser.parse_args()

    import qasync
    from PySide6.QtWidgets import QApplication

    from gui.app import _apply_look
    app = QApplication.instance() or QApplication(["take_screenshots"])
    app.setQuitOnLastWindowClosed(False)   # closing the window must not stop the loop mid-clean-up
    _apply_look(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(capture(args.out))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f"take_screenshots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
