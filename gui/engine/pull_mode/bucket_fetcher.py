"""GET one bucket from a source that speaks the protocol.

``GET /transfers/chunks/{ids}?offset&size&compression`` answers exactly the
bucket's bytes, gzip-compressed (or in a codec of ours) when asked; the
encoding of each GET is chosen by :class:`ChunkCodecPolicy`. A compressed
answer is inflated with a bound (never more than the bucket's size + 1
byte) and every answer's length is checked: a short, long or corrupt
answer is an error naming the bucket.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.client.transfers_api import Chunks
from gui.engine import compression as gz
from gui.engine.pull_mode.codec_choice import FIRST_SAMPLE_BYTES, SAMPLE_BYTES, ChunkCodecPolicy
from gui.engine.retry import with_retries
from gui.engine.transport_base import TransferFailed
from gui.protocol import wire
from gui.protocol.wire import Bucket, Chunk

log = logging.getLogger(__name__)

RetryHook = Optional[Callable[[int, OrthancError], None]]


class BadBucket(TransferFailed):
    """The source's answer for a bucket has the wrong length or is corrupt."""


@dataclass
class Fetched:
    data: "bytes | bytearray"
    wire_bytes: int
    compression: str   # the answer's encoding: "none", "gzip" or a codec


class BucketFetcher:
    def __init__(self, source: OrthancClient, policy: ChunkCodecPolicy, retries: int) -> None:
        self.source = source
        self.policy = policy
        self.retries = retries
        self.codec_answers = 0  # answers that came in an extension codec
        self.asked: Dict[str, int] = {}   # GETs by the encoding asked for (tests, logs)

    async def sample_first(self, bucket: Bucket) -> None:
        """Sample the data before any compressed GET: the start of ``bucket``,
        uncompressed (one small request). A failure only leaves the choice
        to the round trip until the first bucket arrives."""
        if not bucket.chunks or self.policy.sample is not None:
            return
        # The bucket's first bytes, across as many of its chunks as they span
        # (a chunk GET addresses any range of the concatenation).
        chunks: List[Chunk] = []
        total = 0
        for chunk in bucket.chunks:
            take = min(chunk.size, FIRST_SAMPLE_BYTES - total)
            chunks.append(Chunk(chunk.instance_id, chunk.offset, take))
            total += take
            if total >= FIRST_SAMPLE_BYTES:
                break
        part = Bucket(chunks)
        try:
            answer = await with_retries(
                lambda: self.source.transfers.chunks(part, "none", part.total_size), self.retries)
        except OrthancError as exc:
            log.info("could not sample the data on %s: %s", self.source.peer.name, exc)
            return
        if len(answer.body) == part.total_size:
            self.policy.add_sample(await gz.measure(bytes(answer.body), limit=FIRST_SAMPLE_BYTES))

    async def fetch(self, index: Optional[int], bucket: Bucket, on_retry: RetryHook = None) -> Fetched:
        expected = bucket.total_size
        asked = self.policy.choose()
        self.asked[asked] = self.asked.get(asked, 0) + 1
        compression = "none" if asked == "none" else "gzip"
        # gzip of incompressible data is slightly larger than the data.
        limit = expected if compression == "none" else expected + expected // 64 + 1024
        started = [0.0]

        async def attempt() -> Chunks:
            started[0] = time.perf_counter()
            # A codec is asked for with gzip: our plugin answers in it (its
            # Content-Type says so), any other server ignores it and answers gzip.
            return await self.source.transfers.chunks(bucket, compression, limit,
                                                      codec=asked if asked in wire.CODECS else None)

        answer = await with_retries(attempt, self.retries, on_retry=on_retry)
        seconds = time.perf_counter() - started[0]
        body = answer.body
        wire_bytes = len(body)
        data: "bytes | bytearray"  # the answer's buffer itself when not compressed
        used = answer.codec if compression == "gzip" else "none"
        if used != "none":
            self.codec_answers += used != "gzip"
            try:
                data = await gz.decompress(body, expected, used)
            except gz.DecompressionError as exc:
                raise BadBucket(f"{_which(index, bucket)} from {self.source.peer.name}: {exc}",
                                {i: str(exc) for i in bucket.instance_ids()}) from None
        else:
            data = body
        if len(data) != expected:
            reason = f"received {len(data)} bytes, expected {expected}"
            raise BadBucket(f"{_which(index, bucket)} from {self.source.peer.name}: {reason}",
                            {i: reason for i in bucket.instance_ids()})
        self.policy.observe(used, expected, wire_bytes, seconds)
        if self.policy.wants_sample():
            self.policy.add_sample(await gz.measure(data, limit=SAMPLE_BYTES))
        return Fetched(data, wire_bytes, used)


def _which(index: Optional[int], bucket: Bucket) -> str:
    first = bucket.chunks[0].instance_id if bucket.chunks else "?"
    label = f"bucket {index}" if index is not None else "a bucket"
    return f"{label} (instance {first}{', ...' if len(bucket.chunks) > 1 else ''})"
