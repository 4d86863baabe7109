"""The transfers UI driving the real engine against real Orthanc servers."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import List

import pytest
from PySide6.QtCore import QItemSelectionModel, QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from gui.engine.events import JobState
from gui.sandbox import synthetic_studies as synth
from gui.ui.resource_mime import MIME_TYPE
from gui.ui.transfers.bucket_model import GroupRole
from gui.ui.transfers.jobs_model import COL_SPEED
from tests.ui.transfers_harness import TransfersBed, until

pytestmark = pytest.mark.timeout(240)


async def drag_study(bed: TransfersBed, study_id: str) -> QMimeData:
    """The mime data Qt would carry: the source tree model's mimeData of the selected row."""
    source = bed.left
    index = await bed.study_index(source, study_id)
    selection = source.tree.selectionModel()
    selection.select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                     | QItemSelectionModel.SelectionFlag.Rows)
    mime = source.model.mimeData(selection.selectedRows(0))
    assert mime.hasFormat(MIME_TYPE)
    return mime


def drop_on(pane, mime: QMimeData) -> bool:
    """Deliver a drop the way Qt does: a drag entering the tree's viewport, then the drop
    (Qt only delivers a drop to the widget that accepted the drag's entry)."""
    viewport = pane.tree.viewport()
    where = QPointF(viewport.rect().center())
    # QDragEnterEvent takes an integer point, QDropEvent a float one.
    enter = QDragEnterEvent(where.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(where, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, drop)
    return drop.isAccepted()


def test_drag_study_to_other_pane_transfers_and_verifies(make_bed, tmp_path: Path):
    bed = make_bed()
    spec = synth.make_study_spec(21, "CT DRAG")
    study = bed.load_source(synth.ct_series(spec, 6, rows=256, cols=256, seed=21))

    async def scenario() -> None:
        bucket_states: List[str] = []
        model = bed.ui.panel.detail.model
        model.dataChanged.connect(
            lambda a, b, _r: bucket_states.extend(model.bucket(i).state.value for i in range(a.row(), b.row() + 1)
                                                  if model.bucket(i)))
        refreshed_before = bed.refresh_count(bed.right)
        assert drop_on(bed.right, await drag_study(bed, study))
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS
        commitment = bed.ui.panel.detail.commitment
        assert commitment.isVisibleTo(bed.window)
        assert commitment.banner_kind == "ok"
        assert commitment.banner.text().startswith(f"✔ 6 of 6 instances verified on {bed.right.peer.name}")
        assert commitment.model.rowCount() == 6
        assert all(commitment.model.index(r, commitment.model.VERIFIED).data() == "yes" for r in range(6))
        # The audit record: every instance by its SOP Instance UID with its patient, study and series.
        sops = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"]
                for i in bed.source.request("GET", f"/studies/{study}/instances")}
        series = bed.source.request("GET", f"/studies/{study}/series")[0]["MainDicomTags"]
        assert {commitment.model.index(r, 0).data() for r in range(6)} == set(sops)
        assert commitment.model.index(0, 3).data() == spec.accession
        # The table itself names where each instance went, from where, and when.
        headers = [commitment.model.headerData(c, Qt.Orientation.Horizontal) for c in
                   range(commitment.model.columnCount())]
        assert headers[8:11] == ["Source", "Target", "Time (UTC)"]
        for r in range(6):
            assert [commitment.model.index(r, c).data() for c in (8, 9)] == [bed.left.peer.name,
                                                                             bed.right.peer.name]
            assert commitment.model.index(r, 10).data() == report.finished_at.replace("T", " ")[:19]
        assert commitment.model.index(0, 10).data().startswith(time.strftime("%Y-", time.gmtime()))
        commitment.export(tmp_path / "proof.json", "json")
        commitment.export(tmp_path / "proof.csv", "csv")
        records = json.loads((tmp_path / "proof.json").read_text())["records"]
        rows = list(csv.DictReader((tmp_path / "proof.csv").open(encoding="utf-8")))
        for got in (records, rows):
            assert {r["sop_instance_uid"]: r["orthanc_id"] for r in got} == sops
            for r in got:
                assert (r["patient_name"], r["patient_id"]) == (spec.patient_name, spec.patient_id)
                assert (r["accession_number"], r["study_date"], r["study_description"]) == \
                    (spec.accession, spec.study_date, "CT DRAG")
                assert (str(r["series_number"]), r["series_description"], r["modality"]) == \
                    (series["SeriesNumber"], series.get("SeriesDescription", ""), "CT")
                assert (r["source"], r["target"]) == (bed.left.peer.name, bed.right.peer.name)
                assert r["time"].startswith(time.strftime("%Y-", time.gmtime()))
        # The bucket grid saw the buckets progress and ends with all of them done.
        assert model.job_id == job.id and model.rowCount() == len(job.buckets) > 1
        assert model.counts()["done"] == model.rowCount()
        assert "done" in bucket_states
        # The target pane reloaded and the user was told.
        await until(lambda: bed.refresh_count(bed.right) > refreshed_before)
        assert any("Transfer finished" in m for m in bed.ui.notifier.messages)
        assert set(bed.target.instance_md5s()) == set(bed.source.instance_md5s())

    bed.run(scenario())


def test_pause_resume_and_cancel_from_the_panel(make_bed):
    bed = make_bed(throttle_mbit=4)
    study = bed.load_source(synth.ct_series(synth.make_study_spec(22, "CT PAUSE"), 8, rows=256, cols=256, seed=22))
    panel = bed.ui.panel

    async def scenario() -> None:
        grid = panel.detail.model
        seen_groups = set()
        grid.dataChanged.connect(lambda a, b, _r: seen_groups.update(
            grid.index(i).data(GroupRole) for i in range(a.row(), b.row() + 1)))
        assert drop_on(bed.right, await drag_study(bed, study))
        started = time.monotonic()
        job = await bed.wait_for_job()
        panel.select_job(job.id)
        panel.buttons["pause"].click()
        await until(lambda: bed.engine.job(job.id).state == JobState.PAUSED)
        await until(lambda: panel.model.job_row(job.id).state == JobState.PAUSED)
        paused_seen = time.monotonic()
        assert panel.buttons["resume"].isEnabled() and not panel.buttons["pause"].isEnabled()
        # Paused time is nobody's: the row's elapsed stands at the engine's (no ticking), no speed.
        row = panel.model.job_row(job.id)
        assert row.progress is not None and row.elapsed == row.progress.elapsed
        assert row.progress.raw_rate == 0.0
        speed = panel.model.index(panel.model.row_of(job.id), COL_SPEED).data()
        assert speed == "–"

        resumed = time.monotonic()
        panel.buttons["resume"].click()
        # On the slow link the grid shows buckets at work, then all of them done.
        await until(lambda: grid.rowCount() > 1 and 0 < grid.counts()["done"] < grid.rowCount(),
                    what="some buckets done and some not")
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS and report.verified == 8
        # The job's time and speed leave the pause out.
        assert report.seconds <= time.monotonic() - started - (resumed - paused_seen)
        assert panel.model.job_row(job.id).elapsed == report.seconds
        await until(lambda: grid.counts()["done"] == grid.rowCount())
        assert {"transferring", "done"} <= seen_groups

        # Cancel: send another study, pause it, cancel: the target is as before.
        second = bed.load_source(synth.ct_series(synth.make_study_spec(23, "CT CANCEL"), 4, rows=256, cols=256,
                                                 seed=23))
        bed.left.refresh()
        before = set(bed.target.instance_md5s())
        assert drop_on(bed.right, await drag_study(bed, second))
        job2 = await bed.wait_for_job(exclude={job.id})
        panel.select_job(job2.id)
        panel.buttons["pause"].click()
        await until(lambda: bed.engine.job(job2.id).state == JobState.PAUSED)
        assert panel.buttons["cancel"].isEnabled()
        panel.buttons["cancel"].click()
        report2 = await bed.wait_for_report(job2.id)
        assert report2.state == JobState.CANCELED
        assert panel.model.job_row(job2.id).state == JobState.CANCELED
        assert set(bed.target.instance_md5s()) == before
        assert panel.buttons["retry"].isEnabled()

        # Retry (resubmit) the canceled job: it runs again, to success.
        panel.buttons["retry"].click()
        report3 = await bed.wait_for_report(job2.id, fresh=True)
        assert report3.state == JobState.SUCCESS and report3.verified == 4
        # Remove forgets it.
        panel.buttons["remove"].click()
        await until(lambda: panel.model.row_of(job2.id) < 0)
        assert all(j.id != job2.id for j in bed.engine.jobs())

    bed.run(scenario())


def test_failed_transfer_shows_red_banner_with_reason(make_bed):
    bed = make_bed()
    study = bed.load_source(synth.ct_series(synth.make_study_spec(24, "CT FAIL"), 3, rows=128, cols=128, seed=24))

    async def scenario() -> None:
        mime = await drag_study(bed, study)
        bed.target.stop()
        assert drop_on(bed.right, mime)
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.FAILURE
        commitment = bed.ui.panel.detail.commitment
        assert commitment.banner_kind == "bad"
        assert "failed" in commitment.banner.text() and report.error and report.error in commitment.banner.text()
        assert "#fde4e3" in commitment.banner.styleSheet()   # red background
        assert bed.ui.panel.model.job_row(job.id).state == JobState.FAILURE
        assert any("Transfer failed" in m for m in bed.ui.notifier.messages)

    bed.run(scenario())


def test_dropping_a_folder_uploads_dicom_and_lists_the_rest(make_bed, tmp_path: Path):
    bed = make_bed()
    folder = tmp_path / "cd"
    (folder / "sub").mkdir(parents=True)
    files = list(synth.ct_series(synth.make_study_spec(25, "CT FILES"), 3, rows=128, cols=128, seed=25))
    for n, data in enumerate(files):
        (folder / ("sub" if n else "") / f"IMG{n:04d}").write_bytes(data)
    (folder / "README.txt").write_text("not an image")

    async def scenario() -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(folder))])
        assert drop_on(bed.right, mime)
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS and report.verified == 3
        controller = bed.ui.controller
        assert [p.name for p, _why in controller.last_skipped] == ["README.txt"]
        dialog = controller.active_skipped
        assert dialog is not None and dialog.list.topLevelItemCount() == 1
        assert dialog.list.topLevelItem(0).text(0).endswith("README.txt")
        assert len(bed.target.instance_md5s()) == 3

    bed.run(scenario())


def test_event_loop_stays_responsive_during_a_transfer(make_bed):
    bed = make_bed()
    study = bed.load_source(synth.ct_series(synth.make_study_spec(26, "CT PROBE"), 16, seed=26))

    async def scenario() -> None:
        stalls: List[float] = []
        last = [time.perf_counter()]

        def probe() -> None:
            now = time.perf_counter()
            stalls.append(now - last[0])
            last[0] = now
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(probe)
        assert drop_on(bed.right, await drag_study(bed, study))
        last[0] = time.perf_counter()
        timer.start()
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        timer.stop()
        assert report.state == JobState.SUCCESS
        longest = max(stalls)
        print(f"\nevent loop during a {report.bytes / 1e6:.1f} MB transfer: {len(stalls)} probes, "
              f"longest stall {longest * 1000:.0f} ms")
        assert longest < 1.0

    bed.run(scenario())


def test_closing_with_running_jobs_asks_and_jobs_come_back_paused(make_bed):
    bed = make_bed(throttle_mbit=4)
    study = bed.load_source(synth.ct_series(synth.make_study_spec(27, "CT CLOSE"), 8, rows=256, cols=256, seed=27))
    asked: List[int] = []

    async def scenario() -> None:
        assert bed.window.before_close() is True      # nothing running: no question
        assert drop_on(bed.right, await drag_study(bed, study))
        job = await bed.wait_for_job()
        assert not bed.engine.job(job.id).state.finished
        bed.ui.controller.ask_pause_on_close = lambda n: asked.append(n) or False
        assert bed.window.before_close() is False     # the user keeps the app open
        bed.ui.controller.ask_pause_on_close = lambda n: asked.append(n) or True
        assert bed.window.before_close() is True
        await bed.engine.close()                      # what the app does once the window closed
        # A new session: the job is back, paused, with Resume enabled.
        ui2 = await bed.reopen()
        row = ui2.panel.model.job_row(job.id)
        assert row is not None and row.state == JobState.PAUSED
        ui2.panel.select_job(job.id)
        assert ui2.panel.buttons["resume"].isEnabled()
        ui2.panel.buttons["resume"].click()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS and report.verified == 8

    bed.run(scenario())
    assert asked == [1, 1]
