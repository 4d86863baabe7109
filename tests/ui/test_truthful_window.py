"""What a technician stumbled on in the first minutes (issue 15, "Wrong today"): settings that
apply, a failed plan that cannot be started, failures that look like failures, controls that
follow the selection, an honest quit question, a window that keeps its width."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QApplication, QDialog

from gui.client.peer import Peer
from gui.engine.events import JobProgress, JobState
from gui.sandbox import synthetic_studies as synth
from gui.ui.transfers.bucket_model import StateGroup
from gui.ui.transfers.jobs_model import COL_ETA, COL_PROGRESS, COL_RATIO, COL_STATE, BarColourRole, FractionRole
from tests.ui.transfers_harness import REMOTE, TransfersBed, make_bed, until  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(240)


async def select_study(bed: TransfersBed, study_id: str) -> None:
    index = await bed.study_index(bed.left, study_id)
    bed.left.tree.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                          | QItemSelectionModel.SelectionFlag.Rows)


def ct_study(bed: TransfersBed, seed: int, slices: int = 6, size: int = 256) -> str:
    return bed.load_source(synth.ct_series(synth.make_study_spec(seed, f"CT {seed}"), slices, rows=size,
                                           cols=size, seed=seed))


def kill_target(bed: TransfersBed, url: str) -> None:
    """Point the right-hand peer at a port where nothing listens (a dead target)."""
    bed.config.peers = [bed.config.peers[0], Peer(REMOTE, url)]
    bed.window.apply_config()


def test_saved_transfer_settings_apply_to_the_next_job(make_bed):
    bed = make_bed(bucket_kb=64)
    study = ct_study(bed, 41)
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        first = await bed.wait_for_job()
        assert (await bed.wait_for_report(first.id)).state == JobState.SUCCESS
        assert first.options.BucketSize == 64

        dialog = bed.window.open_settings()
        # Every option says what it does, the on/off ones included.
        widgets = {**dialog.option_edits, **dialog.option_checks, "Compression": dialog.compression_combo}
        assert "ImportAsItArrives" in dialog.option_checks
        assert all(len(w.toolTip()) > 20 for w in widgets.values()), [n for n, w in widgets.items()
                                                                      if len(w.toolTip()) <= 20]
        dialog.option_edits["BucketSize"].setText("4096")
        dialog.option_edits["Threads"].setText("3")
        assert dialog.save() is True

        await select_study(bed, study)
        second = await bed.engine.submit(bed.left.peer, bed.right.peer, bed.left.selected_resources(),
                                         force=True)
        ui.controller.track(second)
        report = await bed.wait_for_report(second.id)
        assert report.state == JobState.SUCCESS
        assert second.options.BucketSize == 4096 and second.options.Threads == 3
        assert len(second.buckets) < len(first.buckets)
        assert first.options.BucketSize == 64        # a job keeps the options it ran with

    bed.run(scenario())


def test_a_failed_plan_cannot_be_started_and_says_why_in_full(make_bed, closed_port_url):
    bed = make_bed()
    study = ct_study(bed, 42, slices=2, size=64)
    bed.config.ui["ConfirmTransfers"] = True
    kill_target(bed, closed_port_url)
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        assert ui.send_action.isEnabled()
        ui.send_action.trigger()
        await until(lambda: ui.controller.active_confirm is not None, what="the confirmation")
        dialog = ui.controller.active_confirm
        await until(lambda: dialog.error.isVisibleTo(dialog), what="the planning error")
        assert not dialog.start_button.isEnabled()
        assert dialog.cancel_button.isDefault()
        assert "connection refused" in dialog.error.text()
        assert dialog.error.text().endswith("/plugins)")              # nothing clipped
        assert dialog.error.wordWrap()
        # The whole message is on screen: the label is as tall as its wrapped text needs.
        QApplication.processEvents()
        assert dialog.error.height() >= dialog.error.heightForWidth(dialog.error.width())
        dialog.accept()   # Enter: refused, nothing starts
        dialog.reject()
        await ui.controller.idle()
        assert bed.engine.jobs() == []

    bed.run(scenario())


def test_a_failed_job_looks_like_a_failure_everywhere(make_bed, closed_port_url):
    bed = make_bed()
    study = ct_study(bed, 43, slices=2, size=64)
    kill_target(bed, closed_port_url)
    bed.config.transfers.MaxHttpRetries = 0
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.FAILURE
        model = ui.panel.model
        n = model.row_of(job.id)
        progress = model.index(n, COL_PROGRESS)
        assert progress.data(FractionRole) == 0.0                   # not a full bar
        assert progress.data(BarColourRole) == "#c62828"             # and red if any
        assert progress.data() == "failed before any instance was sent"
        assert "0/0" not in progress.data()
        banner = ui.panel.detail.commitment
        assert banner.banner_kind == "bad"
        assert banner.banner.text().startswith(f"✖ Transfer failed before any instance was sent to {REMOTE}")
        assert "connection refused" in banner.banner.text() and "MD5" not in banner.banner.text()
        said = [m for m in ui.notifier.messages if m.startswith("Transfer failed")][-1]
        assert said.lower().count("fail") == 1, said
        assert bed.window.statusBar().currentMessage() == said

    bed.run(scenario())


def test_send_follows_the_selection_through_a_refresh(make_bed):
    bed = make_bed()
    study = ct_study(bed, 44, slices=2, size=64)
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        assert ui.send_action.isEnabled()
        bed.source.request("DELETE", f"/studies/{study}")   # gone: its row cannot come back
        ct_study(bed, 54, slices=1, size=64)
        bed.window.refresh_action.trigger()      # F5
        await until(lambda: bed.left.model.is_complete and bed.left.model.top_level_count > 0,
                    what="the reload")
        assert bed.left.selected_resources() == []
        assert not ui.send_action.isEnabled()
        assert not ui.send_button.isEnabled()

    bed.run(scenario())


def test_after_cancel_no_bucket_says_it_is_transferring(make_bed):
    bed = make_bed(throttle_mbit=4, bucket_kb=64)
    study = ct_study(bed, 45, slices=8)
    ui = bed.ui
    grid = ui.panel.detail

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        await until(lambda: grid.model.counts()[StateGroup.TRANSFERRING] > 0, what="buckets on the way")
        ui.panel.select_job(job.id)
        ui.panel.buttons["cancel"].click()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.CANCELED
        counts = grid.model.counts()
        assert counts[StateGroup.TRANSFERRING] == 0 and counts[StateGroup.RETRYING] == 0
        assert counts[StateGroup.QUEUED] == 0
        assert counts[StateGroup.STOPPED] + counts[StateGroup.DONE] == grid.model.rowCount()
        assert "transferring 0" in grid.legend.text() and "stopped" in grid.legend.text()

    bed.run(scenario())


def test_the_quit_question_follows_the_jobs_and_knows_the_demo(make_bed):
    bed = make_bed(throttle_mbit=4, bucket_kb=64)
    study = ct_study(bed, 46, slices=8)
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        await until(lambda: ui.controller.running_jobs() == [job.id], what="the job running")

        question = ui.controller.close_question()
        assert "1 transfer is still running" in question.text()
        assert "come back with a Resume button" in question.text()
        question.deleteLater()

        bed.window.demo = True
        question = ui.controller.close_question()
        question.open()
        assert "come back" not in question.text() and "deleted" in question.text()
        assert question.quit_button.text() == "Quit anyway"
        # The job ends while the question waits: the question does not keep saying it runs.
        await bed.engine.cancel(job.id)
        await until(lambda: not question.isVisible(), what="the question to go away")
        assert question.result() == QDialog.DialogCode.Accepted and question.quit_chosen()

    bed.run(scenario())


def test_a_long_job_title_does_not_widen_the_window(make_bed):
    bed = make_bed()
    study = ct_study(bed, 47, slices=2, size=64)
    window = bed.window
    window.resize(1024, 700)
    ui = bed.ui

    async def scenario() -> None:
        await until(lambda: window.width() == 1024, what="the window at 1024 px")
        await select_study(bed, study)
        label = "STUDY WITH A VERY LONG DESCRIPTION " * 12
        job = await ui.controller.start_transfer(bed.left.peer, bed.right.peer,
                                                 bed.left.selected_resources(), [label])
        assert job is not None
        ui.panel.select_job(job.id)
        await bed.wait_for_report(job.id)
        for _ in range(5):
            QApplication.processEvents()
        assert window.width() == 1024
        title = ui.panel.detail.title
        assert title.toolTip().startswith(f"{bed.left.peer.name} → {REMOTE}: {label.strip()}"[:60])
        assert title.shown_text().endswith("…")

    bed.run(scenario())


def test_one_truthful_compression_everywhere(make_bed):
    bed = make_bed()
    study = ct_study(bed, 48, slices=4, size=128)
    bed.config.ui["ConfirmTransfers"] = True
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        await until(lambda: ui.controller.active_confirm is not None, what="the confirmation")
        dialog = ui.controller.active_confirm
        await until(lambda: dialog.plan is not None, what="the plan")
        said = dialog.compression.text()
        # Stock servers: plain mode, where the Settings' "auto" is not what happens.
        assert said.startswith("HTTP gzip on downloads") and "plain" in said
        dialog.accept()
        job = await bed.wait_for_job()
        await bed.wait_for_report(job.id)
        ui.panel.select_job(job.id)
        row = ui.panel.model.row_of(job.id)
        assert ui.panel.detail.title.toolTip().endswith(f"compression: {said}")
        assert ui.panel.model.index(row, COL_RATIO).data(Qt.ItemDataRole.ToolTipRole) == f"Compression: {said}"
        assert f"Compression: {said}" in ui.panel.model.index(row, 0).data(Qt.ItemDataRole.ToolTipRole)

    bed.run(scenario())


def test_a_job_shows_its_phases_as_they_happen(make_bed):
    bed = make_bed(throttle_mbit=8, bucket_kb=64)
    study = ct_study(bed, 49, slices=6)
    ui = bed.ui
    model = ui.panel.model
    seen: list = []

    def record(*_args) -> None:
        for n in range(model.rowCount()):
            text = model.index(n, COL_STATE).data()
            if not seen or seen[-1][0] != text:
                seen.append((text, model.index(n, COL_ETA).data()))
    model.dataChanged.connect(record)

    phases: list = []
    bed.engine.subscribe(lambda e: isinstance(e, JobProgress) and e.phase is not None
                         and (not phases or phases[-1] != e.phase.value) and phases.append(e.phase.value))

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        assert (await bed.wait_for_report(job.id)).state == JobState.SUCCESS
        # The engine goes through them in order (plain mode has nothing to commit)...
        assert phases == ["planning", "sending", "verifying"], phases
        # ... and the window shows them (a frame keeps the latest, so short ones may merge).
        states = [text for text, _eta in seen]
        assert any(t.startswith("Running · sending") for t in states), states
        # No "ETA 0:00" while the target is read back.
        assert all(eta == "–" for text, eta in seen if "verifying" in text), seen
        assert states[-1].startswith("Success")

    bed.run(scenario())


def test_a_push_job_says_when_the_target_commits(qtbot, qloop, orthanc_factory, tmp_path):
    bed = TransfersBed(qtbot, qloop, orthanc_factory("source"), orthanc_factory("target", with_accelerator=True),
                       tmp_path / "engine-data", tmp_path / "config.json", bucket_kb=64)
    try:
        study = ct_study(bed, 50, slices=6)
        phases: list = []
        bed.engine.subscribe(lambda e: isinstance(e, JobProgress) and e.phase is not None
                             and (not phases or phases[-1] != e.phase.value) and phases.append(e.phase.value))

        async def scenario() -> None:
            await select_study(bed, study)
            bed.ui.send_action.trigger()
            job = await bed.wait_for_job()
            report = await bed.wait_for_report(job.id)
            assert report.state == JobState.SUCCESS and report.mode.value == "push"
            assert phases == ["planning", "sending", "committing", "verifying"], phases

        bed.run(scenario())
    finally:
        bed.close()


def test_a_dead_pane_offers_retry_and_no_search_and_exports_are_named(make_bed, closed_port_url, tmp_path):
    bed = make_bed()
    study = ct_study(bed, 51, slices=2, size=64)
    ui = bed.ui
    target = bed.config.peers[1]

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        await bed.wait_for_report(job.id)
        commitment = ui.panel.detail.commitment
        default = commitment.default_export_path("csv")
        label = bed.left.selected_labels()[0]
        assert default.name.endswith("-commitment.csv") and "ACC000051" in default.name
        assert default.name.startswith(label.split(" · ")[0].replace(" ", "_") + "_")   # the patient first
        commitment.export(tmp_path / default.name, "csv")
        assert commitment.saved_label.text() == f"Saved {default.name}"
        assert (tmp_path / default.name).read_text().count("\n") == 3

        kill_target(bed, closed_port_url)
        await until(lambda: bed.right.state == "error", what="the dead pane")
        assert bed.right.retry_button.isVisibleTo(bed.window)
        assert not bed.right.search_box.isEnabled() and not bed.right.modality_filter.isEnabled()
        bed.config.peers = [bed.config.peers[0], target]
        bed.right.set_peers(bed.config.peers)          # the server is back (same name, its URL)
        await until(lambda: bed.right.state == "ok", what="the pane back")
        assert not bed.right.retry_button.isVisibleTo(bed.window) and bed.right.search_box.isEnabled()
        assert "Ctrl+," in [s.toString() for s in bed.window.settings_action.shortcuts()]

    bed.run(scenario())


def test_expansion_and_selection_survive_refresh_and_search(make_bed):
    bed = make_bed()
    study = ct_study(bed, 55, slices=2, size=64)
    ct_study(bed, 56, slices=1, size=64)
    left = bed.left
    model = left.model

    async def scenario() -> None:
        await select_study(bed, study)
        patient = bed.source.request("GET", f"/studies/{study}")["ParentPatient"]

        def back() -> bool:
            p, s = model.index_of("Patient", patient), model.index_of("Study", study)
            return (p.isValid() and s.isValid() and left.tree.isExpanded(p)
                    and left.selected_resources() == [{"Level": "Study", "ID": study}])
        assert back()
        bed.window.refresh_action.trigger()                       # F5
        await until(lambda: model.is_complete and back(), what="the same rows open and selected")
        left.search("PAT00055")
        await until(lambda: model.is_complete and model.top_level_count == 1 and back(), what="the search")
        left.search("")                                            # cleared
        await until(lambda: model.is_complete and model.top_level_count == 2 and back(),
                    what="the whole list, still open and selected")
        assert bed.ui.send_action.isEnabled()

    bed.run(scenario())


def test_the_target_pane_says_what_a_drop_will_do(make_bed):
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent
    bed = make_bed()
    study = ct_study(bed, 57, slices=1, size=64)

    async def scenario() -> None:
        await select_study(bed, study)
        mime = bed.left.model.mimeData(bed.left.tree.selectionModel().selectedRows(0))
        label = bed.left.selected_labels()[0]
        viewport = bed.right.tree.viewport()
        enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(viewport, enter)
        assert enter.isAccepted()
        hint = bed.right.drop_hint
        assert hint.isVisibleTo(bed.window)
        assert hint.text() == f"Drop to send {label} from {bed.left.peer.name} to {REMOTE}"
        QApplication.sendEvent(viewport, QDragLeaveEvent())
        assert not hint.isVisibleTo(bed.window)
        # The source pane itself refuses the drag, and says nothing.
        own = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                              Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(bed.left.tree.viewport(), own)
        assert not own.isAccepted() and not bed.left.drop_hint.isVisibleTo(bed.window)

    bed.run(scenario())


def test_at_1024_by_700_the_empty_dock_leaves_the_room_to_the_panes(make_bed):
    bed = make_bed()
    study = ct_study(bed, 58, slices=1, size=64)
    window = bed.window
    window.resize(1024, 700)
    ui = bed.ui

    async def scenario() -> None:
        await until(lambda: window.width() == 1024 and window.height() == 700, what="the window size")
        ui._size_dock()
        await until(lambda: ui.dock.height() <= 220, what="a compact dock")
        assert bed.left.height() >= 330 and not ui.panel.detail.isVisibleTo(window)
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        await bed.wait_for_report(job.id)
        await until(lambda: ui.dock.height() >= 320, what="the dock to make room for the job")
        assert ui.panel.detail.commitment.isVisibleTo(window) and window.width() == 1024
        # Every column of the jobs table shows without scrolling sideways, and the finished
        # job's commitment gets the room (at least four instance rows), not the bucket grid.
        table = ui.panel.table
        await until(lambda: not table.horizontalScrollBar().isVisible(), what="the jobs table to fit")
        commitment = ui.panel.detail.commitment.table
        await until(lambda: commitment.viewport().height() >= 4 * commitment.verticalHeader().defaultSectionSize(),
                    what="room for the commitment's rows")

    bed.run(scenario())


def test_unreachable_peers_are_marked_in_the_selector_and_send_to(make_bed, closed_port_url):
    from PySide6.QtWidgets import QMenu
    bed = make_bed()
    study = ct_study(bed, 59, slices=1, size=64)

    async def scenario() -> None:
        await select_study(bed, study)
        kill_target(bed, closed_port_url)
        await until(lambda: bed.right.state == "error", what="the dead pane")
        selector = bed.right.selector
        assert selector.currentText() == f"{REMOTE}  — unreachable"
        assert "connection refused" in selector.itemData(selector.currentIndex(), Qt.ItemDataRole.ToolTipRole)
        menu = QMenu()
        sub = bed.ui.extend_context_menu(bed.left, menu)
        assert [a.text() for a in sub.actions()] == [f"{REMOTE} — unreachable"]

    bed.run(scenario())
