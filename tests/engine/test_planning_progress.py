"""Planning shows its progress: the count of instances found on the source
grows as each resource is listed, before anything is sent."""

from __future__ import annotations

from typing import List

import pytest

from gui.cli import ProgressPrinter
from gui.engine import JobProgress, JobState
from gui.engine.events import JobPhase
from gui.sandbox import synthetic_studies as synth
from tests.engine.helpers import make_engine, peer, run, small_options, upload_files


def test_planning_reports_instances_found_per_resource(stock_pair, tmp_path):
    source, target = stock_pair
    studies = []
    for n, count in enumerate((3, 5)):
        spec = synth.make_study_spec(80 + n, f"PLAN {n}")
        ids = upload_files(source, list(synth.tiny_instances(spec, count, size=2048, seed=80 + n)))
        studies.append(next(iter(ids.values())))
    resources = [{"Level": "Study", "ID": s} for s in studies]
    seen: List[JobProgress] = []

    async def go():
        engine = make_engine(tmp_path / "data", small_options())
        await engine.start()
        try:
            engine.subscribe(lambda e: isinstance(e, JobProgress) and seen.append(e))
            job = await engine.submit(peer(source), peer(target), resources, mode="plain")
            return await job.wait()
        finally:
            await engine.close()

    report = run(go())
    assert report.state is JobState.SUCCESS and report.verified == 8
    found = [e.instances_found for e in seen if e.phase is JobPhase.PLANNING and e.instances_found]
    # One count per listed series (one each study here), growing to the whole job, all before the sending started.
    assert sorted(found) == found and set(found) <= {3, 5, 8} and found[-1] == 8 and len(found) == 2
    planning = next(e for e in seen if e.instances_found == 8)
    assert ProgressPrinter.format(planning) == "planning... 8 instances found"
    # The jobs list in the window says the same.
    from gui.ui.transfers.jobs_model import JobRow, progress_text
    row = JobRow(planning.job_id, "source", "target", "", JobState.RUNNING, progress=planning)
    assert progress_text(row) == "planning… 8 instances found"


@pytest.mark.parametrize("planned_first", [False, True], ids=["submitted", "planned then submitted"])
def test_the_audit_record_names_come_from_the_planning_listing(stock_pair, tmp_path, monkeypatch,
                                                               planned_first):
    """The listing that planning asks the source for (each series' instances,
    or the whole study's when the command line plans before it submits) also
    names every instance in the audit record (SOP Instance UID, series): the
    source is not asked for it a second time beside the transfer."""
    import io

    import pydicom

    from gui.client.orthanc_client import OrthancClient
    source, target = stock_pair
    spec = synth.make_study_spec(86, "PLAN NAMES")
    files = list(synth.tiny_instances(spec, 6, size=2048, seed=86))
    study = next(iter(upload_files(source, files).values()))
    sops = {str(pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID) for f in files}
    asked: List[str] = []
    original = OrthancClient.get_json

    async def get_json(self, path, *args, **kwargs):
        if self.peer.url.rstrip("/") == source.url.rstrip("/"):
            asked.append(path)
        return await original(self, path, *args, **kwargs)

    monkeypatch.setattr(OrthancClient, "get_json", get_json)

    async def go():
        engine = make_engine(tmp_path / "data", small_options())
        await engine.start()
        try:
            resources = [{"Level": "Study", "ID": study}]
            summary = await engine.plan(peer(source), peer(target), resources, mode="plain") \
                if planned_first else None
            job = await engine.submit(peer(source), peer(target), resources, mode="plain", plan=summary)
            return await job.wait()
        finally:
            await engine.close()

    report = run(go())
    assert report.state is JobState.SUCCESS and report.verified == 6
    assert {v.sop_instance_uid for v in report.instances} == sops
    assert all(v.series_id for v in report.instances)
    listings = [p for p in asked if p.endswith("/instances")]
    assert len(listings) == len(set(listings)) == 1
