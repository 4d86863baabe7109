"""Cancel, pause/resume, resubmit, concurrency, and jobs that survive a restart."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import List, Set

from gui.engine import BucketProgress, BucketState, JobProgress, JobState
from gui.engine.job_store import DB_NAME
from tests.engine.helpers import make_engine, peer, run, small_options, study_resource, upload_files, wait_for


def test_cancel_mid_transfer_leaves_the_target_exactly_as_before(stock_pair, tmp_path, long_study_files):
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    # Two instances of the study were on the target before the job; with
    # force they are sent again, and must survive the rollback.
    upload_files(target, long_study_files[:2])
    before = target.instance_md5s()
    assert len(before) == 2

    async def go():
        engine = make_engine(tmp_path / "data", small_options(Threads=1))
        await engine.start()
        done_instances: Set[str] = set()

        def on_event(event):
            if isinstance(event, BucketProgress) and event.state is BucketState.DONE:
                done_instances.update(event.instance_ids)
                new = done_instances - set(before)
                if new and not cancel_requested:
                    cancel_requested.append(True)
                    asyncio.ensure_future(engine.cancel(job.id))

        cancel_requested: List[bool] = []
        engine.subscribe(on_event)
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study), force=True)
            report = await job.wait()
        finally:
            await engine.close()
        return report, done_instances

    report, done_instances = run(go())
    assert report.state is JobState.CANCELED
    # Something new really had arrived on the target before the cancel.
    assert done_instances - set(before)
    assert len(done_instances) < len(ids)
    assert target.instance_md5s() == before


def test_pause_then_resume_completes(stock_pair, tmp_path, long_study_files):
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))

    async def go():
        engine = make_engine(tmp_path / "data", small_options(Threads=1))
        await engine.start()
        states: List[JobState] = []
        engine.subscribe(lambda e: isinstance(e, JobProgress) and states.append(e.state))

        def pause_once(event):
            if isinstance(event, BucketProgress) and event.state is BucketState.DONE and not paused:
                paused.append(True)
                asyncio.ensure_future(engine.pause(job.id))

        paused: List[bool] = []
        engine.subscribe(pause_once)
        try:
            wall_start = time.monotonic()
            job = await engine.submit(peer(source), peer(target), study_resource(study))
            await wait_for(lambda: job.state is JobState.PAUSED, what="the job to pause")
            paused_seen = time.monotonic()
            # Paused: no bucket is taken up any more once the ones in flight are done.
            await wait_for(lambda: all(b.state in (BucketState.QUEUED, BucketState.DONE)
                                       for b in job.buckets), what="in-flight buckets to settle")
            done_while_paused = sum(b.state is BucketState.DONE for b in job.buckets)
            assert done_while_paused < len(job.buckets)
            assert job.state is JobState.PAUSED
            assert job.progress.raw_rate == 0.0
            resumed = time.monotonic()
            await engine.resume(job.id)
            report = await job.wait()
            wall = time.monotonic() - wall_start
        finally:
            await engine.close()
        # The report's seconds (and so its speed) leave the pause out.
        assert report.seconds <= wall - (resumed - paused_seen)
        return report, states

    report, states = run(go())
    assert report.state is JobState.SUCCESS
    assert report.verified == len(ids) == report.transferred
    assert JobState.PAUSED in states
    assert states.index(JobState.PAUSED) < len(states) - 1 - states[::-1].index(JobState.RUNNING)


def test_concurrency_bound_and_two_jobs(orthanc_factory, tmp_path, ct_study_files, small_study_files):
    source, target = orthanc_factory("source"), orthanc_factory("target")
    study_a = next(iter(upload_files(source, ct_study_files).values()))
    study_b = next(iter(upload_files(source, small_study_files).values()))

    async def go(limit: int):
        engine = make_engine(tmp_path / f"data{limit}", max_concurrent_jobs=limit)
        await engine.start()
        running: Set[str] = set()
        peak: List[int] = [0]

        def on_event(event):
            if isinstance(event, JobProgress):
                if event.state is JobState.RUNNING:
                    running.add(event.job_id)
                else:
                    running.discard(event.job_id)
                peak[0] = max(peak[0], len(running))

        engine.subscribe(on_event)
        try:
            jobs = [await engine.submit(peer(source), peer(target), study_resource(s), force=True)
                    for s in (study_a, study_b)]
            reports = await asyncio.gather(*(j.wait() for j in jobs))
        finally:
            await engine.close()
        return reports, peak[0]

    reports, peak = run(go(1))
    assert [r.state for r in reports] == [JobState.SUCCESS, JobState.SUCCESS]
    assert peak == 1
    reports, peak = run(go(2))
    assert [r.state for r in reports] == [JobState.SUCCESS, JobState.SUCCESS]
    assert target.instance_md5s() == source.instance_md5s()


def test_restart_brings_jobs_back_paused_and_resume_skips_what_arrived(stock_pair, tmp_path,
                                                                      long_study_files):
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    data = tmp_path / "data"

    async def first_session():
        engine = make_engine(data, small_options(Threads=1))
        await engine.start()
        done: Set[str] = set()
        engine.subscribe(lambda e: isinstance(e, BucketProgress) and e.state is BucketState.DONE
                         and done.update(e.instance_ids))
        job = await engine.submit(peer(source), peer(target), study_resource(study))
        await wait_for(lambda: len(done) >= 2, what="two instances sent")
        await engine.close()     # like quitting the app: the job stays resumable
        return job.id

    job_id = run(first_session())
    arrived = len(target.instance_md5s())
    assert 2 <= arrived < len(ids)

    async def second_session():
        engine = make_engine(data, small_options(Threads=1))
        await engine.start()
        try:
            job = engine.job(job_id)
            assert job.state is JobState.PAUSED
            await engine.resume(job_id)
            return await job.wait()
        finally:
            await engine.close()

    report = run(second_session())
    assert report.state is JobState.SUCCESS
    assert report.verified == len(ids)
    # An upload cut off by the close may still be stored by Orthanc after the
    # count above, so the resumed job may find one more instance there.
    assert arrived <= report.skipped <= arrived + 1
    assert report.transferred == len(ids) - report.skipped
    assert target.instance_md5s() == source.instance_md5s()


def test_cancel_after_restart_rolls_back_the_earlier_session(stock_pair, tmp_path, long_study_files):
    source, target = stock_pair
    study = next(iter(upload_files(source, long_study_files).values()))
    data = tmp_path / "data"

    async def first_session():
        engine = make_engine(data, small_options(Threads=1))
        await engine.start()
        done: Set[str] = set()
        engine.subscribe(lambda e: isinstance(e, BucketProgress) and e.state is BucketState.DONE
                         and done.update(e.instance_ids))
        job = await engine.submit(peer(source), peer(target), study_resource(study))
        await wait_for(lambda: len(done) >= 1, what="one instance sent")
        await engine.close()
        return job.id

    job_id = run(first_session())
    assert target.instance_md5s()

    async def second_session():
        engine = make_engine(data)
        await engine.start()
        try:
            await engine.cancel(job_id)
            return await engine.job(job_id).wait()
        finally:
            await engine.close()

    report = run(second_session())
    assert report.state is JobState.CANCELED
    assert target.instance_md5s() == {}


def test_resubmit_after_failure(orthanc_factory, tmp_path, ct_study_files):
    source = orthanc_factory("source")
    target = orthanc_factory("target")
    study = next(iter(upload_files(source, ct_study_files).values()))
    target_port = target.http_port

    async def go():
        engine = make_engine(tmp_path / "data", small_options(MaxHttpRetries=0))
        await engine.start()
        try:
            target._kill()          # the target is down: the job fails
            job = await engine.submit(peer(source), peer(target), study_resource(study))
            failed = await job.wait()
            await asyncio.to_thread(target.start)   # back up, same port and storage
            assert target.http_port == target_port
            again = await engine.resubmit(job.id)
            assert again.id == job.id
            return failed, await again.wait()
        finally:
            await engine.close()

    failed, report = run(go())
    assert failed.state is JobState.FAILURE and "connection refused" in failed.error
    assert report.state is JobState.SUCCESS and report.verified == len(ct_study_files)


def test_job_database_has_no_password_and_is_private(orthanc_factory, tmp_path, ct_study_files):
    password = "Very-Secret-Pw-417"
    source = orthanc_factory("source", username="alice", password=password)
    target = orthanc_factory("target", username="bob", password=password)
    study = next(iter(upload_files(source, ct_study_files[:2]).values()))
    data = tmp_path / "data"

    async def go():
        engine = make_engine(data)
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study))
            return await job.wait()
        finally:
            await engine.close()

    assert run(go()).state is JobState.SUCCESS
    db = data / DB_NAME
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    for path in data.iterdir():
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
            if path.name.startswith(DB_NAME):
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_paused_pending_job_does_not_hold_a_place(orthanc_factory, tmp_path, ct_study_files,
                                                    small_study_files):
    source, target = orthanc_factory("source"), orthanc_factory("target")
    study_a = next(iter(upload_files(source, ct_study_files).values()))
    study_b = next(iter(upload_files(source, small_study_files).values()))

    async def go():
        engine = make_engine(tmp_path / "data", max_concurrent_jobs=1)
        await engine.start()
        try:
            first = await engine.submit(peer(source), peer(target), study_resource(study_a))
            waiting = await engine.submit(peer(source), peer(target), study_resource(study_b))
            await engine.pause(waiting.id)
            assert waiting.state is JobState.PAUSED
            third = await engine.submit(peer(source), peer(target), study_resource(study_b), force=True)
            reports = [await first.wait(), await third.wait()]
            assert waiting.state is JobState.PAUSED       # never started while paused
            await engine.resume(waiting.id)
            reports.append(await waiting.wait())
            return reports
        finally:
            await engine.close()

    reports = run(go())
    assert [r.state for r in reports] == [JobState.SUCCESS] * 3
    assert reports[2].skipped == len(small_study_files)   # the third job had sent them already


def test_quitting_mid_push_keeps_the_transaction_and_resume_sends_only_the_rest(orthanc_factory, tmp_path,
                                                                               long_study_files):
    """Quitting the app is not cancelling: the staged push transaction survives,
    and the resumed job PUTs only the buckets the target has not received."""
    source = orthanc_factory("source")
    target = orthanc_factory("target", with_accelerator=True)
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    data = tmp_path / "data"
    options = small_options(Threads=1, BucketSize=256, Compression="none")

    async def engine_noting(state: BucketState):
        """A started engine, and the indexes of the buckets that reach ``state``."""
        engine = make_engine(data, options)
        await engine.start()
        seen: Set[int] = set()
        engine.subscribe(lambda e: isinstance(e, BucketProgress) and e.state is state and seen.add(e.index))
        return engine, seen

    async def first_session():
        engine, done = await engine_noting(BucketState.DONE)
        job = await engine.submit(peer(source), peer(target), study_resource(study), mode="push")
        await wait_for(lambda: len(done) >= 3, what="three buckets sent")
        await engine.close()
        return job.id, len(job.buckets), set(done)

    job_id, total_buckets, sent_before = run(first_session())
    assert target.instance_md5s() == {}  # nothing imported before the commit

    async def second_session():
        engine, sending = await engine_noting(BucketState.SENDING)
        try:
            await engine.resume(job_id)
            return await engine.job(job_id).wait(), sending
        finally:
            await engine.close()

    report, sent_after = run(second_session())
    assert report.state is JobState.SUCCESS and report.verified == len(ids)
    assert sent_after and not (sent_after & sent_before)
    assert len(sent_after) <= total_buckets - len(sent_before)
    assert target.instance_md5s() == source.instance_md5s()
