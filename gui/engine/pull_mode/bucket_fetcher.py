"""GET one bucket from a source that speaks the protocol.

``GET /transfers/chunks/{ids}?offset&size&compression`` answers exactly the
bucket's bytes, gzip-compressed when asked. A gzip answer is inflated with a
bound (never more than the bucket's size + 1 byte) and every answer's length
is checked: a short, long or corrupt answer is an error naming the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine import compression as gz
from gui.engine.compression import PullCompressionPolicy
from gui.engine.retry import with_retries
from gui.engine.transport_base import TransferFailed
from gui.protocol import wire
from gui.protocol.wire import Bucket


RetryHook = Optional[Callable[[int, OrthancError], None]]


class BadBucket(TransferFailed):
    """The source's answer for a bucket has the wrong length or is corrupt."""


@dataclass
class Fetched:
    data: "bytes | bytearray"
    wire_bytes: int
    compression: str


class BucketFetcher:
    def __init__(self, source: OrthancClient, policy: PullCompressionPolicy, retries: int) -> None:
        self.source = source
        self.policy = policy
        self.retries = retries
        self.codec_answers = 0  # answers that came in an extension codec

    async def fetch(self, index: Optional[int], bucket: Bucket, on_retry: RetryHook = None) -> Fetched:
        expected = bucket.total_size
        compression = self.policy.choose()
        start = time.perf_counter()
        # gzip of incompressible data is slightly larger than the data.
        limit = expected if compression == "none" else expected + expected // 64 + 1024
        # Where gzip is chosen, ask for the codec too: our plugin answers in it
        # when it shrinks this bucket more (its Content-Type says so), other
        # servers ignore the argument and answer gzip.
        answer = await with_retries(
            lambda: self.source.transfers.chunks(bucket, compression, limit, codec=wire.CODEC_SPLIT16),
            self.retries, on_retry=on_retry)
        body = answer.body
        wire_bytes = len(body)
        data: "bytes | bytearray"  # the answer's buffer itself when not compressed
        if compression == "gzip":
            codec = answer.codec
            self.codec_answers += codec != "gzip"
            try:
                data = await gz.decompress(body, expected, codec)
            except gz.DecompressionError as exc:
                raise BadBucket(f"{_which(index, bucket)} from {self.source.peer.name}: {exc}",
                                {i: str(exc) for i in bucket.instance_ids()}) from None
        else:
            data = body
        if len(data) != expected:
            reason = f"received {len(data)} bytes, expected {expected}"
            raise BadBucket(f"{_which(index, bucket)} from {self.source.peer.name}: {reason}",
                            {i: reason for i in bucket.instance_ids()})
        self.policy.observe(compression, expected, wire_bytes, time.perf_counter() - start)
        return Fetched(data, wire_bytes, compression)


def _which(index: Optional[int], bucket: Bucket) -> str:
    first = bucket.chunks[0].instance_id if bucket.chunks else "?"
    label = f"bucket {index}" if index is not None else "a bucket"
    return f"{label} (instance {first}{', ...' if len(bucket.chunks) > 1 else ''})"
