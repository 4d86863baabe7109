"""The job database stays small: a finished job keeps its commitment report in
a compact form and drops the plan it only needed to resume or roll back;
the report still reads back whole, for the commitment view and its exports."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from pathlib import Path

from gui.engine import JobState
from gui.engine.events import CommitmentReport, InstanceStatus, InstanceVerdict, TransferMode
from gui.engine.job import report_from_json
from gui.engine.job_store import DB_NAME, JobRecord, JobStore
from gui.protocol.wire import InstanceInfo
from gui.ui.transfers.commitment_view import export_csv, export_json
from tests.engine.helpers import make_engine, peer, run, study_resource, upload_files

COUNT = 10_000


def fake_id(n: int) -> str:
    h = hashlib.sha1(str(n).encode()).hexdigest()
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


def database_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob(DB_NAME + "*"))


def test_ten_thousand_instances_fit_in_a_megabyte(tmp_path):
    """What the runner stores for a 10,000-instance job, from plan to report:
    under 1 MB once it finished, and the report reads back identical."""
    store = JobStore(tmp_path)
    job_id = str(uuid.uuid4())
    store.save_job(JobRecord(id=job_id, kind="transfer", source_name="a", source_url="http://127.0.0.1:1",
                             target_name="b", target_url="http://127.0.0.1:2", resources=[],
                             options={}, requested_mode="plain", transfer_id="t", state="Running"))
    infos = [InstanceInfo(fake_id(n), 8000 + n, hashlib.md5(str(n).encode()).hexdigest()) for n in range(COUNT)]
    store.save_plan(job_id, infos, InstanceStatus.PLANNED)
    for n in range(0, COUNT, 100):
        store.set_bucket_state(job_id, n // 100, "done")
        store.set_instance_status(job_id, [i.id for i in infos[n:n + 100]], InstanceStatus.SENT)
    verdicts = [InstanceVerdict(i.id, i.size, i.md5, i.md5, True, InstanceStatus.TRANSFERRED, "")
                for i in infos[:-1]]
    verdicts.append(InstanceVerdict(infos[-1].id, infos[-1].size, infos[-1].md5, "0" * 32, False,
                                    InstanceStatus.FAILED, "MD5 mismatch"))
    report = CommitmentReport(job_id, JobState.FAILURE, TransferMode.PLAIN, "a", "b", verdicts,
                              bytes=123, seconds=4.5, error="1 of 10000 not verified")
    store.update_job(job_id, state="Failure", report=report.to_json())
    store.clear_run_state(job_id)     # what the runner does once a job finished
    store.close()

    assert database_bytes(tmp_path) < 1_000_000
    again = JobStore(tmp_path)
    (record,) = again.load_jobs()
    again.close()
    assert record.report == json.loads(json.dumps(report.to_json()))
    loaded = report_from_json(record.report)
    assert loaded.instances == verdicts and loaded.failed == 1


def test_reports_stored_before_stay_readable(tmp_path):
    """A database written before the compact form kept the report as JSON text."""
    store = JobStore(tmp_path)
    store.save_job(JobRecord(id="old", kind="transfer", source_name="a", source_url="http://127.0.0.1:1",
                             target_name="b", target_url="http://127.0.0.1:2", resources=[],
                             options={}, requested_mode="plain", transfer_id="t", state="Success"))
    store.close()
    old = {"job": "old", "state": "Success", "details": [
        {"instance_id": "x", "size": 1, "source_md5": "m", "target_md5": "m", "verified": True,
         "status": "transferred", "reason": ""}]}
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE jobs SET report = ? WHERE id = 'old'", (json.dumps(old),))
    again = JobStore(tmp_path)
    assert again.load_jobs()[0].report == old
    again.close()


def test_finished_job_drops_its_plan_and_exports_after_a_restart(stock_pair, tmp_path, small_study_files):
    """On real servers: the finished job's plan rows are gone, and after the
    engine restarts its report exports every instance with both MD5s."""
    source, target = stock_pair
    ids = upload_files(source, small_study_files)
    study = next(iter(ids.values()))

    async def go():
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode="plain")
            report = await job.wait()
        finally:
            await engine.close()
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            return report, engine.job(job.id).report
        finally:
            await engine.close()

    report, reloaded = run(go())
    assert report.state is JobState.SUCCESS and report.verified == len(ids)
    with sqlite3.connect(tmp_path / "data" / DB_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
    assert reloaded is not None and reloaded.instances == report.instances
    export_csv(reloaded, tmp_path / "c.csv")
    export_json(reloaded, tmp_path / "c.json")
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert len(rows) == len(ids) + 1
    md5s = source.instance_md5s()
    exported = json.loads((tmp_path / "c.json").read_text())
    details = exported.get("details") or exported.get("instances")
    assert {d["instance_id"]: d["source_md5"] for d in details} == md5s


def test_instances_created_are_written_together_and_survive_a_restart(tmp_path):
    """Before a push commit the runner notes every instance the target
    lacks (those a cancel may delete): one write for all of them, read back
    whole by the next run; a failing row leaves none of the batch written."""
    store = JobStore(tmp_path)
    job_id = str(uuid.uuid4())
    store.save_job(JobRecord(id=job_id, kind="transfer", source_name="a", source_url="http://127.0.0.1:1",
                             target_name="b", target_url="http://127.0.0.1:2", resources=[],
                             options={}, requested_mode="push", transfer_id="t", state="Running"))
    infos = [InstanceInfo(fake_id(n), 8000 + n, hashlib.md5(str(n).encode()).hexdigest()) for n in range(2000)]
    store.save_plan(job_id, infos, InstanceStatus.PLANNED)
    store.mark_created_many(job_id, [i.id for i in infos[:1500]])
    try:
        store.mark_created_many(job_id, [infos[1600].id, object()])   # not a valid SQL value
    except sqlite3.Error:
        pass
    store.close()
    again = JobStore(tmp_path)
    assert again.created_instances(job_id) == {i.id for i in infos[:1500]}
    assert not again._db.in_transaction
    again.close()
