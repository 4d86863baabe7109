"""The transfers views fed with events built by hand: bucket grid, jobs table, commitment."""

from __future__ import annotations

import csv
import json
import time

from PySide6.QtCore import Qt

from gui.engine.events import (BucketProgress, BucketState, CommitmentReport, InstanceVerdict, JobFinished,
                               JobProgress, JobState, TransferMode)
from gui.ui.transfers.bucket_model import BucketModel, StateGroup, StateRole
from gui.ui.transfers.commitment_view import CommitmentView
from gui.ui.transfers.event_bridge import EngineEventBridge
from gui.ui.transfers.job_detail import JobDetail
from gui.ui.transfers.jobs_model import (COL_ETA, COL_LIMIT, COL_RATIO, COL_SPEED, COL_STATE, COL_WIRE, JobRow,
                                         JobsModel)
from gui.ui.transfers.jobs_panel import allowed_actions

JOB = "job-1"


def bucket(index: int, state: BucketState, done: int = 0, total: int = 1000, **kw) -> BucketProgress:
    return BucketProgress(job_id=JOB, index=index, state=state, chunks=1, instance_ids=[f"inst-{index}"],
                          raw_total=total, raw_done=done, **kw)


def job_row(state=JobState.RUNNING) -> JobRow:
    return JobRow(job_id=JOB, source="Local demo", target="Remote demo", description="CT CHEST", state=state)


def report(verified: bool, state=JobState.SUCCESS, error=None) -> CommitmentReport:
    verdicts = [InstanceVerdict(f"id-{n}", 100, "a" * 32, ("a" if verified or n else "b") * 32,
                                verified or n > 0, "transferred" if verified or n else "failed",
                                "" if verified or n else "MD5 mismatch") for n in range(3)]
    return CommitmentReport(job_id=JOB, state=state, mode=TransferMode.PUSH, source="Local demo",
                            target="Remote demo", instances=verdicts, bytes=300, wire_bytes=150,
                            seconds=1.5, error=error)


def test_five_thousand_bucket_events_through_the_bridge_paint_without_widgets(qtbot):
    detail = JobDetail()
    qtbot.addWidget(detail)
    detail.resize(900, 500)
    detail.show()
    detail.show_job(job_row())
    bridge = EngineEventBridge(interval_ms=100)
    bridge.bucketsProgressed.connect(detail.apply_buckets)
    changes = []
    detail.model.dataChanged.connect(lambda a, b, roles: changes.append((a.row(), b.row())))

    started = time.perf_counter()
    for i in range(5000):
        bridge.on_event(bucket(i, BucketState.QUEUED))
    for i in range(5000):
        bridge.on_event(bucket(i, BucketState.SENDING, done=500, wire_total=400, wire_done=200))
    for i in range(0, 5000, 2):
        bridge.on_event(bucket(i, BucketState.DONE, done=1000))
    bridge.on_event(bucket(7, BucketState.RETRYING, retries=2))
    bridge.on_event(bucket(9, BucketState.FAILED, error="HTTP 500 from target"))
    bridge.flush()
    detail.grid.viewport().repaint()
    elapsed = time.perf_counter() - started
    print(f"\n5,000 buckets x 3 events: applied and painted in {elapsed * 1000:.0f} ms")

    model = detail.model
    assert model.rowCount() == 5000
    assert model.counts() == {StateGroup.QUEUED: 0, StateGroup.TRANSFERRING: 2498, StateGroup.RETRYING: 1,
                              StateGroup.DONE: 2500, StateGroup.FAILED: 1}
    assert model.index(7).data(StateRole) == "retrying"
    assert "2 retries" in model.index(7).data(Qt.ItemDataRole.ToolTipRole)
    assert "HTTP 500 from target" in model.index(9).data(Qt.ItemDataRole.ToolTipRole)
    assert "inst-3" in model.index(3).data(Qt.ItemDataRole.ToolTipRole)
    # One batch, announced as ranges rather than one signal per bucket.
    assert bridge.frames == 1
    assert len(changes) == 1 and changes[0] == (0, 4999)
    assert all(detail.grid.indexWidget(model.index(i)) is None for i in range(0, 5000, 250))
    assert "2500" in detail.legend.text()


def test_bucket_updates_for_another_job_are_ignored(qtbot):
    model = BucketModel()
    model.reset(JOB, [bucket(0, BucketState.QUEUED)])
    model.apply("other-job", [bucket(0, BucketState.DONE)])
    assert model.index(0).data(StateRole) == "queued"


def test_jobs_model_follows_progress_and_report(qtbot):
    model = JobsModel()
    model.upsert(job_row(JobState.PENDING))
    unknown = model.apply_progress([
        JobProgress(job_id=JOB, state=JobState.RUNNING, mode=TransferMode.PUSH, compression="gzip",
                    instances_total=10, instances_done=4, raw_total=4000, raw_done=1000, wire_done=500,
                    buckets_total=4, buckets_done=1, elapsed=2.0, raw_rate=500.0, wire_rate=250.0),
        JobProgress(job_id="stranger", state=JobState.RUNNING, mode=None, compression=None, instances_total=0,
                    instances_done=0, raw_total=0, raw_done=0, wire_done=0, buckets_total=0, buckets_done=0,
                    elapsed=0)])
    assert unknown == ["stranger"]
    texts = [model.index(0, c).data() for c in range(model.columnCount())]
    assert texts[0] == "Local demo → Remote demo"
    assert texts[COL_STATE] == "Running (push)"
    assert "4/10 instances" in texts[3]
    assert texts[COL_SPEED] == "500 B/s" and texts[COL_WIRE] == "250 B/s" and texts[COL_RATIO] == "2.00×"
    assert texts[COL_LIMIT] == "–"
    assert texts[COL_ETA] == "0:06"   # 3000 bytes left at 500 B/s
    model.apply_report(report(True))
    assert model.index(0, COL_STATE).data() == "Success (push)"
    assert allowed_actions(JobState.SUCCESS) == {"pause": False, "resume": False, "cancel": False,
                                                 "retry": False, "remove": True}
    assert allowed_actions(JobState.PAUSED)["resume"]


def test_commitment_banner_table_and_exports(qtbot, tmp_path):
    view = CommitmentView()
    qtbot.addWidget(view)
    view.set_report(report(True))
    assert view.banner_kind == "ok"
    assert view.banner.text() == "✔ 3 of 3 instances verified on Remote demo — MD5"
    view.set_report(report(False, JobState.FAILURE, error="MD5 mismatch on id-0"))
    assert view.banner_kind == "bad"
    assert "2 of 3" in view.banner.text() and "MD5 mismatch on id-0" in view.banner.text()
    assert view.model.index(0, 0).data() == "id-0"          # problems listed first
    assert view.model.index(0, view.model.VERIFIED).data() == "no"
    view.export(tmp_path / "c.json", "json")
    view.export(tmp_path / "c.csv", "csv")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["verified"] == 2 and data["failures"][0]["reason"] == "MD5 mismatch"
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert [r["verified"] for r in rows] == ["no", "yes", "yes"]
    assert rows[0]["target_md5"] == "b" * 32


def test_bridge_delivers_finished_after_progress(qtbot):
    bridge = EngineEventBridge(interval_ms=50)
    seen = []
    bridge.jobsProgressed.connect(lambda evs: seen.append("progress"))
    bridge.jobFinished.connect(lambda ev: seen.append("finished"))
    bridge.on_event(JobFinished(JOB, report(True)))
    bridge.on_event(JobProgress(job_id=JOB, state=JobState.SUCCESS, mode=None, compression=None,
                                instances_total=3, instances_done=3, raw_total=1, raw_done=1, wire_done=1,
                                buckets_total=1, buckets_done=1, elapsed=1))
    qtbot.waitUntil(lambda: len(seen) == 2, timeout=2000)
    assert seen == ["progress", "finished"]


def test_the_limit_column_shows_the_cap_a_job_runs_under(qtbot):
    model = JobsModel()
    model.set_global_limit(8192)
    capped = job_row()
    capped.limit_kb = 2048
    model.upsert(capped)
    assert model.index(0, COL_LIMIT).data() == "≤ 2.0 MB/s"      # the tighter of the two
    header_tips = [model.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
                   for c in range(model.columnCount())]
    assert all(header_tips) and "reads from the source and writes to the target" in header_tips[COL_LIMIT]
    model.apply_progress([JobProgress(job_id=JOB, state=JobState.RUNNING, mode=TransferMode.PUSH,
                                      compression="gzip", instances_total=10, instances_done=4, raw_total=4000,
                                      raw_done=1000, wire_done=500, buckets_total=4, buckets_done=1,
                                      elapsed=2.0, raw_rate=3 * 1024 * 1024, wire_rate=1024 * 1024)])
    assert model.index(0, COL_SPEED).data() == "3.0 MB/s" and model.index(0, COL_LIMIT).data() == "≤ 2.0 MB/s"
    tip = model.index(0, COL_LIMIT).data(Qt.ItemDataRole.ToolTipRole)
    assert "2.0 MB/s for this transfer" in tip and "8.0 MB/s for all transfers together" in tip
    assert "reads from the source and writes to the target" in tip
    model.set_limit(JOB, 0)                               # the one for all jobs still holds
    assert model.index(0, COL_LIMIT).data() == "≤ 8.0 MB/s"
    model.set_global_limit(0)
    assert model.index(0, COL_LIMIT).data() == "–"
    # A delegated job goes server to server: no cap of this computer holds it.
    model.set_global_limit(8192)
    model.row(0).mode = TransferMode.DELEGATE
    assert model.index(0, COL_LIMIT).data() == "–"
    assert "server to server" in model.index(0, COL_LIMIT).data(Qt.ItemDataRole.ToolTipRole)
    # Finished: what went through the cap.
    model.row(0).mode = TransferMode.PUSH
    done = report(True)
    done.speed_limit = {"cap": 8192 * 1024, "bytes": 3 * 1024 * 1024, "seconds": 1.5, "achieved": 2 * 1024 * 1024,
                        "waited": 0.4}
    model.apply_report(done)
    assert "Through its cap: 3.0 MB at 2.0 MB/s on average" in model.index(0, COL_LIMIT).data(
        Qt.ItemDataRole.ToolTipRole)


def test_the_commitment_table_names_source_target_and_time(qtbot):
    view = CommitmentView()
    qtbot.addWidget(view)
    r = report(True)
    r.finished_at = "2026-12-01T23:05:01+00:00"
    for v in r.instances:
        v.series_id = "series-1"
    r.series = {"series-1": {"PatientName": "Janssens^Tom", "PatientID": "PAT1", "StudyDate": "20250423",
                             "AccessionNumber": "ACC1", "StudyDescription": "CT ABDOMEN"}}
    view.set_report(r)
    m = view.model
    # Names and dates read as in the panes (the export keeps the DICOM values).
    assert [m.index(0, c).data() for c in range(1, 6)] == ["Janssens Tom", "PAT1", "ACC1", "2025-04-23",
                                                            "CT ABDOMEN"]
    assert [m.headerData(c, Qt.Orientation.Horizontal) for c in (m.SOURCE, m.TARGET, m.TIME)] == \
        ["Source", "Target", "Time (UTC)"]
    assert [m.index(0, c).data() for c in (m.SOURCE, m.TARGET, m.TIME)] == \
        ["Local demo", "Remote demo", "2026-12-01 23:05:01"]
