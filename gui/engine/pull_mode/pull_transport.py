"""Accelerated pull: the source speaks the protocol.

Fetch workers GET the buckets from the source (the encoding of each GET,
none, gzip or our codec, chosen from the data and the link by
:class:`ChunkCodecPolicy`) into the staging area, which verifies each instance's size
and MD5 as soon as it is whole, frees it once delivered, and holds the
fetch back while it is full (see :mod:`staging_area`). At the same time the delivery moves verified
instances to the target: into one push transaction when the target speaks
the protocol too (same bucket layout), otherwise through the plain mode's
ZIP uploads with rollback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Dict, List, Optional, Set, Tuple

from gui.client.errors import OrthancError
from gui.engine.link_probe import DISTANT_ROUND_TRIP
from gui.engine.events import BucketState, TransferMode
from gui.engine.piece_size import PieceSize, fetch_adaptive
from gui.engine.plain_mode import PlainTransport, group_units
from gui.engine.pull_mode.bucket_fetcher import BucketFetcher
from gui.engine.link_probe import confirmed_round_trip
from gui.engine.pull_mode.codec_choice import ChunkCodecPolicy
from gui.engine.pull_mode.staging_area import StagingArea
from gui.engine.push_mode.bucket_pusher import BucketPusher, run_workers
from gui.engine.push_mode.push_transaction import supports_asynchronous_commit
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.protocol.wire import CODEC_SPLIT16, CODECS, Bucket, InstanceInfo, plan_buckets

log = logging.getLogger(__name__)

LEAD_BUCKETS_PER_THREAD = 4


class StagedPlainDelivery(PlainTransport):
    """Plain mode whose instances come from the staging area, not a server."""

    def __init__(self, staging: StagingArea) -> None:
        super().__init__()
        self.staging = staging

    async def read_instance(self, ctx: TransferContext, info: InstanceInfo) -> Tuple[bytes, int]:
        data = await self.staging.instance_bytes(info.id)
        self.staging.release(info.id)  # plain mode holds the bytes from here on
        return data, 0

    def source_label(self, ctx: TransferContext) -> str:
        return f"{ctx.source.peer.name} (pulled)"


async def first_failure(*jobs: Awaitable[None]) -> None:
    """Run jobs together; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    failures = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    # A delivery cancelled because the fetch failed reports the fetch's reason.
    if failures:
        raise failures[0]  # type: ignore[misc]


class PullTransport(Transport):
    mode = TransferMode.PULL

    def __init__(self, *, link_rate: Optional[float] = None) -> None:
        self.link_rate = link_rate
        self._deliveries: Dict[str, object] = {}
        self.last_staging: Optional[StagingArea] = None
        self.last_policy: Optional[ChunkCodecPolicy] = None
        self.last_fetcher: Optional[BucketFetcher] = None

    def plan(self, ctx: TransferContext) -> List[Bucket]:
        # GET URLs must stay short: the planner closes groups early (§2, rule 3),
        # counting the longest query a GET may carry (gzip with the codec).
        return plan_buckets(ctx.instances, ctx.options.bucket_size_bytes,
                            pull_base_url=ctx.source.base_url, compression=CODEC_SPLIT16)

    async def run(self, ctx: TransferContext, buckets: List[Bucket]) -> None:
        policy = await self._policy(ctx)
        fetcher = self.last_fetcher = BucketFetcher(ctx.source, policy, ctx.options.MaxHttpRetries)

        async def refetch(bucket: Bucket) -> bytes:
            return (await fetcher.fetch(None, bucket)).data

        # The fetch runs at most LEAD_BUCKETS_PER_THREAD buckets per worker ahead of the
        # delivery: on a LAN it is faster than the target's side, and a whole 20,000-instance
        # patient held in memory (CacheSize allows 512 MB) would gain no time.
        lead = LEAD_BUCKETS_PER_THREAD * ctx.options.Threads * ctx.options.bucket_size_bytes
        staging = StagingArea(ctx.instances, ctx.options.cache_size_bytes, ctx.staging_dir / "pulled",
                              buckets, refetch, resend=ctx.resends.allow, lead_bytes=lead,
                              target_verifies=ctx.target_accelerated)
        self.last_staging, self.last_policy = staging, policy
        skip: Set[int] = set()
        if ctx.target_accelerated:
            pusher = BucketPusher(ctx, buckets, staging, link_rate=self.link_rate,
                                  asynchronous_commit=await supports_asynchronous_commit(ctx),
                                  read_ahead=False)
            self._deliveries[ctx.job_id] = pusher
            delivery = pusher.run()
        else:
            plain = StagedPlainDelivery(staging)
            self._deliveries[ctx.job_id] = plain
            by_id = {i.id: i for i in ctx.instances}
            for unit in group_units(buckets, by_id):
                if all(i in ctx.done_buckets for i in unit.indexes):
                    skip.update(unit.indexes)
            delivery = plain.run(ctx, buckets)
        try:
            await first_failure(self._fetch_all(ctx, buckets, skip, fetcher, staging), delivery)
        finally:
            staging.close()
            log.info("pull from %s: chunk answers %s (last choice: %s)", ctx.source.peer.name,
                     policy.answers, policy.reason)
            if not ctx.target_accelerated:
                ctx.compression_used = "gzip" if policy.ratio is not None else "none"

    async def _policy(self, ctx: TransferContext) -> ChunkCodecPolicy:
        """The per-GET choice, knowing how far the source is and whether it
        may honour our codec (only this project's plugin: flavour python)."""
        seconds = await confirmed_round_trip(ctx.source) if ctx.compression == "auto" else 0.0
        codecs: Tuple[str, ...] = ()
        if ctx.compression != "none":
            try:
                if (await ctx.source.accelerator(cached=True)).flavour == "python":
                    codecs = CODECS
            except OrthancError as exc:
                log.debug("plugin of %s unknown (%s): no codec asked for", ctx.source.peer.name, exc)
        return ChunkCodecPolicy(ctx.compression, distant=seconds >= DISTANT_ROUND_TRIP, round_trip=seconds,
                                codecs=codecs, threads=ctx.options.Threads)

    async def _fetch_all(self, ctx: TransferContext, buckets: List[Bucket], skip: Set[int],
                         fetcher: BucketFetcher, staging: StagingArea) -> None:
        todo = [i for i in range(len(buckets)) if i not in skip]
        policy = fetcher.policy
        if todo and (policy.mode == "gzip" or (policy.mode == "auto" and policy.distant)):
            # The first GETs would be compressed: know the data before
            # (a JPEG study is then never compressed, the codec asked for
            # from the first bucket on where it pays).
            await fetcher.sample_first(buckets[todo[0]])
        queue = iter(todo)
        # Smaller ranged GETs over a link that breaks whole buckets (piece_size.py).
        piece = PieceSize(max((b.total_size for b in buckets), default=0), key=ctx.source.base_url)
        sizes = {i.id: i.size for i in ctx.instances}

        async def worker() -> None:
            for index in queue:
                await ctx.wait_running()
                bucket = buckets[index]
                retries = 0

                def on_retry(attempt: int, error: OrthancError) -> None:
                    nonlocal retries
                    retries = attempt
                    ctx.bucket_event(index, bucket, BucketState.RETRYING, retries=attempt,
                                     error=str(error))

                await staging.admit(bucket)
                ctx.bucket_event(index, bucket, BucketState.READING)
                try:
                    data = await fetch_adaptive(fetcher, index, bucket, on_retry, piece, sizes)
                except TransferFailed as exc:
                    ctx.bucket_event(index, bucket, BucketState.FAILED, error=exc.reason)
                    raise
                except OrthancError as exc:
                    ctx.bucket_event(index, bucket, BucketState.FAILED, error=str(exc))
                    raise TransferFailed(f"cannot fetch bucket {index}: {exc}") from None
                ctx.bucket_event(index, bucket, BucketState.READING, raw_done=bucket.total_size,
                                 retries=retries)
                await staging.put(bucket, data)

        await run_workers(ctx.options.Threads, worker)

    async def discard(self, ctx: TransferContext) -> None:
        delivery = self._deliveries.pop(ctx.job_id, None)
        if isinstance(delivery, BucketPusher):
            await delivery.discard()
        elif isinstance(delivery, PlainTransport):
            await delivery.discard(ctx)
        else:
            # Nothing ran in this process (a job reloaded to be cancelled):
            # undo both kinds of leftovers that an earlier run may have left.
            await BucketPusher(ctx, [], StagingArea([], 0, ctx.staging_dir)).discard()
            await PlainTransport().discard(ctx)
