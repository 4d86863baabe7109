"""Push mode when things go wrong: cancel, a target that forgets the
transaction, a corrupted byte on the wire."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from gui.config.settings import TransferOptions
from gui.engine.events import BucketState
from gui.engine.push_mode import PushTransport
from gui.engine.journal import PushTransactionEntry
from gui.engine.transport_base import TransferFailed
from tests.transports.helpers import (Recorder, client_for, infos_of, make_ctx, run,
                                      transaction_exists)

SMALL_BUCKETS = TransferOptions(BucketSize=64, Threads=2)


def transaction_id(recorder: Recorder) -> str:
    entry = recorder.journal.push_transaction()
    assert entry is not None
    return str(entry.transaction["ID"])


def test_cancel_mid_push_leaves_target_unchanged(orthanc_factory, ct_study_files, tmp_path):
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)
    before = target.instance_md5s()
    recorder = Recorder()
    seen = {}

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, options=SMALL_BUCKETS)
            transport = PushTransport()
            task = asyncio.ensure_future(transport.run(ctx, transport.plan(ctx)))

            def cancel_after_three(event):
                done = [e for e in recorder.events if e.state is BucketState.DONE]
                if len(done) == 3 and "tid" not in seen:
                    seen["tid"] = transaction_id(recorder)
                    task.cancel()

            recorder.hooks.append(cancel_after_three)
            with pytest.raises(asyncio.CancelledError):
                await task
            return transport.plan(ctx)

    buckets = run(go())
    assert len(buckets) > 10
    assert target.instance_md5s() == before == {}
    assert not transaction_exists(target, seen["tid"])
    assert recorder.journal.push_transaction() is None


def push_restarting_the_target(orthanc_factory, ct_study_files, tmp_path, while_stopped=None):
    """Push one bucket at a time, restart the target after two buckets
    (``while_stopped(target)`` may damage its storage meanwhile), let the push go on.
    Returns (target, instances, recorder, the transaction's first ID, pusher)."""
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)
    recorder = Recorder()
    options = TransferOptions(BucketSize=64, Threads=1)
    ids = []

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, options=options)
            transport = PushTransport()
            paused = asyncio.Event()

            def pause_after_two(event):
                done = [e for e in recorder.events if e.state is BucketState.DONE]
                if len(done) == 2 and not paused.is_set():
                    ids.append(transaction_id(recorder))
                    ctx.running.clear()   # the worker stops at the next bucket boundary
                    paused.set()

            recorder.hooks.append(pause_after_two)
            task = asyncio.ensure_future(transport.run(ctx, transport.plan(ctx)))
            await asyncio.wait_for(paused.wait(), 60)
            damage = (lambda: while_stopped(target)) if while_stopped else None
            await asyncio.to_thread(target.restart, while_stopped=damage)
            ctx.running.set()
            await task
            return transport.last_pusher

    pusher = run(go())
    return target, instances, recorder, ids[0], pusher


def bucket_zero_sent(recorder: Recorder) -> int:
    return len([e for e in recorder.events if e.index == 0 and e.state is BucketState.DONE])


def test_transaction_survives_a_target_restart_and_is_continued(orthanc_factory, ct_study_files, tmp_path):
    # the plugin reloads its transactions at start-up (recovery.py)
    target, instances, recorder, tid, pusher = push_restarting_the_target(orthanc_factory, ct_study_files,
                                                                          tmp_path)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    # The same transaction was committed (its outcome reads Success) ...
    assert target.request("GET", f"/transfers/push/{tid}/commit")["Status"] == "Success"
    # ... and the buckets it had received before the restart were not sent again.
    assert bucket_zero_sent(recorder) == 1
    assert pusher.tx is None


def test_transaction_forgotten_by_a_target_restart_is_recreated(orthanc_factory, ct_study_files, tmp_path):
    """A target that loses its staged transactions when it restarts (the C++
    plugin does): the push creates a new transaction and completes."""
    def lose_staging(server) -> None:
        shutil.rmtree(server.storage_dir / "transfers-staging")

    target, instances, recorder, tid, _ = push_restarting_the_target(orthanc_factory, ct_study_files, tmp_path,
                                                                     while_stopped=lose_staging)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert not transaction_exists(target, tid)
    # bucket 0 went twice: once into the lost transaction, once into the new one
    assert bucket_zero_sent(recorder) == 2


class FlipOneByte(httpx.AsyncBaseTransport):
    """A wire fault no real server produces: flips one byte of the first bucket
    PUT's body, keeping its length (so only the MD5 check at commit can tell)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.flipped = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and not self.flipped:
            body = bytearray(b"".join([piece async for piece in request.stream]))
            body[len(body) // 2] ^= 0xFF
            self.flipped = True
            request = httpx.Request(request.method, request.url, headers=request.headers,
                                    content=bytes(body))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_corrupted_bucket_fails_the_job_and_target_stays_unchanged(orthanc_factory, ct_study_files,
                                                                    tmp_path):
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)
    recorder = Recorder()
    fault = FlipOneByte()

    async def go():
        async with client_for(source) as src, client_for(target, transport=fault) as dst:
            # No re-send budget: the corruption stands (re-sending: tests/reliability/test_resend.py).
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder,
                           options=TransferOptions(BucketSize=256, Threads=2, MaxHttpRetries=0))
            transport = PushTransport()
            with pytest.raises(TransferFailed) as failure:
                await transport.run(ctx, transport.plan(ctx))
            return failure.value, ctx

    failure, ctx = run(go())
    assert fault.flipped
    assert "commit" in failure.reason.lower()
    assert target.instance_md5s() == {}
    assert recorder.journal.push_transaction() is None


def test_cookie_and_transfer_id_are_sent_on_every_transaction_request(orthanc_factory, ct_study_files,
                                                                      tmp_path):
    """A load balancer with sticky sessions: the cookie set when the
    transaction is created must come back on its PUTs and commit."""
    from tests.devtools.faults.http_front import HttpFront

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)

    async def sticky(request, forward):
        answer = await forward(request)
        if request.method == "POST" and request.path == "/transfers/push":
            answer.headers.append(("Set-Cookie", "backend=node-7; Path=/; HttpOnly"))
        return answer

    async def go():
        async with HttpFront(target.url, sticky) as front:
            from gui.client.orthanc_client import OrthancClient
            from gui.client.peer import Peer
            async with client_for(source) as src, OrthancClient(Peer("dst", front.url)) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(),
                               options=TransferOptions(BucketSize=256, Threads=2))
                transport = PushTransport()
                await transport.run(ctx, transport.plan(ctx))
                return ctx, list(front.requests)

    ctx, requests = run(go())
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    transaction = [r for r in requests if r.path.startswith("/transfers/push")]
    assert len(transaction) > 3
    for request in transaction:
        assert request.header("sender-transfer-id") == ctx.transfer_id
    later = [r for r in transaction if r.path != "/transfers/push"]
    assert all("backend=node-7" in (r.header("cookie") or "") for r in later)
    # Our plugin commits asynchronously: the commit is followed by status polls.
    assert any(r.method == "GET" and r.path.endswith("/commit") for r in transaction)
    bodies = [r for r in transaction if r.method in ("PUT", "POST")]
    assert all(r.header("content-type") == "application/x-www-form-urlencoded" for r in bodies)


@pytest.mark.parametrize("still_there", [True, False])
def test_resume_continues_a_saved_transaction_or_recreates_it(orthanc_factory, ct_study_files,
                                                              tmp_path, still_there):
    """A job resumed after the app was killed: the transaction saved in its
    state is reused (buckets already sent are not read again) if the target
    still has it, else recreated."""
    from gui.engine.push_mode.bucket_pusher import plan_fingerprint
    from gui.engine.push_mode.push_transaction import PushTransaction
    from gui.engine.push_mode.source_reader import SourceReader

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)
    recorder = Recorder()
    options = TransferOptions(BucketSize=256, Threads=2)

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, options=options)
            transport = PushTransport()
            buckets = transport.plan(ctx)
            # "Earlier run": created the transaction and sent two buckets, then died.
            tx = await PushTransaction.create(dst, instances, buckets, "none", transfer_id=ctx.transfer_id,
                                              retries=0, commit_timeout=60)
            reader = SourceReader(src, instances, buckets, use_chunks_endpoint=True,
                                  cache_bytes=1 << 20, staging_dir=tmp_path, retries=0)
            for index in (0, 1):
                await tx.put(index, await reader.read(buckets[index]), lambda sent: None)
            if not still_there:
                await tx.delete()
            await ctx.journal.set_push_transaction(
                PushTransactionEntry(tx.state.to_json(), plan_fingerprint(instances, buckets), [0, 1]))
            await transport.run(ctx, buckets)
            return tx.id

    old_id = run(go())
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    read_again = {e.index for e in recorder.events if e.state is BucketState.READING}
    if still_there:
        assert not read_again & {0, 1}
    else:
        assert {0, 1} <= read_again
    assert not transaction_exists(target, old_id)  # committed, or deleted before


def test_transaction_evicted_by_newer_ones_is_recreated(orthanc_factory, ct_study_files, tmp_path):
    """The target keeps MaxPushTransactions (4) transactions; opening more
    evicts the least recently used one: ours, while the job is paused."""
    import json

    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)
    recorder = Recorder()
    ids = []

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder,
                           options=TransferOptions(BucketSize=64, Threads=1))
            transport = PushTransport()
            paused = asyncio.Event()

            def pause_after_two(event):
                done = [e for e in recorder.events if e.state is BucketState.DONE]
                if len(done) == 2 and not paused.is_set():
                    ids.append(transaction_id(recorder))
                    ctx.running.clear()
                    paused.set()

            recorder.hooks.append(pause_after_two)
            task = asyncio.ensure_future(transport.run(ctx, transport.plan(ctx)))
            await asyncio.wait_for(paused.wait(), 60)
            other = {"Instances": [instances[0].to_json()],
                     "Buckets": [[{"ID": instances[0].id, "Offset": "0", "Size": str(instances[0].size)}]],
                     "Compression": "none"}
            for _ in range(4):
                await asyncio.to_thread(target.request, "POST", "/transfers/push",
                                        json.dumps(other).encode())
            ctx.running.set()
            await task

    run(go())
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    # Bucket 0 went twice: into the evicted transaction, then into its successor.
    assert len([e for e in recorder.events if e.index == 0 and e.state is BucketState.DONE]) == 2
