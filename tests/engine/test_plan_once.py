"""A drop is planned once: the plan the confirmation showed is the plan the job runs."""

from __future__ import annotations

import pytest

from gui.engine import EngineError, JobState
from tests.engine.helpers import make_engine, peer, run, study_resource, upload_files


def test_the_job_sends_what_its_confirmation_showed(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files[:3])
    study = next(iter(ids.values()))

    async def go():
        async with make_engine(tmp_path / "data") as engine:
            summary = await engine.plan(peer(source), peer(target), study_resource(study))
            # The study grows between the confirmation and Start: the job
            # still sends the three instances the user was shown.
            upload_files(source, ct_study_files[3:])
            job = await engine.submit(peer(source), peer(target), study_resource(study), plan=summary)
            return summary, await job.wait()

    summary, report = run(go())
    assert summary.instances == 3
    assert report.state is JobState.SUCCESS
    assert {v.instance_id for v in report.instances} == set(ids)
    assert set(target.instance_md5s()) == set(ids)


def test_a_plan_made_for_other_resources_is_refused(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files[:1])
    study = next(iter(ids.values()))

    async def go():
        async with make_engine(tmp_path / "data") as engine:
            summary = await engine.plan(peer(source), peer(target), study_resource(study))
            with pytest.raises(EngineError, match="other resources"):
                await engine.submit(peer(source), peer(target), study_resource(study), force=True,
                                    plan=summary)

    run(go())
