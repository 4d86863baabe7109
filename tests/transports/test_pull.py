"""Accelerated pull from a plugin server, delivered by push or plainly."""

from __future__ import annotations

import shutil
from typing import Optional

import pytest

from gui.config.settings import TransferOptions
from gui.engine.events import BucketState
from gui.engine.pull_mode import PullTransport
from tests.transports.helpers import Recorder, client_for, infos_of, make_ctx, run


def pull(source, target, files, tmp_path, *, compression, options, target_accelerated):
    instances = infos_of(files, source)
    recorder = Recorder()
    transport = PullTransport()

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder,
                           compression=compression, options=options,
                           target_accelerated=target_accelerated)
            buckets = transport.plan(ctx)
            await transport.run(ctx, buckets)
            return ctx, buckets

    ctx, buckets = run(go())
    return instances, recorder, ctx, buckets, transport


@pytest.mark.parametrize("compression", ["gzip", "auto"])
def test_pull_to_plugin_target(orthanc_factory, mixed_study_files, tmp_path, compression):
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    # CacheSize 2 MB: the 6 MB instance is staged on disk, the small ones in memory.
    options = TransferOptions(BucketSize=512, Threads=3, CacheSize=2)
    instances, recorder, ctx, buckets, transport = pull(
        source, target, mixed_study_files, tmp_path, compression=compression, options=options,
        target_accelerated=True)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert transport.last_staging.spilled >= 1
    assert transport.last_staging.peak_memory <= options.cache_size_bytes
    assert set(recorder.final_states().values()) == {BucketState.DONE}
    assert not list((tmp_path / "staging").rglob("*.dcm")), "staged files are removed"


def test_pull_to_stock_target(orthanc_factory, mixed_study_files, tmp_path):
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst")
    options = TransferOptions(BucketSize=512, Threads=2, CacheSize=2)
    instances, recorder, ctx, buckets, transport = pull(
        source, target, mixed_study_files, tmp_path, compression="gzip", options=options,
        target_accelerated=False)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert ctx.created_on_target == {i.id for i in instances}  # what a rollback would delete
    assert transport.last_policy.ratio > 1.1  # the CT-like data travelled compressed


class FlipOneByteInChunks:
    """A wire fault no real server produces: flips one byte of the first
    /transfers/chunks answer, keeping its length."""

    def __init__(self) -> None:
        import httpx
        self.inner = httpx.AsyncHTTPTransport()
        self.flipped = False

    async def handle_async_request(self, request):
        import httpx
        if "/transfers/chunks/" not in request.url.path or self.flipped:
            return await self.inner.handle_async_request(request)
        request.headers["Accept-Encoding"] = "identity"  # flip the payload, not an HTTP encoding
        response = await self.inner.handle_async_request(request)
        body = bytearray(await response.aread())
        body[len(body) // 3] ^= 0x01
        self.flipped = True
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body))

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("target_accelerated", [True, False])
def test_corrupted_pulled_bucket_fails_and_target_stays_unchanged(orthanc_factory, ct_study_files,
                                                                   tmp_path, target_accelerated):
    import httpx
    from gui.engine.transport_base import TransferFailed

    class Fault(FlipOneByteInChunks, httpx.AsyncBaseTransport):
        pass

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=target_accelerated)
    instances = infos_of(ct_study_files, source)
    recorder = Recorder()
    fault = Fault()
    transport = PullTransport()

    async def go():
        async with client_for(source, transport=fault) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, compression="none",
                           # No re-send budget: the corruption stands (re-sending: test_resend.py).
                           options=TransferOptions(BucketSize=256, Threads=2, MaxHttpRetries=0),
                           target_accelerated=target_accelerated)
            with pytest.raises(TransferFailed) as failure:
                await transport.run(ctx, transport.plan(ctx))
            await transport.discard(ctx)   # what the scheduler does after a failure
            return failure.value

    failure = run(go())
    assert fault.flipped
    assert "MD5" in failure.reason and failure.instances
    assert set(failure.instances) <= {i.id for i in instances}
    assert target.instance_md5s() == {}


@pytest.fixture(scope="module")
def ct_long_files():
    from gui.sandbox import synthetic_studies as synth
    return list(synth.ct_series(synth.make_study_spec(51, "CT LONG"), 16, seed=51))


def restart_losing_staging(server) -> None:
    server.restart(while_stopped=lambda: shutil.rmtree(server.storage_dir / "transfers-staging"))


def test_pull_staging_stays_bounded_and_survives_a_dropped_transaction(orthanc_factory, ct_long_files,
                                                                        tmp_path):
    """16 slices (8 MB) through a 1 MB staging area: instances are freed once
    delivered and the fetch waits for room. The target restarts mid-way with
    its staging area lost (our plugin keeps it across restarts; the C++
    plugin does not): freed instances are fetched again on demand."""
    import asyncio

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_long_files, source)
    options = TransferOptions(BucketSize=256, Threads=2, CacheSize=1)
    recorder = Recorder()
    transport = PullTransport()

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, compression="none",
                           options=options)
            paused = asyncio.Event()

            def pause_after_six(event):
                done = [e for e in recorder.events if e.state is BucketState.DONE]
                if len(done) == 6 and not paused.is_set():
                    ctx.running.clear()
                    paused.set()

            recorder.hooks.append(pause_after_six)
            task = asyncio.ensure_future(transport.run(ctx, transport.plan(ctx)))
            await asyncio.wait_for(paused.wait(), 60)
            await asyncio.to_thread(restart_losing_staging, target)
            ctx.running.set()
            await task

    run(go(), timeout=240)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    staging = transport.last_staging
    largest = max(i.size for i in instances)
    total = sum(i.size for i in instances)
    print(f"\nstaged at most {staging.peak_staged / 2**20:.1f} MB of {total / 2**20:.1f} MB")
    assert staging.peak_staged <= options.cache_size_bytes + options.Threads * largest < total
    assert len([e for e in recorder.events if e.index == 0 and e.state is BucketState.DONE]) == 2


@pytest.mark.parametrize("announced", [True, False])
def test_pull_gets_the_codec_only_from_a_source_that_announces_it(orthanc_factory, ct_study_files, tmp_path,
                                                                  announced):
    """gzip GETs ask for the split16 codec too: our plugin answers in it (its
    Content-Type says so), a source that does not announce it (our plugin
    with "Codecs": [], as the C++ plugin) answers gzip. Verified either way."""
    config = {} if announced else {"Transfers": {"Codecs": []}}
    source = orthanc_factory("src", with_accelerator=True, extra_config=config)
    target = orthanc_factory("dst", with_accelerator=True)
    instances, recorder, ctx, buckets, transport = pull(
        source, target, ct_study_files, tmp_path, compression="gzip",
        options=TransferOptions(BucketSize=1024), target_accelerated=True)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    fetched = transport.last_fetcher.codec_answers
    assert fetched == len(buckets) if announced else fetched == 0


def test_pull_towards_a_slow_target_runs_only_a_few_buckets_ahead(orthanc_factory, tmp_path):
    """A large CacheSize is a bound, not a goal: with the delivery slower than
    the fetch (the target behind 4 Mbit/s), the fetch stays a few buckets per
    worker ahead instead of holding the whole study in memory."""
    from gui.client.orthanc_client import OrthancClient
    from gui.client.peer import Peer
    from gui.engine.pull_mode.pull_transport import LEAD_BUCKETS_PER_THREAD
    from gui.sandbox import synthetic_studies as synth
    from tests.devtools.netem import ThreadedWanProxy

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    files = list(synth.tiny_instances(synth.make_study_spec(88, "LEAD"), 150, size=4096, seed=88))
    instances = infos_of(files, source)
    options = TransferOptions(BucketSize=16, Threads=2, CacheSize=64)
    lead = LEAD_BUCKETS_PER_THREAD * options.Threads * options.bucket_size_bytes
    transport = PullTransport()
    with ThreadedWanProxy("127.0.0.1", target.http_port, bandwidth_mbit=4) as proxy:
        async def go():
            async with client_for(source) as src, OrthancClient(Peer(name="dst", url=proxy.url)) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="none",
                               options=options)
                buckets = transport.plan(ctx)
                await transport.run(ctx, buckets)
                return buckets
        buckets = run(go(), timeout=120)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    staging = transport.last_staging
    total = sum(i.size for i in instances)
    largest = max(b.total_size for b in buckets)
    print(f"\nstaged at most {staging.peak_staged / 1024:.0f} KB of {total / 1024:.0f} KB (lead {lead // 1024} KB)")
    assert staging.peak_staged <= lead + options.Threads * largest < total / 2


class HoldLastPiece:
    """Holds the GET of a large instance's last piece until the target has
    staged some of its bytes (or ``patience`` seconds passed): a delivery
    that waits for the whole instance never gets there."""

    def __init__(self, staging_root, instance_size: int, patience: float = 60.0) -> None:
        import httpx
        self.inner = httpx.AsyncHTTPTransport()
        self.staging_root = staging_root
        self.instance_size = instance_size
        self.patience = patience
        self.staged_before_last: Optional[bool] = None

    def _target_staged(self) -> bool:
        return any(p.is_file() and p.stat().st_size > 0 for p in self.staging_root.rglob("*.dcm"))

    async def handle_async_request(self, request):
        import asyncio
        query = dict(request.url.params)
        last = ("/transfers/chunks/" in request.url.path and "size" in query
                and int(query.get("offset", "0")) + int(query["size"]) == self.instance_size)
        if last and self.staged_before_last is None:
            deadline = asyncio.get_running_loop().time() + self.patience
            while not self._target_staged() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)   # the condition is on another server's disk
            self.staged_before_last = self._target_staged()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_pull_delivers_a_large_instance_while_it_is_still_being_fetched(orthanc_factory, tmp_path):
    """A 17 MB instance split into 2 MB pieces: its first buckets reach the
    target before its last piece is fetched (the delivery does not wait for
    the whole file), and it arrives whole with its MD5."""
    import httpx
    from gui.sandbox import synthetic_studies as synth

    files = [synth.multiframe_instance(synth.make_study_spec(61, "MF STREAM"), 17, seed=61)]
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(files, source)
    hold = type("Hold", (HoldLastPiece, httpx.AsyncBaseTransport), {})(
        target.storage_dir / "transfers-staging", instances[0].size)
    transport = PullTransport()

    async def go():
        async with client_for(source, transport=hold) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="none",
                           options=TransferOptions(BucketSize=1024, Threads=2), target_accelerated=True)
            await transport.run(ctx, transport.plan(ctx))

    run(go())
    assert hold.staged_before_last is True
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}


def test_a_corrupted_piece_of_a_streamed_instance_is_caught_by_the_commit_and_sent_again(
        orthanc_factory, tmp_path):
    """A large instance delivered as it arrives is not hashed in the engine:
    one byte flipped in one of its pieces is refused by the target's commit
    (nothing imported), then the instance is fetched and sent again within
    the re-send budget, and arrives with its MD5."""
    import httpx
    from gui.sandbox import synthetic_studies as synth

    files = [synth.multiframe_instance(synth.make_study_spec(62, "MF STREAM BAD"), 17, seed=62)]
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(files, source)
    fault = type("Fault", (FlipOneByteInChunks, httpx.AsyncBaseTransport), {})()
    transport = PullTransport()

    async def go():
        async with client_for(source, transport=fault) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="none",
                           options=TransferOptions(BucketSize=1024, Threads=2, MaxHttpRetries=1),
                           target_accelerated=True)
            await transport.run(ctx, transport.plan(ctx))
            return ctx

    ctx = run(go())
    assert fault.flipped
    assert list(ctx.resends.reasons) == [instances[0].id]
    assert "refused by the commit" in ctx.resends.reasons[instances[0].id][0]
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
