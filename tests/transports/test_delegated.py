"""Delegated mode: the source's transfers plugin moves the data, the desktop follows its job.

Two families of tests. Against this project's plugin on real servers (at the
end): a push job, a RemoteSelf pull job followed on the target, pause /
resume / cancel, and a failure's reason. Against a fake of the C++ plugin's
job API (tests/transports/fake_transfers_jobs.py), for what only the C++
plugin does (its terse "ErrorCode 1" failures): no server here runs the C++
plugin, so the source is a real stock Orthanc behind an HTTP front that
answers /transfers/send and /jobs/* as the C++ plugin would; the target is a
real Orthanc, and the fake job really copies the instances at the end.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from gui.client.orthanc_client import OrthancClient
from gui.client.peer import Peer
from gui.config.settings import TransferOptions
from gui.engine.delegated_mode import DelegatedTransport
from gui.engine.events import BucketState
from gui.engine.transport_base import TransferFailed
from tests.devtools.faults.http_front import HttpFront
from tests.transports.fake_transfers_jobs import FakeTransfersJobs
from gui.sandbox.orthanc_process import free_port
from tests.transports.helpers import Recorder, infos_of, make_ctx, run


@pytest.fixture
def servers(orthanc_factory):
    target = orthanc_factory("dst")
    source = orthanc_factory("src", extra_config={"OrthancPeers": {"target-peer": {"Url": target.url}}})
    return source, target


def delegated(servers, files, tmp_path, *, fake_kwargs=None, compression="gzip", drive=None):
    source, target = servers
    instances = infos_of(files, source)
    fake = FakeTransfersJobs(source.url, target.url, **(fake_kwargs or {}))
    recorder = Recorder()
    transport = DelegatedTransport(poll_interval=0.01)

    async def go():
        async with HttpFront(source.url, fake.source_handler) as source_front, \
                HttpFront(target.url, fake.target_handler) as target_front:
            fake.target_front_url = target_front.url
            src = OrthancClient(Peer("src", source_front.url))
            if fake.pull_mode:
                # Pull-mode jobs live on the target, served by its front; the
                # source knows the target under its real URL: name it.
                dst = OrthancClient(Peer("dst", target_front.url))
                transport.peer_name = "target-peer"
            else:
                # The target's peer name is found by URL among the source's peers.
                dst = OrthancClient(Peer("dst", target.url))
            async with src, dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder,
                               compression=compression, options=TransferOptions(MaxHttpRetries=1),
                               target_accelerated=False)
                buckets = transport.plan(ctx)
                if drive is None:
                    await transport.run(ctx, buckets)
                    return ctx, None
                return ctx, await drive(transport, ctx, buckets, fake)

    ctx, extra = run(go())
    return instances, fake, recorder, ctx, extra


def test_delegated_push_job_is_followed_to_success(servers, ct_study_files, tmp_path):
    instances, fake, recorder, ctx, _ = delegated(servers, ct_study_files, tmp_path)
    _, target = servers
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    send = fake.sends[0]
    body = json.loads(send.body)
    assert body["Peer"] == "target-peer" and body["Compression"] == "gzip"
    assert body["SenderTransferID"] == ctx.transfer_id == send.header("sender-transfer-id")
    assert sorted(r["ID"] for r in body["Resources"]) == [i.id for i in instances]
    assert {r["Level"] for r in body["Resources"]} == {"Instance"}
    # The job's progress number showed up as bucket progress.
    assert any(e.state is BucketState.SENDING for e in recorder.events)
    assert set(recorder.final_states().values()) == {BucketState.DONE}
    assert recorder.journal.delegated_job() is None


def test_delegated_pull_answer_follows_the_job_on_the_target(servers, ct_study_files, tmp_path):
    instances, fake, recorder, ctx, _ = delegated(servers, ct_study_files, tmp_path,
                                                  fake_kwargs={"pull_mode": True})
    _, target = servers
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert fake.jobs[next(iter(fake.jobs))]["Type"] == "PullTransfer"


def test_pause_resume_and_cancel_are_passed_through(servers, ct_study_files, tmp_path):
    async def drive(transport, ctx, buckets, fake):
        task = asyncio.ensure_future(transport.run(ctx, buckets))
        ctx.running.clear()                      # pause before the first poll
        await _until(lambda: "pause" in fake.controls)
        job = next(iter(fake.jobs.values()))
        assert job["State"] == "Paused"
        ctx.running.set()
        await _until(lambda: "resume" in fake.controls)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await transport.discard(ctx)
        return job

    instances, fake, recorder, ctx, job = delegated(servers, ct_study_files, tmp_path,
                                                    fake_kwargs={"step": 1}, drive=drive)
    assert fake.controls[:3] == ["pause", "resume", "cancel"]
    assert job["State"] == "Failure"
    assert servers[1].instance_md5s() == {}


def test_failed_job_fails_with_its_reason(servers, ct_study_files, tmp_path):
    async def drive(transport, ctx, buckets, fake):
        with pytest.raises(TransferFailed) as failure:
            await transport.run(ctx, buckets)
        return failure.value

    instances, fake, recorder, ctx, failure = delegated(servers, ct_study_files, tmp_path,
                                                        fake_kwargs={"fail_at": 50}, drive=drive)
    assert "Internal error" in failure.reason and "src" in failure.reason
    assert servers[1].instance_md5s() == {}


def test_source_without_a_peer_for_the_target_is_refused(orthanc_factory, ct_study_files, tmp_path):
    target = orthanc_factory("dst")
    source = orthanc_factory("src")
    instances = infos_of(ct_study_files[:1], source)
    fake = FakeTransfersJobs(source.url, target.url)

    async def go():
        async with HttpFront(source.url, fake.source_handler) as front:
            async with OrthancClient(Peer("src", front.url)) as src, \
                    OrthancClient(Peer("dst", target.url)) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder())
                transport = DelegatedTransport()
                with pytest.raises(TransferFailed) as failure:
                    await transport.run(ctx, transport.plan(ctx))
                return failure.value

    failure = run(go())
    assert "no Orthanc peer" in failure.reason
    assert not fake.sends


async def _until(condition, timeout: float = 20.0) -> None:
    async def wait():
        while not condition():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), timeout)


# --- against this project's plugin on real servers (no fake) -------------------------

@pytest.fixture
def plugin_servers(orthanc_factory):
    """Source and target both run our plugin and know each other: the source
    declares the target twice, plainly (push job) and with RemoteSelf (the
    target pulls, and the desktop follows the job there)."""
    ports = {"src": free_port(), "dst": free_port()}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    small = {"BucketSize": 4, "Threads": 1}   # many buckets: a job to pause midway
    target = orthanc_factory("dst", with_accelerator=True, http_port=ports["dst"], extra_config={
        "OrthancPeers": {"source-peer": {"Url": url["src"]}}, "Transfers": small})
    source = orthanc_factory("src", with_accelerator=True, http_port=ports["src"], extra_config={
        "OrthancPeers": {"target-peer": {"Url": url["dst"]},
                         "target-pulls": {"Url": url["dst"], "RemoteSelf": "source-peer"}},
        "Transfers": small})
    return source, target


def run_real(servers, files, tmp_path, *, peer_name=None, drive=None, compression="gzip"):
    source, target = servers
    instances = infos_of(files, source)
    recorder = Recorder()
    transport = DelegatedTransport(peer_name=peer_name, poll_interval=0.01)

    async def go():
        async with OrthancClient(Peer("src", source.url)) as src, OrthancClient(Peer("dst", target.url)) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, compression=compression,
                           options=TransferOptions(MaxHttpRetries=1))
            buckets = transport.plan(ctx)
            if drive is None:
                await transport.run(ctx, buckets)
                return ctx, None
            return ctx, await drive(transport, ctx, buckets)

    ctx, extra = run(go())
    return instances, recorder, ctx, extra


def test_delegated_push_through_our_plugin(plugin_servers, ct_study_files, tmp_path):
    source, target = plugin_servers
    instances, recorder, ctx, _ = run_real(plugin_servers, ct_study_files, tmp_path)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    jobs = source.request("GET", "/transfers/jobs")
    assert len(jobs) == 1 and jobs[0]["State"] == "Success" and jobs[0]["Content"]["Peer"] == "target-peer"
    assert jobs[0]["Content"]["SenderTransferID"] == ctx.transfer_id
    assert set(recorder.final_states().values()) == {BucketState.DONE}


def test_delegated_pull_mode_follows_our_job_on_the_target(plugin_servers, ct_study_files, tmp_path):
    source, target = plugin_servers
    instances, recorder, ctx, _ = run_real(plugin_servers, ct_study_files, tmp_path, peer_name="target-pulls")
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert source.request("GET", "/transfers/jobs") == []
    (job,) = target.request("GET", "/transfers/jobs")
    assert job["Type"] == "PullTransfer" and job["State"] == "Success"


def test_delegated_pause_resume_cancel_on_our_plugin(plugin_servers, tmp_path):
    from tests.server.conftest import study
    source, target = plugin_servers

    def our_job():
        jobs = source.request("GET", "/transfers/jobs")
        return jobs[0] if jobs else None

    async def drive(transport, ctx, buckets):
        task = asyncio.ensure_future(transport.run(ctx, buckets))
        ctx.running.clear()
        await _until(lambda: (our_job() or {}).get("State") == "Paused")
        assert target.instance_md5s() == {}
        ctx.running.set()
        await _until(lambda: (our_job() or {}).get("State") == "Running")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await transport.discard(ctx)
        return our_job()

    _, _, _, job = run_real(plugin_servers, study(41, tiny=80), tmp_path, drive=drive, compression="none")
    assert job["State"] == "Failure" and job["ErrorDescription"] == "Job was canceled"
    assert target.instance_md5s() == {}


def test_delegated_failure_carries_our_plugins_reason(plugin_servers, ct_study_files, tmp_path):
    source, target = plugin_servers
    target.stop()   # the peer is gone: the job fails, and says why

    async def drive(transport, ctx, buckets):
        with pytest.raises(TransferFailed) as failure:
            await transport._follow(ctx, buckets, await transport._start(ctx))
        return failure.value

    instances = infos_of(ct_study_files[:2], source)

    async def go():
        async with OrthancClient(Peer("src", source.url)) as src, OrthancClient(Peer("dst", target.url)) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder())
            transport = DelegatedTransport(peer_name="target-peer", poll_interval=0.01)
            return await drive(transport, ctx, transport.plan(ctx))

    failure = run(go())
    assert "'target-peer'" in failure.reason and "cannot be reached" in failure.reason


def test_auto_delegates_only_when_the_desk_is_far_from_both(plugin_servers, orthanc_factory, monkeypatch):
    """The round trips are the one thing faked: loopback servers are never far."""
    from gui.engine import delegated_mode
    source, target = plugin_servers
    stranger = orthanc_factory("stranger")
    far = {source.url, target.url, stranger.url}

    async def is_distant(client):
        return client.base_url.rstrip("/") in far

    async def go(dst_server):
        async with OrthancClient(Peer("src", source.url)) as src, \
                OrthancClient(Peer("dst", dst_server.url)) as dst:
            return await delegated_mode.should_delegate(src, dst)

    monkeypatch.setattr(delegated_mode, "is_distant", is_distant)
    assert run(go(target)) is True
    assert run(go(stranger)) is False          # the source has no peer for it
    far.discard(target.url)
    assert run(go(target)) is False            # the desk is near the target: push or pull it is


def test_the_demo_servers_send_server_to_server(tmp_path):
    """The two demo servers know each other as peers: the app delegates between them."""
    from gui.engine import JobState, TransferMode
    from gui.sandbox.demo import DemoServers
    from tests.engine.helpers import make_engine

    demo = DemoServers(studies=1, ct_slices=3, with_accelerator=True)
    config = demo.start()
    try:
        local, remote = config.peers
        local_server, remote_server = demo.servers
        study = local_server.request("GET", "/studies")[0]

        async def go():
            engine = make_engine(tmp_path / "data")
            await engine.start()
            try:
                job = await engine.submit(local, remote, [{"Level": "Study", "ID": study}], mode="delegate")
                return await job.wait()
            finally:
                await engine.close()

        job = run(go())
        assert (job.state, job.mode) == (JobState.SUCCESS, TransferMode.DELEGATE), job.error
        (server_job,) = local_server.request("GET", "/transfers/jobs")
        assert server_job["State"] == "Success" and server_job["Content"]["Peer"] == "remote"
        moved = local_server.request("GET", f"/studies/{study}/instances")
        assert {i["ID"] for i in moved} <= set(remote_server.instance_md5s())
        assert job.verified == len(moved)
    finally:
        demo.stop()


def test_auto_job_from_a_far_desk_goes_server_to_server(plugin_servers, ct_study_files, tmp_path, monkeypatch):
    """The whole engine in ``auto``: far from both servers (the one thing faked), the
    job runs on the source's plugin, and the app still verifies every MD5 itself."""
    from gui.engine import JobState, TransferMode, delegated_mode
    from tests.engine.helpers import make_engine, peer

    async def far(client):
        return True

    monkeypatch.setattr(delegated_mode, "is_distant", far)
    source, target = plugin_servers
    instances = infos_of(ct_study_files, source)
    study = source.request("GET", "/studies")[0]

    async def go():
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            summary = await engine.plan(peer(source), peer(target), [{"Level": "Study", "ID": study}])
            job = await engine.submit(peer(source), peer(target), [{"Level": "Study", "ID": study}])
            return summary, await job.wait()
        finally:
            await engine.close()

    summary, job = run(go())
    assert summary.mode is TransferMode.DELEGATE
    assert (job.state, job.mode) == (JobState.SUCCESS, TransferMode.DELEGATE), job.error
    assert job.verified == len(instances)
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    (server_job,) = source.request("GET", "/transfers/jobs")
    assert server_job["State"] == "Success"
