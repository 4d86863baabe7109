"""Delegated transfers: the source's transfers plugin (C++ or ours) moves the data.

The source knows the target as one of its Orthanc peers. We ask it to send
(``POST /transfers/send``) and follow the Orthanc job it starts; when the
peer is declared with ``RemoteSelf`` the source asks the target to pull
instead, and the answer names the job on the target, which we follow there.
Pause, resume and cancel are passed through to that job. The scheduler
compares MD5s afterwards, as for every mode.

The C++ plugin's commit is not atomic, so before starting the job we note
which instances the target lacks: a cancel or a failure deletes exactly
those again (never an instance that was there before).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional, Tuple

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.client.peer import normalise_url
from gui.engine.events import BucketState, TransferMode
from gui.engine.journal import DelegatedJobEntry
from gui.engine.link_probe import is_distant
from gui.engine.planner import gather_bounded
from gui.engine.retry import with_retries
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.protocol import wire
from gui.protocol.wire import Bucket, plan_buckets

log = logging.getLogger(__name__)

POLL_MIN, POLL_MAX = 0.25, 2.0
FINISHED = ("Success", "Failure")
CANCEL_WAIT = 60.0   # seconds a cancelled job may take to stop before we give up


class DelegatedTransport(Transport):
    mode = TransferMode.DELEGATE

    def __init__(self, *, peer_name: Optional[str] = None, poll_interval: float = POLL_MIN) -> None:
        # ``peer_name``: the target's name in the source's OrthancPeers, when
        # it cannot be found by URL (e.g. the source reaches it by another address).
        self.peer_name = peer_name
        self.poll_interval = poll_interval

    def plan(self, ctx: TransferContext) -> List[Bucket]:
        # Only for display: the plugin cuts its own buckets; the job's
        # progress is spread over these in order.
        return plan_buckets(ctx.instances, ctx.options.bucket_size_bytes)

    # --- running ------------------------------------------------------------------

    async def run(self, ctx: TransferContext, buckets: List[Bucket]) -> None:
        if not ctx.instances:
            return
        saved = ctx.journal.delegated_job()
        job: Optional[Tuple[str, str]] = None
        if saved is not None:
            job = (saved.on, saved.job)
            if await self._job_state(ctx, job) is None:
                log.info("delegated job %s is gone (server restarted?); starting again", job[1])
                job = None
        try:
            if job is None:
                await self._record_absent(ctx)
                job = await self._start(ctx)
                await ctx.journal.set_delegated_job(DelegatedJobEntry(job[1], on=job[0]))
            await self._follow(ctx, buckets, job)
        except asyncio.CancelledError:
            # On shutdown the Orthanc job goes on by itself; the resumed job follows it again.
            if job is not None and not ctx.shutting_down:
                await asyncio.shield(self._control(ctx, job, "cancel"))
            raise
        except TransferFailed:
            if job is not None:
                await asyncio.shield(self._control(ctx, job, "cancel"))
            raise
        except OrthancError as exc:
            raise TransferFailed(str(exc)) from None
        await ctx.journal.set_delegated_job(None)

    async def _record_absent(self, ctx: TransferContext) -> None:
        retries = ctx.options.MaxHttpRetries

        async def check(info: wire.InstanceInfo) -> None:
            if info.id not in ctx.created_on_target:
                if await with_retries(lambda: ctx.target.instance_md5_or_none(info.id), retries) is None:
                    await ctx.mark_created(info.id)

        await gather_bounded(ctx.instances, check, ctx.options.Threads * 2)

    async def peer_of_target(self, ctx: TransferContext) -> str:
        """The source's name for the target, found by URL among its peers."""
        if self.peer_name:
            return self.peer_name
        retries = ctx.options.MaxHttpRetries
        accelerated = await with_retries(ctx.source.transfers.peers, retries)
        peers = await with_retries(lambda: ctx.source.get_json("/peers?expand"), retries)
        wanted = normalise_url(ctx.target.base_url)
        names = []
        if isinstance(peers, dict):
            for name, value in peers.items():
                url = value.get("Url") if isinstance(value, dict) else None
                names.append(name)
                if isinstance(url, str) and _same_url(url, wanted):
                    status = accelerated.get(name) if isinstance(accelerated, dict) else None
                    if status not in ("installed", "bidirectional"):
                        raise TransferFailed(f"{ctx.source.peer.name} knows {ctx.target.peer.name} as "
                                             f"peer {name!r}, but that peer has no transfers plugin "
                                             f"({status or 'unknown'})")
                    return str(name)
        raise TransferFailed(f"{ctx.source.peer.name} has no Orthanc peer for {wanted} "
                             f"(its peers: {', '.join(names) or 'none'}); delegated mode needs one")

    async def _start(self, ctx: TransferContext) -> Tuple[str, str]:
        peer = await self.peer_of_target(ctx)
        compression = ctx.compression if ctx.compression in wire.COMPRESSIONS else "none"
        # "auto": the C++ plugin's gzip is its bottleneck on fast links, and we
        # cannot measure the source-target link from here; gzip must be asked for.
        ctx.compression_used = compression
        body = {"Resources": [{"Level": "Instance", "ID": i.id} for i in ctx.instances],
                "Compression": compression, "Peer": peer, "SenderTransferID": ctx.transfer_id}
        answer = await with_retries(lambda: ctx.source.transfers.send(body, ctx.transfer_id),
                                    ctx.options.MaxHttpRetries)
        if isinstance(answer, dict) and isinstance(answer.get("ID"), str):
            log.info("delegated push: job %s on %s", answer["ID"], ctx.source.peer.name)
            return "source", answer["ID"]
        if isinstance(answer, dict) and isinstance(answer.get("RemoteJob"), str):
            log.info("delegated pull: job %s on %s", answer["RemoteJob"], ctx.target.peer.name)
            return "target", answer["RemoteJob"]
        raise TransferFailed(f"unexpected answer of {ctx.source.peer.name} to /transfers/send: "
                             f"{str(answer)[:200]}")

    # --- following the job ----------------------------------------------------------------

    def _client(self, ctx: TransferContext, job: Tuple[str, str]) -> OrthancClient:
        return ctx.source if job[0] == "source" else ctx.target

    async def _job_state(self, ctx: TransferContext, job: Tuple[str, str]) -> Optional[Dict[str, Any]]:
        try:
            answer = await with_retries(lambda: self._client(ctx, job).get_json(f"/jobs/{job[1]}"),
                                        ctx.options.MaxHttpRetries)
        except OrthancError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(answer, dict) or "State" not in answer:
            raise TransferFailed(f"unexpected answer for job {job[1]}: {str(answer)[:200]}")
        return answer

    async def _control(self, ctx: TransferContext, job: Tuple[str, str], action: str) -> None:
        try:
            await self._client(ctx, job).request("POST", f"/jobs/{job[1]}/{action}", content=b"")
        except OrthancError as exc:
            log.warning("could not %s job %s: %s", action, job[1], exc)

    async def _follow(self, ctx: TransferContext, buckets: List[Bucket], job: Tuple[str, str]) -> None:
        paused = False
        delay = self.poll_interval
        for index, bucket in enumerate(buckets):
            ctx.bucket_event(index, bucket, BucketState.QUEUED)
        while True:
            if not ctx.running.is_set() and not paused:
                await self._control(ctx, job, "pause")
                paused = True
            elif ctx.running.is_set() and paused:
                await self._control(ctx, job, "resume")
                paused = False
            state = await self._job_state(ctx, job)
            if state is None:
                raise TransferFailed(f"job {job[1]} disappeared from {self._client(ctx, job).peer.name} "
                                     "(server restarted?)")
            self._report(ctx, buckets, state)
            if state["State"] == "Success":
                return
            if state["State"] == "Failure":
                raise TransferFailed(_failure_reason(state, self._client(ctx, job).peer.name))
            if paused:
                # Wake up as soon as the job may run again.
                try:
                    await asyncio.wait_for(ctx.running.wait(), POLL_MAX)
                except asyncio.TimeoutError:
                    pass
                continue
            await asyncio.sleep(delay)
            delay = min(POLL_MAX, delay * 1.5)

    def _report(self, ctx: TransferContext, buckets: List[Bucket], state: Dict[str, Any]) -> None:
        """Spread the job's one progress number over the buckets, in order."""
        try:
            fraction = max(0.0, min(1.0, float(state.get("Progress", 0)) / 100.0))
        except (TypeError, ValueError):
            fraction = 0.0
        if state.get("State") == "Success":
            fraction = 1.0
        done = int(fraction * sum(b.total_size for b in buckets))
        for index, bucket in enumerate(buckets):
            size = bucket.total_size
            if done >= size:
                ctx.bucket_event(index, bucket, BucketState.DONE, raw_done=size)
            elif done > 0:
                ctx.bucket_event(index, bucket, BucketState.SENDING, raw_done=done)
            done = max(0, done - size)

    # --- undo -------------------------------------------------------------------------------

    async def discard(self, ctx: TransferContext) -> None:
        saved = ctx.journal.delegated_job()
        if saved is not None:
            job = (saved.on, saved.job)
            state = await self._job_state(ctx, job)
            if state is not None and state.get("State") not in FINISHED:
                await self._control(ctx, job, "cancel")
            # Deleting while the job still imports would race with it: wait.
            deadline = asyncio.get_running_loop().time() + CANCEL_WAIT
            while state is not None and state.get("State") not in FINISHED:
                if asyncio.get_running_loop().time() > deadline:
                    raise TransferFailed(f"job {job[1]} did not stop within {CANCEL_WAIT:.0f} s; "
                                         "nothing was deleted from the target")
                await asyncio.sleep(self.poll_interval)
                state = await self._job_state(ctx, job)
        await ctx.delete_created_on_target()
        await ctx.journal.set_delegated_job(None)


async def should_delegate(source: OrthancClient, target: OrthancClient, retries: int = 0) -> bool:
    """For ``auto``: whether the source's plugin should move the data itself.

    Only when this desk is far (a WAN round trip) from *both* servers: then
    push or pull would carry every byte down to the desk and up again, while
    the servers are usually close to each other. And only when the source
    knows the target as a peer with a transfers plugin. Any doubt: no.
    """
    if not (await is_distant(source) and await is_distant(target)):
        return False
    try:
        accelerated = await with_retries(source.transfers.peers, retries)
        peers = await with_retries(lambda: source.get_json("/peers?expand"), retries)
    except OrthancError as exc:
        log.info("not delegating: %s cannot list its peers (%s)", source.peer.name, exc)
        return False
    wanted = normalise_url(target.base_url)
    for name, value in (peers.items() if isinstance(peers, dict) else []):
        url = value.get("Url") if isinstance(value, dict) else None
        if isinstance(url, str) and _same_url(url, wanted) and isinstance(accelerated, dict) \
                and accelerated.get(name) in ("installed", "bidirectional"):
            return True
    return False


def _same_url(url: str, wanted: str) -> bool:
    try:
        return normalise_url(url) == wanted
    except ValueError:
        return False


def _failure_reason(state: Dict[str, Any], where: str) -> str:
    parts = [str(state.get(k)) for k in ("ErrorDescription", "ErrorDetails") if state.get(k)]
    code = state.get("ErrorCode")
    text = "; ".join(parts) or (f"ErrorCode {code}" if code is not None else "no details given")
    return f"the transfer job on {where} failed: {text}"
