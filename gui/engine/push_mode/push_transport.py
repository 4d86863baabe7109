"""Accelerated push: the target speaks the protocol.

Bucket bytes come from the source (``GET /transfers/chunks`` when it speaks
the protocol too, else its files, see :mod:`source_reader`) and go into one
push transaction on the target, committed at the end: the target imports
all or nothing.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

from gui.engine.events import TransferMode
from gui.engine.link_probe import DISTANT_ROUND_TRIP, confirmed_round_trip
from gui.engine.push_mode.bucket_pusher import BucketPusher
from gui.engine.push_mode.push_transaction import supports_asynchronous_commit
from gui.engine.push_mode.source_reader import SourceReader
from gui.engine.transport_base import TransferContext, Transport
from gui.protocol.wire import Bucket, plan_buckets

log = logging.getLogger(__name__)

# Import as it arrives imports a bucket's instances once the bucket is
# staged. A study in a few large buckets (2,000 tiny instances fit in four of
# 4 MB, sent at once) arrives all together at the end, and no import is
# hidden behind the transfer: with the option, buckets are cut smaller so that
# each thread has about this many, one after the other...
ARRIVAL_BUCKETS_PER_THREAD = 8
# ...but no smaller than this, so a bucket's round trip stays small beside
# its bytes.
ARRIVAL_MIN_BUCKET = 256 * 1024


def planned_bucket_size(total_bytes: int, bucket_size: int, threads: int, import_as_it_arrives: bool) -> int:
    """The bucket size a push plans with: ``bucket_size``, or smaller for
    import as it arrives (never above ``bucket_size``)."""
    if not import_as_it_arrives:
        return bucket_size
    spread = total_bytes // (ARRIVAL_BUCKETS_PER_THREAD * max(1, threads))
    return min(bucket_size, max(ARRIVAL_MIN_BUCKET, spread))


class PushTransport(Transport):
    mode = TransferMode.PUSH

    def __init__(self, *, link_rate: Optional[float] = None) -> None:
        # ``link_rate`` (raw bytes/s): skip measuring the link for the "auto"
        # compression decision (tests, benchmarks).
        self.link_rate = link_rate
        self._pushers: Dict[str, BucketPusher] = {}
        self.last_pusher: Optional[BucketPusher] = None

    def plan(self, ctx: TransferContext) -> List[Bucket]:
        opts = ctx.options
        size = planned_bucket_size(sum(i.size for i in ctx.instances), opts.bucket_size_bytes, opts.Threads,
                                   opts.ImportAsItArrives)
        return plan_buckets(ctx.instances, size)

    async def run(self, ctx: TransferContext, buckets: List[Bucket]) -> None:
        reader = SourceReader(ctx.source, ctx.instances, buckets,
                              use_chunks_endpoint=ctx.source_accelerated,
                              compression=ctx.compression,
                              cache_bytes=ctx.options.cache_size_bytes,
                              staging_dir=ctx.staging_dir, retries=ctx.options.MaxHttpRetries)
        if ctx.source_accelerated and ctx.compression == "auto" and buckets:
            # The chunk GETs from the source choose as pull's do: a distant
            # source's are compressed, once a sample showed the data shrinks.
            seconds = await confirmed_round_trip(ctx.source)
            if seconds >= DISTANT_ROUND_TRIP:
                await reader.distant_source(seconds, buckets[0])
        pusher = BucketPusher(ctx, buckets, reader, link_rate=self.link_rate,
                              asynchronous_commit=await supports_asynchronous_commit(ctx))
        self._pushers[ctx.job_id] = self.last_pusher = pusher
        try:
            await pusher.run()
        finally:
            await reader.close()

    async def discard(self, ctx: TransferContext) -> None:
        pusher = self._pushers.pop(ctx.job_id, None) or BucketPusher(ctx, [], _NoReader())
        await pusher.discard()


class _NoReader:
    async def read(self, bucket: Bucket, on_retry: object) -> bytes:  # pragma: no cover
        raise RuntimeError("nothing to read while discarding")

    def rewind(self, buckets: object) -> None:
        pass
