"""Planning shows its progress: the count of instances found on the source
grows as each resource is listed, before anything is sent."""

from __future__ import annotations

from typing import List

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
