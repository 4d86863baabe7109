"""Plain mode between two stock Orthanc servers: transfer, skip-present, verification."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

from gui.client.peer import Peer
from gui.engine import BucketProgress, BucketState, JobFinished, JobProgress, JobState, TransferMode
from gui.engine.transport_registry import default_transports
from gui.engine.plain_mode import PlainTransport
from gui.sandbox.orthanc_process import free_port
from tests.engine.helpers import (make_engine, peer, run, small_options, study_resource, upload_files,
                                  wait_for)


async def transfer(tmp_path, source, target, resources, transports=None, **submit_kwargs):
    engine = make_engine(tmp_path / "data", transports=transports)
    await engine.start()
    events: List[object] = []
    engine.subscribe(events.append)
    try:
        job = await engine.submit(peer(source), peer(target), resources, **submit_kwargs)
        report = await job.wait()
    finally:
        await engine.close()
    return report, events


@pytest.mark.parametrize("shape", ["small_study_files", "mixed_study_files", "large_study_files"])
def test_plain_transfer_moves_the_study_verified(shape, request, stock_pair, tmp_path):
    files = request.getfixturevalue(shape)
    source, target = stock_pair
    ids = upload_files(source, files)
    study = next(iter(ids.values()))

    report, events = run(transfer(tmp_path, source, target, study_resource(study)))

    assert report.state is JobState.SUCCESS, report.error
    assert report.mode is TransferMode.PLAIN
    assert report.planned == len(ids) == report.verified == report.transferred
    assert report.bytes == sum(len(f) for f in files)
    assert target.instance_md5s() == source.instance_md5s()
    buckets = [e for e in events if isinstance(e, BucketProgress)]
    assert buckets and all(e.state is BucketState.DONE for e in
                           {e.index: e for e in buckets}.values())
    assert sum(isinstance(e, JobFinished) for e in events) == 1
    progress = [e for e in events if isinstance(e, JobProgress)]
    assert progress[-1].state is JobState.SUCCESS and progress[-1].fraction == 1.0


def test_second_run_skips_what_the_target_has(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    first, _ = run(transfer(tmp_path, source, target, study_resource(study)))
    assert first.state is JobState.SUCCESS

    second, events = run(transfer(tmp_path, source, target, study_resource(study)))

    assert second.state is JobState.SUCCESS
    assert (second.transferred, second.skipped, second.verified) == (0, len(ids), len(ids))
    assert second.bytes == 0
    assert not [e for e in events if isinstance(e, BucketProgress)]

    forced, _ = run(transfer(tmp_path, source, target, study_resource(study), force=True))
    assert forced.state is JobState.SUCCESS
    assert (forced.transferred, forced.skipped, forced.verified) == (len(ids), 0, len(ids))


def test_only_the_missing_instances_travel(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    upload_files(target, ct_study_files[:2])
    study = next(iter(ids.values()))

    report, _ = run(transfer(tmp_path, source, target, study_resource(study)))

    assert report.state is JobState.SUCCESS
    assert (report.transferred, report.skipped, report.verified) == (len(ids) - 2, 2, len(ids))


class CorruptingTransport(PlainTransport):
    """Flips one byte of the pixel data of the first file of the first upload,
    *after* the transport's own read check: it stands for corruption in
    transit that only the storage commitment can catch. The DICOM UIDs are
    untouched, so the target files the bad copy under the same Orthanc ID."""

    corrupted: List[str] = []

    async def encode_body(self, files, compress=False):
        if not CorruptingTransport.corrupted:
            name, data = files[0]
            files = [(name, flip_near_end(data))] + list(files[1:])
            CorruptingTransport.corrupted.append(name.split(".")[0])
        return await super().encode_body(files, compress)

    async def upload_pieces(self, ctx, info, pieces):
        # Instances larger than a bucket are piped from the source: same corruption.
        if CorruptingTransport.corrupted:
            return await super().upload_pieces(ctx, info, pieces)
        CorruptingTransport.corrupted.append(info.id)
        data = b"".join([piece async for piece in pieces])

        async def again():
            yield flip_near_end(data)
        return await super().upload_pieces(ctx, info, again())


def flip_near_end(data: bytes) -> bytes:
    return data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]


@pytest.mark.parametrize("bucket_kb", [64, 4096], ids=["streamed", "in-memory"])
def test_md5_mismatch_is_detected_reported_and_rolled_back(stock_pair, tmp_path, monkeypatch,
                                                           ct_study_files, bucket_kb):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    CorruptingTransport.corrupted = []
    transports = default_transports().replaced(TransferMode.PLAIN, CorruptingTransport)

    # No re-send budget (MaxHttpRetries 0): the mismatch stands (with a
    # budget the instance is sent again, tests/reliability/test_resend.py).
    report, _ = run(transfer(tmp_path, source, target, study_resource(study), transports=transports,
                             options=small_options(BucketSize=bucket_kb, MaxHttpRetries=0)))

    bad = CorruptingTransport.corrupted[0]
    assert report.state is JobState.FAILURE
    assert report.failed == 1 and report.verified == len(ids) - 1
    failure = report.to_json()["failures"][0]
    assert failure["instance"] == bad and "MD5 mismatch" in failure["reason"]
    assert "not verified" in report.error
    # All or nothing: everything this job created was removed again.
    assert target.instance_md5s() == {}


def test_unreachable_target_fails_cleanly(orthanc_factory, tmp_path, ct_study_files):
    source = orthanc_factory("source")
    ids = upload_files(source, ct_study_files[:1])
    study = next(iter(ids.values()))
    nowhere = Peer(name="nowhere", url=f"http://127.0.0.1:{free_port()}")

    async def go():
        engine = make_engine(tmp_path / "data", small_options(MaxHttpRetries=0))
        await engine.start()
        try:
            job = await engine.submit(peer(source), nowhere, study_resource(study))
            return await job.wait()
        finally:
            await engine.close()

    report = run(go())
    assert report.state is JobState.FAILURE
    assert "nowhere" in report.error and "connection refused" in report.error


def test_unknown_study_fails_with_a_clear_reason(stock_pair, tmp_path):
    source, target = stock_pair
    missing = "01234567-89abcdef-01234567-89abcdef-01234567"
    report, _ = run(transfer(tmp_path, source, target, study_resource(missing)))
    assert report.state is JobState.FAILURE
    assert missing in report.error and "source" in report.error


def test_plan_summary(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    upload_files(target, ct_study_files[:1])
    study = next(iter(ids.values()))

    async def go():
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            return await engine.plan(peer(source), peer(target), study_resource(study))
        finally:
            await engine.close()

    summary = run(go())
    assert summary.mode is TransferMode.PLAIN
    assert (summary.instances, summary.already_present) == (len(ids), 1)
    assert summary.bytes == sum(len(f) for f in ct_study_files[1:])
    assert summary.buckets >= len(ids) - 1      # 64 KB buckets: every CT slice is split


def test_target_down_mid_transfer_is_retried(stock_pair, tmp_path, long_study_files):
    """The target goes away in the middle of a job and comes back; queries are
    retried with backoff, the buckets show "retrying n", and the job completes."""
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))

    async def go():
        engine = make_engine(tmp_path / "data", small_options(Threads=1, MaxHttpRetries=8))
        await engine.start()
        events: List[object] = []
        engine.subscribe(events.append)
        paused: List[bool] = []

        def pause_once(event):
            if isinstance(event, BucketProgress) and event.state is BucketState.DONE and not paused:
                paused.append(True)
                asyncio.ensure_future(engine.pause(job.id))

        engine.subscribe(pause_once)
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study))
            await wait_for(lambda: job.state is JobState.PAUSED and all(
                b.state in (BucketState.QUEUED, BucketState.DONE) for b in job.buckets),
                what="the job to pause")
            await asyncio.to_thread(target._kill)          # the target is down...
            await engine.resume(job.id)
            await wait_for(lambda: any(isinstance(e, BucketProgress) and e.state is BucketState.RETRYING
                                       for e in events), what="a retry")
            await asyncio.to_thread(target.start)          # ...and back, same port and storage
            return await job.wait(), events
        finally:
            await engine.close()

    report, events = run(go())
    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    retrying = [e for e in events if isinstance(e, BucketProgress) and e.state is BucketState.RETRYING]
    assert retrying[0].retries == 1 and "connection refused" in retrying[0].error
    assert target.instance_md5s() == source.instance_md5s()


def test_instances_larger_than_a_bucket_never_sit_whole_in_memory(stock_pair, tmp_path, monkeypatch,
                                                                  mixed_study_files):
    """Stock Orthanc has no ranges, so a large instance is streamed to a
    scratch file and uploaded from it: no whole-file download, no request
    body larger than a bucket, and no scratch file left behind."""
    from gui.client.orthanc_client import OrthancClient
    from gui.engine import plain_mode
    bucket = 1024 * 1024
    whole_reads: List[int] = []
    bodies: List[int] = []
    original_download, original_upload = plain_mode.download_instance, OrthancClient.upload

    async def recording_download(source, instance_id, policy):
        data, wire = await original_download(source, instance_id, policy)
        whole_reads.append(len(data))
        return data, wire

    async def recording_upload(self, data, **kwargs):
        bodies.append(len(data))
        return await original_upload(self, data, **kwargs)

    monkeypatch.setattr(plain_mode, "download_instance", recording_download)
    monkeypatch.setattr(OrthancClient, "upload", recording_upload)
    source, target = stock_pair
    ids = upload_files(source, mixed_study_files)
    study = next(iter(ids.values()))
    assert max(len(f) for f in mixed_study_files) > 4 * bucket

    report, _ = run(transfer(tmp_path, source, target, study_resource(study),
                             options=small_options(BucketSize=bucket // 1024)))

    assert report.state is JobState.SUCCESS, report.error
    assert target.instance_md5s() == source.instance_md5s()
    assert whole_reads and max(whole_reads) <= bucket
    assert bodies and max(bodies) <= 2 * bucket   # a stored ZIP of small instances, at most
    assert not any((tmp_path / "data").rglob("*.dcm"))
