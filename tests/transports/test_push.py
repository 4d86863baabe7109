"""Accelerated push between two Orthanc servers running the plugin."""

from __future__ import annotations

import pytest

from gui.config.settings import TransferOptions
from gui.engine.events import BucketState
from gui.engine.push_mode import PushTransport
from tests.transports.helpers import Recorder, client_for, infos_of, make_ctx, run


def push(source, target, files, tmp_path, *, compression="none", options=None,
         source_accelerated=True):
    instances = infos_of(files, source)
    recorder = Recorder()
    transport = PushTransport()

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder,
                           compression=compression, options=options,
                           source_accelerated=source_accelerated)
            buckets = transport.plan(ctx)
            await transport.run(ctx, buckets)
            return ctx, buckets

    ctx, buckets = run(go())
    return instances, recorder, ctx, buckets


@pytest.mark.parametrize("compression,asynchronous", [("none", True), ("gzip", False)])
def test_push_small_study(orthanc_factory, ct_study_files, tmp_path, compression, asynchronous,
                          monkeypatch):
    """With our plugin the commit is asynchronous (polled); the synchronous
    commit of the C++ plugin is exercised by not asking for it."""
    from gui.engine.push_mode import push_transport

    async def no_async(ctx):
        return False

    if not asynchronous:
        monkeypatch.setattr(push_transport, "supports_asynchronous_commit", no_async)
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances, recorder, ctx, buckets = push(source, target, ct_study_files, tmp_path,
                                             compression=compression)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert set(recorder.final_states().values()) == {BucketState.DONE}
    assert ctx.compression_used == compression
    # Every bucket went through the documented states, in order.
    states = recorder.states(0)
    expected = [BucketState.QUEUED, BucketState.READING] + \
        ([BucketState.COMPRESSING] if compression == "gzip" else []) + [BucketState.SENDING]
    assert states[:len(expected)] == expected and states[-1] == BucketState.DONE
    assert recorder.journal.push_transaction() is None  # forgotten once committed


@pytest.mark.parametrize("compression,source_accelerated", [("gzip", True), ("none", False)])
def test_push_mixed_study_splits_large_instances(orthanc_factory, mixed_study_files, tmp_path,
                                                 compression, source_accelerated):
    """The 6 MB instance is cut into several buckets (BucketSize 512 KB); with a
    stock source its file is fetched once and its chunks cut from the cache."""
    source = orthanc_factory("src", with_accelerator=source_accelerated)
    target = orthanc_factory("dst", with_accelerator=True)
    options = TransferOptions(BucketSize=512, Threads=3)
    instances, recorder, ctx, buckets = push(source, target, mixed_study_files, tmp_path,
                                             compression=compression, options=options,
                                             source_accelerated=source_accelerated)
    split = [b for b in buckets if b.chunks[0].offset > 0]
    assert split, "the large instance should have been split"
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    sending = [e for e in recorder.events if e.state is BucketState.SENDING]
    assert any(0 < e.wire_done < e.wire_total for e in sending), "progress inside a bucket"
    assert not any((tmp_path / "staging").glob("*")) if (tmp_path / "staging").exists() else True


def test_push_many_tiny_instances_from_an_accelerated_source(orthanc_factory, tmp_path):
    """A push bucket is cut for the target's BucketSize only: with a large
    BucketSize, one bucket holds 150 tiny instances, more IDs than one chunks
    URL may name (the plugin refuses more than 100; the URL limit is about
    42). The source reader fetches it in several GETs."""
    from gui.sandbox import synthetic_studies as synth

    spec = synth.make_study_spec(61, "TINY MANY")
    files = list(synth.tiny_instances(spec, 150, size=2048, seed=61))
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    options = TransferOptions(BucketSize=1024)
    instances, recorder, ctx, buckets = push(source, target, files, tmp_path, options=options)
    assert len(buckets) == 1 and len(buckets[0].chunks) == 150
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert set(recorder.final_states().values()) == {BucketState.DONE}


def test_split_for_get_keeps_every_url_short_and_the_bytes_in_order():
    from gui.engine.push_mode.source_reader import split_for_get
    from gui.protocol import wire
    from gui.protocol.wire import Bucket, InstanceInfo

    base = "https://orthanc.example.org:8042/some/prefix"
    infos = [InstanceInfo(f"{n:08x}-00000000-00000000-00000000-00000000", 8000 + n, "0" * 32)
             for n in range(500)]
    bucket = Bucket()
    for info in infos:
        bucket.add_chunk(info, 0, info.size)
    parts = split_for_get(bucket, base)
    assert len(parts) > 1
    assert all(len(base + wire.chunks_uri(p, "gzip")) < wire.MAX_PULL_URL_LENGTH for p in parts)
    assert all(len(p.chunks) <= 100 for p in parts)
    assert [c for p in parts for c in p.chunks] == bucket.chunks
    assert sum(p.total_size for p in parts) == bucket.total_size


@pytest.mark.parametrize("early", [False, True])
def test_import_as_it_arrives_is_asked_only_when_chosen(orthanc_factory, ct_study_files, tmp_path, monkeypatch,
                                                        early):
    """With ImportAsItArrives the target (our plugin) holds instances before
    the commit is even sent; by default it holds none until the commit."""
    import asyncio

    from gui.engine.push_mode.push_transaction import PushTransaction
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    seen_before_commit = []
    original = PushTransaction.commit

    async def commit(self, *args, **kwargs):
        seen_before_commit.append(len(await asyncio.to_thread(target.request, "GET", "/instances")))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(PushTransaction, "commit", commit)
    options = TransferOptions(BucketSize=512, ImportAsItArrives=early)
    instances, recorder, ctx, buckets = push(source, target, ct_study_files, tmp_path, options=options)
    assert len(buckets) > 2
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert (seen_before_commit[0] > 0) if early else seen_before_commit == [0]


def test_import_as_it_arrives_cuts_a_small_study_into_buckets_that_arrive_one_after_the_other(
        orthanc_factory, ct_study_files, tmp_path):
    """Default buckets of 4 MB hold this whole study in one: sent at once, it
    would arrive (and be imported) only at the end. With the option each
    thread gets several smaller buckets, so the imports start while the rest
    travels; without it the plan is unchanged. Verified either way."""
    from gui.engine.push_mode.push_transport import ARRIVAL_BUCKETS_PER_THREAD, ARRIVAL_MIN_BUCKET
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    total = sum(len(f) for f in ct_study_files)
    assert total < 4 * 2**20             # one default bucket
    counts = {}
    for early in (False, True):
        for instance in target.request("GET", "/instances"):
            target.request("DELETE", f"/instances/{instance}")
        options = TransferOptions(Threads=2, ImportAsItArrives=early)
        instances, _recorder, _ctx, buckets = push(source, target, ct_study_files, tmp_path / str(early),
                                                   options=options)
        assert target.instance_md5s() == {i.id: i.md5 for i in instances}
        counts[early] = len(buckets)
        if early:
            assert max(b.total_size for b in buckets) < 2 * ARRIVAL_MIN_BUCKET
    assert counts[False] == 1
    assert counts[True] >= total // ARRIVAL_MIN_BUCKET > ARRIVAL_BUCKETS_PER_THREAD


def test_a_server_that_does_not_announce_the_asynchronous_commit_gets_a_synchronous_one(
        orthanc_factory, ct_study_files, tmp_path):
    """Capabilities come from what the server announces: a target that ignores
    the extension (as the C++ plugin does: no "AsynchronousCommit" in its
    creation answer) is taken, and remembered for a resume, as committing
    synchronously."""
    import json

    from gui.client.orthanc_client import OrthancClient
    from gui.client.peer import Peer
    from gui.engine.push_mode import PushTransaction
    from gui.engine.push_mode.source_reader import SourceReader
    from gui.protocol.wire import plan_buckets
    from tests.devtools.faults.http_front import FrontRequest, HttpFront

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)

    async def ignore_extension(request: FrontRequest, forward):
        if request.method == "POST" and request.path == "/transfers/push":
            body = json.loads(request.body)
            body.pop("AsynchronousCommit", None)
            request.body = json.dumps(body).encode()
        return await forward(request)

    async def go():
        async with HttpFront(target.url, ignore_extension) as front, client_for(source) as src, \
                OrthancClient(Peer(name="dst", url=front.url)) as dst:
            buckets = plan_buckets(instances, 4 << 20)
            tx = await PushTransaction.create(dst, instances, buckets, "none", transfer_id="t", retries=0,
                                              commit_timeout=60, asynchronous_commit=True)
            reader = SourceReader(src, instances, buckets, use_chunks_endpoint=True,
                                  cache_bytes=1 << 20, staging_dir=tmp_path, retries=0)
            for index, bucket in enumerate(buckets):
                await tx.put(index, await reader.read(bucket), lambda sent: None)
            await tx.commit()
            return tx.state

    state = run(go())
    assert state.asynchronous is False
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}


def test_uncompressed_buckets_are_relayed_from_source_to_target(orthanc_factory, mixed_study_files, tmp_path):
    """Between two plugin servers over plain HTTP, an uncompressed bucket's
    chunks answer is spliced into its PUT (the engine holds none of its
    bytes); the split 6 MB instance and the small ones arrive verified."""
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(mixed_study_files, source)
    transport = PushTransport()

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="none",
                           options=TransferOptions(BucketSize=512, Threads=3))
            buckets = transport.plan(ctx)
            await transport.run(ctx, buckets)
            return buckets

    buckets = run(go())
    assert transport.last_pusher.relayed == len(buckets) > 3
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}


def test_a_bucket_whose_relay_breaks_is_sent_the_usual_way(orthanc_factory, mixed_study_files, tmp_path):
    """The target's connection drops after a relayed bucket's body: that
    bucket is read and PUT again through the client, the others stay relayed."""
    from gui.client.orthanc_client import OrthancClient
    from gui.client.peer import Peer
    from tests.devtools.faults.http_front import DropConnection, HttpFront

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(mixed_study_files, source)
    transport = PushTransport()
    dropped = []

    async def drop_first_put_of_bucket_1(request, forward):
        if request.method == "PUT" and request.path.endswith("/1") and not dropped:
            dropped.append(request)
            raise DropConnection()
        return await forward(request)

    async def go():
        async with HttpFront(target.url, drop_first_put_of_bucket_1) as front:
            async with client_for(source) as src, OrthancClient(Peer("dst", front.url)) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="none",
                               options=TransferOptions(BucketSize=512, Threads=2))
                buckets = transport.plan(ctx)
                await transport.run(ctx, buckets)
                return buckets, [r for r in front.requests if r.method == "PUT"]

    buckets, puts = run(go())
    assert dropped
    assert transport.last_pusher.relayed == len(buckets) - 1
    assert len([r for r in puts if r.path.endswith("/1")]) == 2
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
