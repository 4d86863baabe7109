"""The accelerated transports driven by the real engine (scheduler, job store,
verification): what the app and the CLI do."""

from __future__ import annotations

import asyncio

import pytest

from gui.client.peer import Peer
from gui.config.settings import TransferOptions
from gui.engine import JobState, TransferEngine, TransferMode
from tests.transports.helpers import run


def peer(server):
    return Peer(name=server.name, url=server.url)


def upload(server, files):
    answers = [server.upload(f) for f in files]
    return {a["ID"]: a["ParentStudy"] for a in answers}


OPTIONS = TransferOptions(Threads=3, BucketSize=128, MaxHttpRetries=1)


@pytest.mark.parametrize("mode,target_plugin", [("push", True), ("pull", True), ("pull", False)])
def test_engine_moves_a_study_in_accelerated_modes(orthanc_factory, mixed_study_files, tmp_path,
                                                   mode, target_plugin):
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=target_plugin)
    ids = upload(source, mixed_study_files)
    study = next(iter(ids.values()))

    async def go():
        engine = TransferEngine(OPTIONS, data_dir=tmp_path / "data")
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), [{"Level": "Study", "ID": study}],
                                      mode=mode, compression="auto")
            return await job.wait()
        finally:
            await engine.close()

    report = run(go(), timeout=240)
    assert report.state is JobState.SUCCESS, report.error
    assert report.mode is TransferMode(mode)
    assert report.verified == report.planned == len(ids)
    assert report.compression in ("gzip", "none")
    assert target.instance_md5s() == source.instance_md5s()


def test_engine_cancel_of_a_push_leaves_the_target_unchanged(orthanc_factory, tmp_path):
    from gui.sandbox import synthetic_studies as synth
    spec = synth.make_study_spec(61, "CT CANCEL")
    files = list(synth.ct_series(spec, 12, seed=61))
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    ids = upload(source, files)
    study = next(iter(ids.values()))

    async def go():
        engine = TransferEngine(TransferOptions(Threads=2, BucketSize=32), data_dir=tmp_path / "data")
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), [{"Level": "Study", "ID": study}],
                                      mode="push", compression="none")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while sum(1 for b in job.buckets if b.state.value == "done") < 3:
                assert loop.time() < deadline, "no bucket finished"
                await asyncio.sleep(0.01)
            await engine.cancel(job.id)
            return await job.wait()
        finally:
            await engine.close()

    report = run(go(), timeout=240)
    assert report.state is JobState.CANCELED
    assert target.instance_md5s() == {}
