"""Starts transfers from the panes and runs the panel's job controls on the engine.

Ways in: a drag from one pane dropped on the other, the "Send →" /
"← Retrieve" toolbar buttons, the panes' "Send to ▸" context menu, and
files or folders dropped from the file manager (uploaded through the engine).
Everything that waits for the engine runs as an asyncio task on the qasync
loop, so the window never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional, Set, Tuple

from PySide6.QtCore import QMimeData, QObject, QTimer
from PySide6.QtWidgets import QDialog, QMessageBox, QWidget

from gui.client.peer import Peer
from gui.engine.events import CommitmentReport, JobFinished, JobProgress, JobState
from gui.engine.transfer_engine import Job, PlanSummary, TransferEngine
from gui.ui.async_tasks import user_message
from gui.ui.peer_pane import PeerPane
from gui.ui.resource_mime import from_mime_data
from gui.ui.transfers.confirm_dialog import ConfirmDialog
from gui.ui.transfers.jobs_model import JobRow
from gui.ui.transfers.notifications import Notifier
from gui.ui.transfers.skipped_dialog import SkippedFilesDialog

if TYPE_CHECKING:
    from gui.ui.main_window import MainWindow
    from gui.ui.transfers.jobs_panel import JobsPanel

log = logging.getLogger(__name__)


def local_paths(mime: Optional[QMimeData]) -> List[Path]:
    """Local files and folders carried by a drop from the file manager."""
    if mime is None or not mime.hasUrls():
        return []
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


class TransfersController(QObject):
    def __init__(self, window: "MainWindow", panel: "JobsPanel", notifier: Notifier,
                 show_panel: Callable[[], None] = lambda: None) -> None:
        super().__init__(window)
        self.window = window
        self.panel = panel
        self.notifier = notifier
        self._show_panel = show_panel
        self.errors: List[str] = []                 # what the user was told went wrong
        self.last_skipped: List[Tuple[Path, str]] = []
        self.active_confirm: Optional[ConfirmDialog] = None
        self.active_skipped: Optional[SkippedFilesDialog] = None
        self._tasks: Set[asyncio.Future] = set()

    # --- plumbing ------------------------------------------------------------

    @property
    def engine(self) -> Optional[TransferEngine]:
        return self.window.engine

    def _engine(self) -> TransferEngine:
        if self.window.engine is None:
            raise RuntimeError("the transfer engine is not running")
        return self.window.engine

    def run(self, coro: Awaitable[Any], what: str) -> "asyncio.Future[Any]":
        """Run ``coro`` on the loop; a failure is shown to the user as ``what: reason``."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: "asyncio.Future[Any]") -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self.show_error(what, exc)
        task.add_done_callback(done)
        return task

    async def idle(self) -> None:
        """Wait for the tasks started so far (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def show_error(self, what: str, error: Any) -> None:
        text = user_message(error, what) if isinstance(error, BaseException) else f"{what}: {error}"
        self.errors.append(text)
        log.warning("%s", text)
        box = QMessageBox(QMessageBox.Icon.Warning, "Orthanc Transfers", text, QMessageBox.StandardButton.Ok,
                          self._dialog_parent())
        box.setObjectName("transferErrorBox")
        box.open()   # not exec(): a nested event loop would stall transfers
        self.notifier.say("Problem", text, ok=False)

    def _dialog_parent(self) -> QWidget:
        return self.window

    def panes(self) -> List[PeerPane]:
        return list(self.window.panes)

    def other_pane(self, pane: PeerPane) -> Optional[PeerPane]:
        for other in self.panes():
            if other is not pane:
                return other
        return None

    def peer_named(self, name: str) -> Optional[Peer]:
        for pane in self.panes():
            if pane.peer is not None and pane.peer.name == name:
                return pane.peer
        for peer in self.window.config.peers:
            if peer.name == name:
                return peer
        return None

    # --- drag and drop ---------------------------------------------------------

    def accepts_drag(self, pane: PeerPane, mime: Optional[QMimeData]) -> bool:
        """Whether a drag may be dropped on ``pane`` (decides the cursor)."""
        if pane.peer is None:
            return False
        drag = from_mime_data(mime)
        if drag is not None:
            return drag.peer != pane.peer.name
        return bool(local_paths(mime))

    def handle_drop(self, pane: PeerPane, mime: Optional[QMimeData]) -> bool:
        """A drop on ``pane``: resources from the other pane, or local files."""
        if not self.accepts_drag(pane, mime):
            return False
        drag = from_mime_data(mime)
        if drag is not None:
            source = self.peer_named(drag.peer)
            if source is None:
                self.show_error("Cannot start transfer", f"the peer {drag.peer!r} is not configured any more")
                return False
            self.run(self.start_transfer(source, pane.peer, drag.resources, drag.labels),
                     f"Transfer {drag.peer} → {pane.peer.name}")
            return True
        self.run(self.upload(pane.peer, local_paths(mime)), f"Upload to {pane.peer.name}")
        return True

    # --- buttons and menus -----------------------------------------------------

    def send_from(self, source_pane: PeerPane, target_pane: Optional[PeerPane] = None) -> bool:
        """Send the selection of ``source_pane`` to ``target_pane`` (default: the other pane)."""
        target_pane = target_pane or self.other_pane(source_pane)
        if target_pane is None or target_pane.peer is None or source_pane.peer is None:
            self.notifier.say("Nothing to do", "choose a server in both panes first", ok=False)
            return False
        return self.send_to_peer(source_pane, target_pane.peer)

    def send_to_peer(self, source_pane: PeerPane, target: Peer) -> bool:
        resources = source_pane.selected_resources()
        if not resources:
            self.notifier.say("Nothing selected", f"select patients, studies or series in {source_pane.peer.name}",
                              ok=False)
            return False
        if target.name == source_pane.peer.name:
            return False
        labels = labels_of(source_pane, resources)
        self.run(self.start_transfer(source_pane.peer, target, resources, labels),
                 f"Transfer {source_pane.peer.name} → {target.name}")
        return True

    def send_menu_targets(self, source_pane: PeerPane) -> List[Peer]:
        """Peers offered in the "Send to ▸" menu of ``source_pane``."""
        peers = list(self.window.config.peers)
        current = source_pane.peer.name if source_pane.peer else None
        return [p for p in peers if p.name != current]

    # --- starting jobs -----------------------------------------------------------

    def _confirm_enabled(self) -> bool:
        return bool(self.window.config.ui.get("ConfirmTransfers", True))

    async def start_transfer(self, source: Peer, target: Peer, resources: List[dict],
                             labels: Optional[List[str]] = None) -> Optional[Job]:
        engine = self._engine()
        labels = labels or [f"{r['Level']} {r['ID']}" for r in resources]
        planned: List[PlanSummary] = []
        if self._confirm_enabled() and not await self._confirm(source, target, resources, labels, planned):
            return None
        description = labels[0] if len(labels) == 1 else f"{len(labels)} items: {labels[0]}, …"
        # The plan the user confirmed is the one the job runs (not planned twice).
        job = await engine.submit(source, target, resources, description=description,
                                  plan=planned[0] if planned else None)
        self.track(job)
        return job

    async def _confirm(self, source: Peer, target: Peer, resources: List[dict], labels: List[str],
                       planned: List[PlanSummary]) -> bool:
        """Ask the user; the plan shown is appended to ``planned``."""
        dialog = ConfirmDialog(source.name, target.name, labels, self._dialog_parent())
        self.active_confirm = dialog
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        dialog.finished.connect(lambda result: answer.done() or answer.set_result(result))

        async def fill_in() -> None:
            try:
                plan = await self._engine().plan(source, target, resources)
            except Exception as exc:  # noqa: BLE001 - shown in the dialog, the user decides
                dialog.set_plan_error(user_message(exc, "Could not plan"))
            else:
                planned.append(plan)
                dialog.set_plan(plan)
        planning = asyncio.ensure_future(fill_in())
        dialog.open()
        try:
            accepted = await answer == QDialog.DialogCode.Accepted
        finally:
            planning.cancel()
            self.active_confirm = None
            dialog.deleteLater()
        if accepted and dialog.dont_ask.isChecked():
            self._stop_asking()
        return accepted

    def _stop_asking(self) -> None:
        config = self.window.config
        config.ui["ConfirmTransfers"] = False
        try:
            from gui.config.settings import save_config
            save_config(config)
        except OSError as exc:
            self.show_error("Could not save the settings", exc.strerror)

    async def upload(self, target: Peer, paths: List[Path]) -> Optional[Job]:
        engine = self._engine()
        job, skipped = await engine.upload_files(target, paths)
        self.last_skipped = list(skipped)
        if job is not None:
            self.track(job)
        if skipped:
            imported = job.progress.instances_total if job is not None and job.progress else 0
            dialog = SkippedFilesDialog(list(skipped), imported, target.name, self._dialog_parent())
            self.active_skipped = dialog
            dialog.open()
        elif job is None:
            self.notifier.say("Nothing to upload", "no files were dropped", ok=False)
        return job

    def track(self, job: Job) -> None:
        """Show a job in the panel and follow it."""
        self.panel.add_job(JobRow.from_job(job))
        self.panel.select_job(job.id)
        self._show_panel()

    # --- the panel's buttons (JobActions) ----------------------------------------

    def pause_job(self, job_id: str) -> None:
        self._job_action(job_id, "pause", "Pause")

    def resume_job(self, job_id: str) -> None:
        self._job_action(job_id, "resume", "Resume")

    def cancel_job(self, job_id: str) -> None:
        self._job_action(job_id, "cancel", "Cancel")

    def retry_job(self, job_id: str) -> None:
        async def retry() -> None:
            job = await self._engine().resubmit(job_id)
            self.track(job)
        self.run(retry(), "Retry")

    def remove_job(self, job_id: str) -> None:
        async def remove() -> None:
            if self.engine is not None:
                await self.engine.remove(job_id)
            self.panel.remove_job(job_id)
        self.run(remove(), "Remove")

    def job_limit(self, job_id: str) -> int:
        return int(self._engine().job(job_id).options.MaxRate)

    def set_job_limit(self, job_id: str, kb_per_second: int) -> None:
        try:
            self._engine().set_job_rate(job_id, kb_per_second)
        except Exception as exc:  # noqa: BLE001 - e.g. removed meanwhile: say so, keep going
            self.notifier.say("Speed limit", str(exc), ok=False)
            return
        self.panel.set_job_limit(job_id, int(self._engine().job(job_id).options.MaxRate))
        shown = f"{kb_per_second} KB/s" if kb_per_second else "no limit of its own"
        self.notifier.say("Speed limit", f"{self._engine().job(job_id).description or 'Transfer'}: {shown}")

    def _job_action(self, job_id: str, method: str, what: str) -> None:
        async def act() -> None:
            engine = self._engine()
            actions = {"pause": engine.pause, "resume": engine.resume, "cancel": engine.cancel}
            await actions[method](job_id)
            # The engine's next progress event will say the same; this is sooner.
            self.panel.model.set_state(job_id, engine.job(job_id).state)
            self.panel.add_job(JobRow.from_job(engine.job(job_id)))
        self.run(act(), what)

    # --- engine news ----------------------------------------------------------------

    def on_jobs_progressed(self, events: List[JobProgress]) -> None:
        for job_id in self.panel.apply_progress(events):
            # A job started elsewhere (the CLI in the same engine, a resubmit): show it.
            try:
                job = self.engine.job(job_id) if self.engine is not None else None
            except Exception:  # noqa: BLE001 - removed meanwhile: nothing to show
                job = None
            if job is not None:
                self.panel.add_job(JobRow.from_job(job))

    def on_job_finished(self, event: JobFinished) -> None:
        report: CommitmentReport = event.report
        try:
            job = self.engine.job(event.job_id) if self.engine is not None else None
        except Exception:  # noqa: BLE001 - removed meanwhile
            job = None
        if job is None or job.report is not report:
            # Events reach the UI in batches: this is news of an earlier run of
            # a job that was resubmitted (or removed) since.
            return
        self.panel.apply_report(report)
        if report.state != JobState.CANCELED:
            for pane in self.panes():
                if pane.peer is not None and pane.peer.name == report.target:
                    pane.refresh()   # show what arrived
        self.notifier.job_finished(report)

    def load_existing_jobs(self) -> None:
        """Jobs the engine knows (persisted ones come back paused)."""
        if self.engine is None:
            return
        for job in sorted(self.engine.jobs(), key=lambda j: j.created):
            self.panel.add_job(JobRow.from_job(job))

    # --- closing ----------------------------------------------------------------------

    def running_jobs(self) -> List[str]:
        if self.engine is None:
            return []
        return [j.id for j in self.engine.jobs() if j.state in (JobState.RUNNING, JobState.PENDING)]

    def may_close(self) -> bool:
        """The window's close veto: ask only while jobs are running."""
        running = self.running_jobs()
        return not running or self.ask_pause_on_close(len(running))

    def close_question(self) -> "CloseQuestion":
        """The question asked on close; it follows the jobs while it is shown."""
        return CloseQuestion(self.running_jobs, demo=self.window.demo, parent=self._dialog_parent())

    def ask_pause_on_close(self, count: int) -> bool:
        """True: quit (running jobs are paused). Overridable (tests)."""
        box = self.close_question()
        box.exec()
        return box.quit_chosen()


class CloseQuestion(QMessageBox):
    """"Transfers are running: quit?" that stays true while it waits for an answer:
    the count follows the jobs, and when the last one ends the box answers itself
    (there is nothing left to ask about). In demo mode it does not promise that
    paused jobs come back: the demo's storage is deleted on quit."""

    def __init__(self, running: Callable[[], List[str]], *, demo: bool,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(QMessageBox.Icon.Question, "Transfers are running", "", parent=parent)
        self.setObjectName("closeQuestion")
        self._running = running
        self.demo = demo
        self.quit_button = self.addButton("Quit anyway" if demo else "Pause and quit",
                                          QMessageBox.ButtonRole.AcceptRole)
        self.keep_button = self.addButton("Keep running", QMessageBox.ButtonRole.RejectRole)
        self.setDefaultButton(self.keep_button)
        self._nothing_left = False
        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def refresh(self) -> None:
        count = len(self._running())
        if count == 0:
            self._timer.stop()
            self._nothing_left = True
            self.done(QDialog.DialogCode.Accepted)
            return
        running = f"{count} transfer{'s are' if count != 1 else ' is'} still running."
        if self.demo:
            self.setText(f"{running}\n\nQuit anyway? This is the demo: its servers and their "
                         "storage are deleted when the app quits, so the transfer cannot be resumed.")
        else:
            self.setText(f"{running}\n\nPause and quit? Paused transfers are kept and come back "
                         "with a Resume button the next time the app starts.")

    def quit_chosen(self) -> bool:
        return self._nothing_left or self.clickedButton() is self.quit_button


def labels_of(pane: PeerPane, resources: List[dict]) -> List[str]:
    """Human labels for a selection, when the pane can tell them."""
    labels = pane.selected_labels()
    if len(labels) == len(resources):
        return labels
    return [f"{r['Level']} {r['ID'][:8]}…" for r in resources]
