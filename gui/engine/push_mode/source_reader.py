"""The bytes of a push bucket, read from the source server.

- A source that speaks the protocol serves a bucket's exact bytes with
  ``GET /transfers/chunks`` requests: nothing is cached here. A push bucket is
  cut for the target's ``BucketSize`` only, so a bucket of many small
  instances is fetched in several GETs, each URL kept under the protocol's
  length limit and the plugins' limit of IDs per URL, and the answers are
  concatenated.
- A stock source serves whole files only (``Range`` is ignored). A whole
  instance that is one chunk is downloaded and used once. An instance split
  over several buckets is downloaded once and kept for its other chunks: in
  memory while the cache (``CacheSize``) has room, otherwise streamed to a
  temporary file in the job's staging directory, from which ranges are read.
  Concurrent requests for the same instance share one download.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine.compression import PullCompressionPolicy
from gui.engine.pull_mode.bucket_fetcher import BucketFetcher
from gui.engine.pull_mode.codec_choice import ChunkCodecPolicy
from gui.engine.retry import with_retries
from gui.engine.source_download import download_instance, download_instance_to
from gui.engine.transport_base import TransferFailed
from gui.protocol import wire
from gui.protocol.wire import Bucket, Chunk, InstanceInfo

log = logging.getLogger(__name__)

RetryHook = Optional[Callable[[int, OrthancError], None]]

# A source plugin refuses a chunks URL naming more instances than this (the
# project's plugin: MaxChunkIds, default 100). The URL length limit usually
# binds first (about 42 IDs).
MAX_IDS_PER_CHUNKS_GET = 100
# GETs of one bucket's parts in flight at once.
PARTS_IN_FLIGHT = 4


def split_for_get(bucket: Bucket, base_url: str, compression: str = wire.CODEC_SPLIT16,
                  max_ids: int = MAX_IDS_PER_CHUNKS_GET) -> List[Bucket]:
    """Cut a bucket into consecutive parts that can each be fetched with one GET.

    Every part's URL (``base_url`` + its chunks path) stays under
    ``wire.MAX_PULL_URL_LENGTH`` and names at most ``max_ids`` instances; the
    parts' bytes, concatenated, are the bucket's. ``compression`` is the
    longest value the query may carry, so the length holds for either.
    """
    parts: List[Bucket] = []
    current: List[Chunk] = []
    for chunk in bucket.chunks:
        candidate = current + [chunk]
        too_long = len(base_url + wire.chunks_uri(Bucket(candidate), compression)) \
            >= wire.MAX_PULL_URL_LENGTH
        if current and (too_long or len(candidate) > max_ids):
            parts.append(Bucket(current))
            current = [chunk]
        else:
            current = candidate
    if current:
        parts.append(Bucket(current))
    return parts


class SourceReadError(TransferFailed):
    """The source did not deliver a bucket's bytes; the text says which and why."""


class SourceReader:
    def __init__(self, source: OrthancClient, instances: Sequence[InstanceInfo],
                 buckets: Sequence[Bucket], *, use_chunks_endpoint: bool, cache_bytes: int,
                 staging_dir: Path, retries: int, compression: str = "none") -> None:
        self.source = source
        self.use_chunks_endpoint = use_chunks_endpoint
        self.cache_bytes = cache_bytes
        self.staging_dir = Path(staging_dir)
        self.retries = retries
        # From a source that speaks the protocol, the encoding on this leg is
        # chosen per bucket like in pull mode ("auto" measures, else as
        # asked); the codec is used only where an answer says so.
        self._fetcher = BucketFetcher(source, ChunkCodecPolicy(compression, codecs=wire.CODECS), retries)
        # Whole files from a stock source: gzip on the wire where it pays.
        self._download_policy = PullCompressionPolicy(compression)
        # Chunks still to read per split instance: its temp file goes when 0.
        self._remaining: Dict[str, int] = collections.Counter(
            c.instance_id for b in buckets for c in b.chunks)
        self._sizes: Dict[str, int] = {i.id: i.size for i in instances}
        self._cache: "collections.OrderedDict[str, bytes]" = collections.OrderedDict()
        self._cached_bytes = 0
        self._reserved = 0
        self._pending: Dict[str, "asyncio.Future[object]"] = {}
        self._files: Dict[str, Path] = {}

    async def distant_source(self, round_trip: float, first: Bucket) -> None:
        """The source is across a WAN: its chunk GETs may be compressed,
        once the data has been sampled (pull_mode/codec_choice.py)."""
        policy = self._fetcher.policy
        policy.distant, policy.round_trip = True, round_trip
        await self._fetcher.sample_first(first)

    def relay_path(self, bucket: Bucket) -> Optional[str]:
        """The one chunks GET whose uncompressed answer is this bucket's
        bytes, when its answer may be relayed to the target as it comes
        (a source that speaks the protocol, one GET, uncompressed on this
        link); None otherwise."""
        if not self.use_chunks_endpoint or not bucket.chunks:
            return None
        if self._fetcher.policy.choose() != "none":
            return None
        if len(split_for_get(bucket, self.source.base_url)) != 1:
            return None
        return wire.chunks_uri(bucket, "none")

    async def read(self, bucket: Bucket, on_retry: RetryHook = None) -> bytes:  # or bytearray
        expected = bucket.total_size
        if self.use_chunks_endpoint:
            data = await self._read_through_chunks(bucket, on_retry)
        else:
            parts = [await self._read_chunk(chunk, on_retry) for chunk in bucket.chunks]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) != expected:
            raise SourceReadError(f"the source sent {len(data)} bytes for a bucket of "
                                  f"{expected} bytes ({bucket.instance_ids()[0]}...)")
        return data

    async def _read_through_chunks(self, bucket: Bucket, on_retry: RetryHook) -> bytes:
        parts = split_for_get(bucket, self.source.base_url)
        if len(parts) == 1:
            return (await self._fetcher.fetch(None, bucket, on_retry)).data
        # A few GETs of one bucket in flight at once: on a long round trip,
        # one after the other would leave the link idle between them.
        gate = asyncio.Semaphore(PARTS_IN_FLIGHT)

        async def one(part: Bucket) -> bytes:
            async with gate:
                return (await self._fetcher.fetch(None, part, on_retry)).data

        return b"".join(await asyncio.gather(*(one(p) for p in parts)))

    async def _download(self, iid: str) -> bytes:
        # gzip from a stock source only where it pays (it compresses slowly).
        return (await download_instance(self.source, iid, self._download_policy))[0]

    async def _read_chunk(self, chunk: Chunk, on_retry: RetryHook) -> bytes:
        iid = chunk.instance_id
        # The only chunk of this instance still to read, and nothing kept: no caching.
        if self._remaining[iid] <= 1 and iid not in self._files and iid not in self._cache \
                and iid not in self._pending:
            self._remaining[iid] -= 1
            data = await with_retries(lambda: self._download(iid), self.retries,
                                      on_retry=on_retry)
            return data[chunk.offset:chunk.offset + chunk.size]
        try:
            where = await self._instance(iid, chunk.offset + chunk.size, on_retry)
            if isinstance(where, bytes):
                return where[chunk.offset:chunk.offset + chunk.size]
            return await asyncio.to_thread(_read_range, where, chunk.offset, chunk.size)
        finally:
            # Counted down only once read, so a concurrent reader of another
            # chunk never sees the file vanish under it.
            self._remaining[iid] -= 1
            if self._remaining[iid] <= 0:
                self._forget(iid)

    async def _instance(self, iid: str, at_least: int, on_retry: RetryHook) -> "bytes | Path":
        """The instance's bytes (cached) or the path of its temporary file."""
        if iid in self._cache:
            self._cache.move_to_end(iid)
            return self._cache[iid]
        if iid in self._files and self._files[iid].exists():
            return self._files[iid]
        while iid in self._pending:
            # Someone is downloading it: wait, then look again (their download
            # may have failed or been cancelled, and then we try ourselves).
            await asyncio.wait([self._pending[iid]])
            if iid in self._cache or (iid in self._files and self._files[iid].exists()):
                return await self._instance(iid, at_least, on_retry)
        done = asyncio.get_running_loop().create_future()
        self._pending[iid] = done
        try:
            return await self._fetch(iid, at_least, on_retry)
        finally:
            del self._pending[iid]
            done.set_result(None)

    async def _fetch(self, iid: str, at_least: int, on_retry: RetryHook) -> "bytes | Path":
        size = max(at_least, self._sizes.get(iid, 0))
        if self._make_room(size):
            self._reserved += size
            try:
                data = await with_retries(lambda: self._download(iid), self.retries,
                                          on_retry=on_retry)
            finally:
                self._reserved -= size
            self._cache[iid] = data
            self._cached_bytes += len(data)
            return data
        # Too large for what the cache has left: stream it to disk instead.
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        path = self.staging_dir / f"source-{iid}.dcm"

        async def download() -> int:
            # Same gzip-or-not choice as for whole files kept in memory.
            with open(path, "wb") as sink:
                return await download_instance_to(self.source, iid, sink, self._download_policy)

        await with_retries(download, self.retries, on_retry=on_retry)
        self._files[iid] = path
        return path

    def _make_room(self, size: int) -> bool:
        """Evict least recently used files until ``size`` fits; False if it cannot."""
        if size > self.cache_bytes:
            return False
        while self._cache and self._cached_bytes + self._reserved + size > self.cache_bytes:
            _, data = self._cache.popitem(last=False)
            self._cached_bytes -= len(data)
        return self._cached_bytes + self._reserved + size <= self.cache_bytes

    def _forget(self, iid: str) -> None:
        data = self._cache.pop(iid, None)
        if data is not None:
            self._cached_bytes -= len(data)
        path = self._files.pop(iid, None)
        if path is not None:
            _unlink(path)

    def rewind(self, buckets: Sequence[Bucket]) -> None:
        """Every bucket will be read again (a push transaction is re-sent)."""
        self._remaining = collections.Counter(c.instance_id for b in buckets for c in b.chunks)

    async def close(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0
        for path in self._files.values():
            _unlink(path)
        self._files.clear()


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
