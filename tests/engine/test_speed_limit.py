"""Bandwidth caps: one token bucket per job and one for all jobs, spent by both HTTP clients."""

from __future__ import annotations

import asyncio

import pytest

from gui.client.rate_limit import BURST_SECONDS, RateLimit, TokenBucket
from gui.engine import JobState
from tests.engine.helpers import make_engine, peer, run, small_options, study_resource, upload_files


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_makes_callers_wait_for_the_bytes_over_the_cap() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)         # 1000 B/s, starts empty
    assert bucket.take(500) == pytest.approx(0.5)
    assert bucket.take(500) == pytest.approx(1.0)   # debt adds up: the rate over time is the cap
    clock.now += 1.0
    assert bucket.take(1000) == pytest.approx(1.0)
    clock.now += 100.0                              # idle: only a burst's worth saved
    assert bucket.take(int(1000 * BURST_SECONDS)) == 0.0
    assert bucket.take(1000) == pytest.approx(1.0)
    assert bucket.total == 3000 + int(1000 * BURST_SECONDS)


def test_the_accounting_measures_the_cap_over_the_span_the_bytes_took() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)
    assert bucket.accounting() is None                   # nothing spent yet
    for _ in range(10):
        delay = bucket.take(500)
        clock.now += delay                               # the caller waits as told
    record = bucket.accounting()
    assert record is not None and record["bytes"] == 5000 and record["cap"] == 1000
    assert record["achieved"] == 1000 and record["seconds"] == pytest.approx(5.0)


def test_no_cap_counts_but_never_waits_and_a_new_cap_applies_at_once() -> None:
    clock = Clock()
    bucket = TokenBucket(0, clock=clock)
    assert bucket.take(10 ** 9) == 0.0 and bucket.rate is None
    bucket.rate = 2000
    assert bucket.take(1000) == pytest.approx(0.5)


def test_the_strictest_of_the_job_and_the_global_cap_holds() -> None:
    clock = Clock()
    job, shared = TokenBucket(1_000_000, clock=clock), TokenBucket(1000, clock=clock)
    waits = []

    async def go() -> None:
        limit = RateLimit([job, shared])
        loop = asyncio.get_running_loop()
        start = loop.time()
        await limit.spend(100)      # 0.1 s owed to the global bucket
        waits.append(loop.time() - start)

    asyncio.run(go())
    assert waits[0] >= 0.09
    assert job.total == shared.total == 100


def test_a_capped_transfer_spends_every_byte_on_its_caps_and_takes_the_time_they_allow(
        stock_pair, tmp_path, ct_study_files) -> None:
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    size = sum(len(f) for f in ct_study_files)
    cap_kb = 4096                    # 4 MB/s: the ~3 MB study goes down and up again, ~1.5 s

    async def go():
        engine = make_engine(tmp_path / "data", small_options(MaxRate=cap_kb, MaxTotalRate=64 * 1024))
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode="plain")
            report = await job.wait()
            return report, engine.job_rate(job.id), engine.global_rate
        finally:
            await engine.close()

    report, job_bucket, global_bucket = run(go())
    assert report.state is JobState.SUCCESS and report.verified == len(ids)
    # Plain mode brings every byte through this computer: down from the source, up to the target.
    assert job_bucket.total >= 2 * size
    assert global_bucket.total == job_bucket.total
    assert job_bucket.waited > 0
    # The bucket's debt is slept off: the job cannot have been faster than the cap
    # (a lower bound only, so a loaded machine cannot break it).
    rate = cap_kb * 1024
    assert report.seconds >= (job_bucket.total - rate * BURST_SECONDS) / rate * 0.9
    # The report says what the cap let through; never above it.
    record = report.to_json()["speed_limit"]
    assert record["cap"] == rate and record["bytes"] == job_bucket.total
    assert record["achieved"] <= rate * 1.01


def test_a_job_cap_changed_while_it_runs_applies_and_is_kept(stock_pair, tmp_path, ct_study_files) -> None:
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))

    async def go():
        engine = make_engine(tmp_path / "data", small_options())
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode="plain")
            engine.set_job_rate(job.id, 8192)
            assert engine.job_rate(job.id).rate == 8192 * 1024
            with pytest.raises(Exception, match="MaxRate"):
                engine.set_job_rate(job.id, -1)
            report = await job.wait()
            stored = engine.store.load_jobs()[0].options["MaxRate"]
            return report, stored, engine.job_rate(job.id)
        finally:
            await engine.close()

    report, stored, bucket = run(go())
    assert report.state is JobState.SUCCESS
    assert stored == 8192
    assert bucket.total >= sum(len(f) for f in ct_study_files)


def test_the_command_line_takes_a_rate_like_curl() -> None:
    from gui.cli import build_parser, transfer_options
    from gui.config.settings import AppConfig

    parser = build_parser()
    args = parser.parse_args(["send", "--from", "a", "--to", "b", "--study", "x", "--limit-rate", "2M"])
    assert transfer_options(AppConfig(), args).MaxRate == 2048
    args = parser.parse_args(["send", "--from", "a", "--to", "b", "--study", "x", "--limit-rate", "500K"])
    assert transfer_options(AppConfig(), args).MaxRate == 500
    with pytest.raises(SystemExit):
        parser.parse_args(["send", "--from", "a", "--to", "b", "--study", "x", "--limit-rate", "fast"])


def test_the_httpx_path_spends_what_it_writes_and_reads(orthanc_factory, ct_study_files) -> None:
    import httpx

    from gui.client.orthanc_client import OrthancClient

    server = orthanc_factory("httpx-path")
    data = ct_study_files[0]

    async def go():
        bucket = TokenBucket(64 * 1024 * 1024)
        # An injected transport makes the client use httpx for everything (no lean client).
        async with OrthancClient(peer(server), transport=httpx.AsyncHTTPTransport(),
                                 rate_limit=RateLimit([bucket])) as client:
            assert client._fast is None
            stored = (await client.upload(data))[0]
            after_upload = bucket.total
            body = await client.download_instance(stored["ID"], gzip=False)
            streamed = bytearray()
            await client.stream_get(f"/instances/{stored['ID']}/file", lambda p: streamed.extend(p) or True,
                                    headers={"Accept-Encoding": "identity"})
        return after_upload, bucket.total, body, bytes(streamed)

    after_upload, total, body, streamed = run(go())
    assert body == streamed == data
    assert after_upload >= len(data)                   # the upload's body
    assert total >= after_upload + 2 * len(data)       # and both downloads


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_a_capped_accelerated_job_spends_its_buckets_on_the_cap(orthanc_factory, tmp_path, ct_study_files,
                                                                mode) -> None:
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    size = sum(len(f) for f in ct_study_files)

    async def go():
        engine = make_engine(tmp_path / "data", small_options(MaxRate=8192, Compression="none"))
        await engine.start()
        try:
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode=mode)
            report = await job.wait()
            return report, engine.job_rate(job.id)
        finally:
            await engine.close()

    report, bucket = run(go())
    assert report.state is JobState.SUCCESS, report.error
    # The buckets come from the source and go to the target through this computer's clients,
    # all their connections spending on the one job bucket.
    assert bucket.total >= 2 * size
    assert report.to_json()["speed_limit"]["achieved"] <= 8192 * 1024 * 1.01
