"""Plain transport: stock Orthanc on both ends, only its REST API.

One pipeline, every stage busy at once (nothing waits for a phase to end):

- **read**: instances are downloaded whole (stock Orthanc ignores
  ``Range``), several at a time, with ``Accept-Encoding: gzip`` only where
  it pays (``source_download``); each is checked against the plan's size
  and MD5;
- **encode**: the small instances of one unit travel as one ZIP
  (``POST /instances`` takes ZIPs), *deflated* when compression pays; a
  single instance goes as itself, with ``Content-Encoding: gzip`` when it
  pays (Orthanc 1.10.1 refuses a gzip-encoded ZIP, so a ZIP is never sent
  that way). Whether it pays follows the link (compressed towards a distant
  target, ``link_probe``) and the data (dropped once it does not shrink,
  e.g. JPEG transfer syntaxes);
- **upload**: up to ``UPLOADS`` units at once (Orthanc's ingest scales with
  concurrent clients; the peer store sends one instance at a time). Units
  are cut smaller than a bucket (``plan``) so that even a small study keeps
  that many uploads busy; an instance of ``ALONE`` bytes or more (a CT
  slice) is a unit of its own;
- **read back**: as soon as a unit's upload answered, its instances' MD5s
  are read back from the target by a pool of ``MD5_READBACKS`` requests,
  while the next units travel. The scheduler's storage commitment then only
  asks for what this did not get.

An instance that travels alone and is not compressed by the engine is
*relayed* where the platform and the connections allow it
(``plain_mode_relay``): the source's answer spliced into the target's
upload, never read by this process, checked end to end by the read-back
(a mismatch is sent again by the copy path, ``resend.py``).

Otherwise an instance larger than a bucket is piped: its download is uploaded as it
arrives (hashed on the way; a mismatch fails the job and rolls it back), so
it is never whole in memory nor on disk. The units held in memory are
bounded by a byte budget of ``Threads × 2 × BucketSize``.

A server that refuses what this sends falls back and the job says so in its
notes: a compressed body answered 400/415 is sent again uncompressed and
that kind of compression stops for the job; an upload or read-back answered
503/429 halves the number sent at once (down to one).

Rollback: before the first upload, one look at the target (a listing of
the job's resources there when it has some) says which instances are
absent; those are recorded (durably) as created by this job, and only those
are deleted on failure or cancel. An instance that was on the target before
the job is never deleted.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import logging
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from gui.client.errors import OrthancError
from gui.engine import compression as gz
from gui.engine.compression import PullCompressionPolicy
from gui.engine.events import BucketState, TransferMode
from gui.engine.link_probe import confirmed_distant
from gui.engine.piece_size import PieceSize, groups_of, is_link_failure
from gui.engine.plain_mode_relay import NotRelayed, relay_instance, relay_pools
from gui.engine.retry import with_retries
from gui.engine.source_download import download_instance
from gui.engine.target_md5 import md5s_on
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.protocol.wire import Bucket, InstanceInfo, plan_buckets

log = logging.getLogger(__name__)

ACCEPTED_STATUSES = ("Success", "AlreadyStored")
RetryHook = Optional[Callable[[int, OrthancError], None]]
# Instances of one unit downloaded at once.
READS_PER_UNIT = 8
# Uploads in flight at most (Orthanc 1.10.1 on two cores: ingest rises up to
# about 8 concurrent clients, then flattens).
UPLOADS = 8
# Relays in flight at most (plain_mode_relay.py): each is a download and an
# upload at once, and holds no memory.
RELAYS = 16
# MD5 read-backs in flight at most: tiny answers, the round trip is what
# limits (32 × 1 / 40 ms = 800 per second over a WAN).
MD5_READBACKS = 32
# Units are cut so that there are about this many per upload slot, at most
# MAX_PER_UNIT instances each, and no smaller than MIN_UNIT bytes.
UNITS_PER_UPLOAD = 4
MAX_PER_UNIT = 128
MIN_UNIT = 256 * 1024
# An instance at least this large is a unit of its own.
ALONE = 128 * 1024
# Answers to a compressed body that mean "not that way".
REFUSED = (400, 415, 501)
OVERLOADED = (429, 503)
# gzip stops once this much data shrank by less than MIN_USEFUL_RATIO.
RATIO_SAMPLE = 2 * 1024 * 1024
PIPE_PIECE = 256 * 1024
# Files smaller than this are hashed on the event loop (a thread hop costs more).
HASH_ON_LOOP = 64 * 1024
# Pieces buffered between a piped download and its upload.
PIPE_DEPTH = 8


# --- small concurrency tools ----------------------------------------------------------

class AdaptiveGate:
    """At most ``limit`` holders at once, FIFO; ``shrink`` halves the limit
    (never below one) when the server says it is overloaded."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self._waiters: Deque["asyncio.Future[None]"] = collections.deque()

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()        # given a place just as it was cancelled
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        self.active -= 1
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def shrink(self) -> bool:
        """Halve the limit; False when it already was one."""
        if self.limit <= 1:
            return False
        self.limit = max(1, self.limit // 2)
        return True

    async def __aenter__(self) -> "AdaptiveGate":
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


class ByteBudget:
    """Bytes held in memory by units in flight: at most ``limit``, FIFO. A
    request larger than the whole budget waits until nothing else is held."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self._waiters: Deque[Tuple[int, "asyncio.Future[None]"]] = collections.deque()

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.limit

    async def acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self.held += size
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(size)
            else:
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
            raise

    def release(self, size: int) -> None:
        self.held -= size
        while self._waiters and self._fits(self._waiters[0][0]):
            size, waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += size
                waiter.set_result(None)


T = TypeVar("T")


async def _all_or_none(jobs: List[Awaitable[T]]) -> List[T]:
    """Results of every coroutine, in order; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# --- units and bodies -----------------------------------------------------------------

class Unit:
    """Buckets handled together: a group of small instances, or every piece of one
    split instance (plain mode cannot fetch part of an instance)."""

    def __init__(self, indexes: List[int], buckets: List[Bucket], instances: List[InstanceInfo]) -> None:
        self.indexes = indexes
        self.buckets = buckets
        self.instances = instances

    @property
    def raw_total(self) -> int:
        return sum(i.size for i in self.instances)


def group_units(buckets: Sequence[Bucket], by_id: Dict[str, InstanceInfo]) -> List[Unit]:
    units: List[Unit] = []
    for index, bucket in enumerate(buckets):
        ids = bucket.instance_ids()
        split = len(ids) == 1 and bucket.total_size < by_id[ids[0]].size
        if split and units and units[-1].instances[-1].id == ids[0] and len(units[-1].instances) == 1:
            units[-1].indexes.append(index)
            units[-1].buckets.append(bucket)
            continue
        units.append(Unit([index], [bucket], [by_id[i] for i in ids]))
    return units


def plain_buckets(instances: Sequence[InstanceInfo], bucket_size: int, threads: int,
                  uploads: int = UPLOADS) -> List[Bucket]:
    """The protocol's buckets, with groups of small instances cut finer:
    about ``UNITS_PER_UPLOAD`` units per upload slot, so that the uploads
    stay busy and the first one starts early whatever the study's size, and
    small enough that ``uploads`` of them fit the memory budget at once."""
    buckets = plan_buckets(instances, bucket_size)
    total = sum(i.size for i in instances)
    budget = memory_budget(bucket_size, threads)
    unit = max(MIN_UNIT, min(bucket_size, total // max(1, uploads * UNITS_PER_UPLOAD),
                             budget // (2 * uploads)))
    out: List[Bucket] = []
    for bucket in buckets:
        if len(bucket.chunks) <= 1:
            out.append(bucket)
            continue
        current = Bucket()
        for chunk in bucket.chunks:
            if chunk.size >= ALONE:
                # Large enough to travel alone: concurrent requests, no ZIP to build and unpack.
                out.append(Bucket([chunk]))
                continue
            if current.chunks and (current.total_size + chunk.size > unit or len(current.chunks) >= MAX_PER_UNIT):
                out.append(current)
                current = Bucket()
            current.chunks.append(chunk)
        if current.chunks:
            out.append(current)
    return out


def memory_budget(bucket_size: int, threads: int) -> int:
    """Bytes the units in flight may hold: ``Threads × 2 × BucketSize``."""
    return max(1, threads) * 2 * bucket_size


def zip_of(files: Sequence[Tuple[str, bytes]], deflate: bool = False) -> bytes:
    """A ZIP archive of ``files``: deflated at gzip's fast level, or stored."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=method, compresslevel=gz.GZIP_LEVEL if deflate else None,
                         allowZip64=True) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = method
            archive.writestr(info, data)
    return out.getvalue()


def zip_stored(files: Sequence[Tuple[str, bytes]]) -> bytes:
    return zip_of(files, deflate=False)


@dataclass
class Body:
    data: bytes
    kind: str                          # "zip" | "zip-deflated" | "dicom" | "dicom-gzip"
    content_encoding: Optional[str] = None

    @property
    def compressed(self) -> bool:
        return self.kind in ("zip-deflated", "dicom-gzip")


class UploadCodec:
    """Whether the next body is compressed, and how. One per job."""

    def __init__(self, mode: str, distant: bool) -> None:
        self.wanted = mode == "gzip" or (mode == "auto" and distant)
        self.zip_refused = False
        self.gzip_refused = False
        self.raw = 0
        self.packed = 0
        self.why = "" if self.wanted else ("not asked for" if mode == "none" else "near target")

    @property
    def shrinks(self) -> bool:
        return self.raw < RATIO_SAMPLE or self.raw >= self.packed * gz.MIN_USEFUL_RATIO

    def observe(self, raw: int, packed: int) -> None:
        self.raw += raw
        self.packed += packed

    def use_for(self, many: bool) -> bool:
        if not self.wanted or not self.shrinks:
            return False
        return not (self.zip_refused if many else self.gzip_refused)

    @property
    def used(self) -> bool:
        return self.packed > 0


# --- the transport ----------------------------------------------------------------------

class PlainTransport(Transport):
    mode = TransferMode.PLAIN

    def __init__(self) -> None:
        self._in_flight: "set[asyncio.Future[Any]]" = set()
        self._policy: "PullCompressionPolicy | None" = None
        self._codec: Optional[UploadCodec] = None
        self._uploads: Optional[AdaptiveGate] = None
        self._relays: Optional[AdaptiveGate] = None
        self._source_near = False       # measured in run(): relays ask it for no gzip
        self._md5_queue: "asyncio.Queue[str] | None" = None
        self._md5_gate: Optional[AdaptiveGate] = None
        self._budget: Optional[ByteBudget] = None
        self._notes_said: Set[str] = set()
        # Largest upload body the target's link carries (piece_size.py); None until it broke one.
        self._piece: Optional[PieceSize] = None
        # Instances relayed socket to socket (plain_mode_relay.py), re-sends included.
        self.relayed = 0
        self._gzip_refusals = 0

    def plan(self, ctx: TransferContext) -> List[Bucket]:
        return plain_buckets(ctx.instances, ctx.options.bucket_size_bytes, ctx.options.Threads)

    # --- reading (overridden by the local upload and the pull delivery) -----------------

    async def read_instance(self, ctx: TransferContext, info: InstanceInfo) -> Tuple[bytes, int]:
        """The instance's bytes and how many bytes crossed the network for them."""
        return await download_instance(ctx.source, info.id, self._source_policy(ctx))

    def _source_policy(self, ctx: TransferContext) -> PullCompressionPolicy:
        """Whether to accept gzip from the source: one adaptive choice per job."""
        if self._policy is None:
            self._policy = PullCompressionPolicy(ctx.compression)
        return self._policy

    def _changed_on_source(self, ctx: TransferContext, info: InstanceInfo, size: int,
                           digest: str, expected: str) -> TransferFailed:
        return TransferFailed(
            f"instance {info.id} read from {self.source_label(ctx)} does not match the plan "
            f"(size {size} vs {info.size}, MD5 {digest} vs {expected}); "
            "was it modified during the transfer?", {info.id: "changed on the source"})

    def source_label(self, ctx: TransferContext) -> str:
        return ctx.source.peer.name

    async def encode_body(self, files: List[Tuple[str, bytes]], compress: bool = False) -> Body:
        """The upload body: the file itself (gzip-encoded or not), or a ZIP of
        several files (deflated or stored)."""
        if len(files) == 1:
            data = files[0][1]
            if compress:
                return Body(await gz.compress(data), "dicom-gzip", "gzip")
            return Body(data, "dicom")
        if compress:
            return Body(await asyncio.get_running_loop().run_in_executor(gz._POOL, zip_of, files, True),
                        "zip-deflated")
        return Body(await asyncio.to_thread(zip_of, files, False), "zip")

    def note(self, ctx: TransferContext, text: str) -> None:
        """Say once, in the job's notes, what this transport had to change."""
        if text in self._notes_said:
            return
        self._notes_said.add(text)
        log.info("job %s: %s", ctx.job_id, text)
        ctx.notes.append(text)

    # --- running --------------------------------------------------------------------------

    async def run(self, ctx: TransferContext, buckets: List[Bucket]) -> None:
        by_id = {i.id: i for i in ctx.instances}
        units = [u for u in group_units(buckets, by_id)
                 if not all(i in ctx.done_buckets for i in u.indexes)]
        if not units:
            return
        options = ctx.options
        self._budget = ByteBudget(memory_budget(options.bucket_size_bytes, options.Threads))
        self._uploads = AdaptiveGate(UPLOADS)
        self._relays = AdaptiveGate(RELAYS)
        distant = False
        self._source_near = False
        # What is on the target before the first upload, listed while the
        # links are probed (one request, not enough load to sway a probe):
        # each costs a round trip, and nothing is written before both end.
        absent = asyncio.ensure_future(self._note_absent(ctx, [i for u in units for i in u.instances]))
        try:
            if ctx.compression == "auto":
                # Both ends at once: each costs a round trip or three.
                far_source = self.streams(ctx) and self._policy is None
                found = await asyncio.gather(confirmed_distant(ctx.target),
                                             *([confirmed_distant(ctx.source)] if far_source else []))
                distant = found[0]
                if far_source and found[1]:
                    # A distant source: downloads start compressed (the policy then measures).
                    self._policy = PullCompressionPolicy(ctx.compression, start_with_gzip=True)
                elif far_source:
                    # A near source: relays never ask it for gzip (_relayed_unit).
                    self._source_near = True
        except BaseException:
            absent.cancel()
            await asyncio.gather(absent, return_exceptions=True)
            raise
        self._codec = UploadCodec(ctx.compression, distant)
        if ctx.source_md5s is not None:
            # Only now: 300 look-ups in flight made a near source and target
            # look distant to the probes above (8.8 ms round trips on the
            # LAN, then 16 more requests to confirm: 0.09 s before the first GET).
            ctx.source_md5s.start()
        await absent

        self._md5_queue = asyncio.Queue()
        self._md5_gate = AdaptiveGate(MD5_READBACKS)
        readers = [asyncio.ensure_future(self._read_back(ctx)) for _ in range(MD5_READBACKS)]
        tasks = [asyncio.ensure_future(self._unit(ctx, u)) for u in units]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            # Every upload answered; the read-backs still queued finish now.
            await self._md5_queue.join()
            log.debug("job %s: %d of %d units relayed", ctx.job_id, self.relayed, len(units))
        finally:
            for task in tasks + readers:
                task.cancel()
            await asyncio.gather(*tasks, *readers, return_exceptions=True)
            if self._codec.used:
                ctx.compression_used = "gzip"
            elif ctx.compression_used is None:
                ctx.compression_used = "none"

    def _event(self, ctx: TransferContext, unit: Unit, state: BucketState, **extra: object) -> None:
        for index, bucket in zip(unit.indexes, unit.buckets):
            values = dict(extra)
            if len(unit.buckets) > 1 and unit.raw_total:
                # Spread byte counts over the pieces of a split instance, in
                # integers so that a whole count gives each piece its exact size.
                for key in ("raw_done", "wire_total", "wire_done"):
                    if values.get(key) is not None:
                        values[key] = values[key] * bucket.total_size // unit.raw_total  # type: ignore[operator]
            ctx.bucket_event(index, bucket, state, **values)

    def _retry_hook(self, ctx: TransferContext, unit: Optional[Unit], gate: Optional[AdaptiveGate],
                    what: str) -> Callable[[int, OrthancError], None]:
        def on_retry(attempt: int, exc: OrthancError) -> None:
            if gate is not None and exc.status in OVERLOADED and gate.shrink():
                self.note(ctx, f"{ctx.target.peer.name} answered HTTP {exc.status} to concurrent "
                               f"{what}: now {gate.limit} at once")
            if unit is not None:
                self._event(ctx, unit, BucketState.RETRYING, retries=attempt, error=str(exc))
        return on_retry

    async def _unit(self, ctx: TransferContext, unit: Unit) -> None:
        assert self._budget is not None
        await ctx.wait_running()
        on_retry = self._retry_hook(ctx, unit, None, "reads")
        try:
            if len(unit.instances) == 1 and self.relays(ctx):
                # What the copy path would hold, though a relay holds nothing:
                # Threads and BucketSize bound the work in flight either way.
                info = unit.instances[0]
                held = min(info.size, 2 * ctx.options.bucket_size_bytes) \
                    if info.size > ctx.options.bucket_size_bytes else 2 * info.size
                await self._budget.acquire(held)
                try:
                    if await self._relayed_unit(ctx, unit):
                        return
                finally:
                    self._budget.release(held)
            if self.streams(ctx) and len(unit.instances) == 1 \
                    and unit.instances[0].size > ctx.options.bucket_size_bytes:
                await self._piped_unit(ctx, unit, on_retry)
                return
            # Raw bytes and the body may be held together while encoding.
            reserved = 2 * unit.raw_total
            await self._budget.acquire(reserved)
            try:
                await ctx.wait_running()     # a pause holds the units not started yet
                await self._small_unit(ctx, unit, on_retry, reserved)
            finally:
                self._budget.release(reserved)
        except asyncio.CancelledError:
            raise
        except TransferFailed as exc:
            self._event(ctx, unit, BucketState.FAILED, error=exc.reason)
            raise
        except OrthancError as exc:
            self._event(ctx, unit, BucketState.FAILED, error=str(exc))
            raise TransferFailed(str(exc), {i.id: str(exc) for i in unit.instances}) from None

    async def _small_unit(self, ctx: TransferContext, unit: Unit, on_retry: RetryHook, reserved: int) -> None:
        assert self._codec is not None
        retries = ctx.options.MaxHttpRetries
        raw_done = 0
        self._event(ctx, unit, BucketState.READING)
        gate = asyncio.Semaphore(READS_PER_UNIT)
        step = max(1, len(unit.instances) // 4)
        read_count = 0

        async def read(info: InstanceInfo) -> bytes:
            nonlocal raw_done, read_count
            while True:
                async with gate:
                    data, _wire = await with_retries(lambda: self.read_instance(ctx, info),
                                                     retries, on_retry=on_retry)
                # Off the loop but for tiny files: hashing lets go of the GIL, and
                # getting it back among busy threads can stall the loop (the
                # benchmark's stall probe saw 113 ms on 0.5 MB CT slices).
                digest = hashlib.md5(data).hexdigest() if len(data) < HASH_ON_LOOP else \
                    await asyncio.to_thread(lambda: hashlib.md5(data).hexdigest())
                expected = await ctx.source_md5(info)
                if len(data) == info.size and digest == expected:
                    break
                # Corrupted on the way, most likely: read it again (resend.py's budget).
                if not ctx.resends.allow(info.id, f"downloaded with MD5 {digest}, planned {expected}"):
                    raise self._changed_on_source(ctx, info, len(data), digest, expected)
            raw_done += len(data)
            read_count += 1
            if read_count % step == 0:
                self._event(ctx, unit, BucketState.READING, raw_done=raw_done)
            return data

        contents = await _all_or_none([read(info) for info in unit.instances])
        files: List[Tuple[str, bytes]] = [(f"{info.id}.dcm", data)
                                          for info, data in zip(unit.instances, contents)]
        del contents
        many = len(files) > 1
        compress = self._codec.use_for(many)
        if many or compress:
            self._event(ctx, unit, BucketState.COMPRESSING, raw_done=raw_done)
        body = await self.encode_body(files, compress)
        if body.compressed:
            self._codec.observe(raw_done, len(body.data))
            if not self._codec.shrinks:
                self.note(ctx, "uploads no longer compressed: the data does not shrink "
                               f"(ratio {self._codec.raw / max(1, self._codec.packed):.2f})")
        try:
            answers = await self._deliver_adaptive(ctx, unit, files, body, raw_done, on_retry)
        except OrthancError as exc:
            if not (body.compressed and exc.status in REFUSED):
                raise
            # Refused as compressed: the same files once more as they are.
            plain = await self.encode_body(files, False)
            answers = await self._deliver_adaptive(ctx, unit, files, plain, raw_done, on_retry)
            if body.kind == "zip-deflated":
                self._codec.zip_refused = True
                what = "a deflated ZIP"
            else:
                self._codec.gzip_refused = True
                what = "a gzip-encoded file"
            self.note(ctx, f"{ctx.target.peer.name} refused {what} (HTTP {exc.status}): "
                           "those uploads go uncompressed")
        files.clear()
        await self._finish(ctx, unit, answers, raw_done, len(body.data))

    # --- one instance relayed socket to socket ------------------------------------------

    def relays(self, ctx: TransferContext) -> bool:
        """Whether this transport may relay instances (plain_mode_relay.py):
        read from the source server and sent as they are, not by a subclass
        that reads elsewhere or changes the bodies."""
        cls = type(self)
        return self.streams(ctx) and cls.encode_body is PlainTransport.encode_body \
            and cls.upload_pieces is PlainTransport.upload_pieces

    async def _relayed_unit(self, ctx: TransferContext, unit: Unit) -> bool:
        """Relay the unit's one instance; False when it must take the copy path."""
        assert self._codec is not None
        info = unit.instances[0]
        if not self.relays(ctx) or self._codec.use_for(False) or ctx.resends.reasons.get(info.id):
            # The engine compresses the upload (a distant target); or the
            # instance is sent again after a bad copy: the copy path hashes it.
            return False
        pools = relay_pools(ctx.source, ctx.target)
        if pools is None:
            return False
        piped = info.size > ctx.options.bucket_size_bytes
        # A large instance is never asked compressed: Orthanc would deflate it
        # whole before the first byte. Nor is anything from a near source: a
        # relay runs only towards a target the engine does not compress for,
        # so gzip could shorten no link, while each answer costs the source a
        # deflate (a relay's time is the target's too, so the policy's probes
        # looked worthwhile: on the LAN's CT, 10 of 300 slices, the source's
        # CPU tripled and the job took 30 % longer).
        choice = "none" if piped or self._source_near else self._source_policy(ctx).choose()
        if choice == "gzip" and self._codec.gzip_refused:
            return False     # the target takes no gzip body: inflated here instead
        gzip = choice == "gzip"
        crossed = [info.size]
        took = [0.0]

        async def send() -> List[Dict[str, Any]]:
            began = time.perf_counter()     # once through the gate: the relay's own time
            answers, crossed[0] = await relay_instance(ctx.source, ctx.target, pools, info.id,
                                                       gzip=gzip, size=info.size)
            took[0] = time.perf_counter() - began
            return answers

        try:
            answers = await self._send(ctx, unit, send, 0, info.size, self._relays)
        except NotRelayed as exc:
            log.debug("job %s: %s not relayed: %s", ctx.job_id, info.id, exc)
            return False
        except OrthancError as exc:
            if not (gzip and exc.status in REFUSED):
                raise
            # 400 ("Bad file format") may also be a gzip stream damaged on its
            # way from the source: that instance goes by the copy path, and
            # gzip bodies stop only when it happens again.
            self._gzip_refusals += 1
            if exc.status != 400 or self._gzip_refusals >= 2:
                self._codec.gzip_refused = True
                self.note(ctx, f"{ctx.target.peer.name} refused a gzip-encoded file (HTTP {exc.status}): "
                               "those uploads go uncompressed")
            return False
        if not piped:
            self._source_policy(ctx).observe(choice, info.size, crossed[0], took[0])
        self.relayed += 1
        await self._finish(ctx, unit, answers, info.size, crossed[0])
        return True

    def _pieces(self, ctx: TransferContext) -> PieceSize:
        if self._piece is None:
            self._piece = PieceSize(ctx.options.bucket_size_bytes, key=ctx.target.base_url)
        return self._piece

    async def _deliver_adaptive(self, ctx: TransferContext, unit: Unit, files: List[Tuple[str, bytes]],
                                body: Body, raw_done: int, on_retry: RetryHook) -> List[Dict[str, Any]]:
        """Upload ``body`` (the encoded ``files``); over a link that keeps
        breaking bodies of that size, the same files as smaller ZIPs."""
        if len(files) > 1 and self._piece is not None and len(body.data) > self._piece.size:
            # The link broke larger bodies earlier: smaller ZIPs from the start.
            return await self._deliver_smaller(ctx, unit, files, raw_done, on_retry)
        try:
            answers = await self._deliver(ctx, unit, body, raw_done, on_retry)
        except OrthancError as exc:
            if not (is_link_failure(exc) and len(files) > 1):
                raise
            # Every retry broke on the way: the same files in smaller ZIPs.
            self._pieces(ctx).shrink(len(body.data))
            return await self._deliver_smaller(ctx, unit, files, raw_done, on_retry)
        if self._piece is not None:
            self._piece.succeeded()
        return answers

    async def _deliver_smaller(self, ctx: TransferContext, unit: Unit, files: List[Tuple[str, bytes]],
                               raw_done: int, on_retry: RetryHook) -> List[Dict[str, Any]]:
        """``files`` uploaded as several ZIPs of at most the current piece
        size (piece_size.py), each cut again if the link still breaks it.
        Storing an instance twice is harmless (``AlreadyStored``)."""
        piece = self._pieces(ctx)
        self.note(ctx, f"the link to {ctx.target.peer.name} broke larger uploads: "
                       "sent as smaller ZIPs")
        answers: List[Dict[str, Any]] = []
        for group in groups_of([len(data) for _name, data in files], piece.size):
            part = [files[n] for n in group]
            body = await self.encode_body(part, False)
            try:
                answers += await self._deliver(ctx, unit, body, raw_done, on_retry)
                piece.succeeded()
            except OrthancError as exc:
                if not (is_link_failure(exc) and len(part) > 1 and piece.shrink(len(body.data))):
                    raise
                answers += await self._deliver_smaller(ctx, unit, part, raw_done, on_retry)
        return answers

    async def _deliver(self, ctx: TransferContext, unit: Unit, body: Body, raw_done: int,
                       on_retry: RetryHook) -> List[Dict[str, Any]]:
        """Upload one body (retried, at most ``UPLOADS`` at once)."""
        return await self._send(ctx, unit, lambda: ctx.target.upload(
            body.data, content_encoding=body.content_encoding), raw_done, len(body.data))

    async def _send(self, ctx: TransferContext, unit: Unit, send: Callable[[], Awaitable[List[Dict[str, Any]]]],
                    raw_done: int, wire_total: int, gate: Optional[AdaptiveGate] = None) -> List[Dict[str, Any]]:
        assert self._uploads is not None
        relay = gate is not None
        gate = gate or self._uploads
        hook = self._retry_hook(ctx, unit, gate, "uploads")
        await gate.acquire()
        try:
            if relay:
                # A relay reads nothing before its turn: a pause holds it here.
                await ctx.wait_running()
            self._event(ctx, unit, BucketState.SENDING, raw_done=raw_done, wire_total=wire_total)
            # Shielded: a cancel must not leave an upload half-way whose import
            # lands after the rollback; discard() waits for these first.
            upload = asyncio.ensure_future(with_retries(send, ctx.options.MaxHttpRetries, on_retry=hook))
            self._in_flight.add(upload)
            upload.add_done_callback(self._in_flight.discard)
            return await asyncio.shield(upload)
        finally:
            gate.release()

    async def _finish(self, ctx: TransferContext, unit: Unit, answers: List[Dict[str, Any]], raw_done: int,
                      wire_total: int) -> None:
        self._check_answers(ctx, unit, answers)
        self._event(ctx, unit, BucketState.DONE, raw_done=raw_done, wire_total=wire_total,
                    wire_done=wire_total)
        for index in unit.indexes:
            await ctx.mark_bucket_done(index)
        assert self._md5_queue is not None
        for info in unit.instances:
            self._md5_queue.put_nowait(info.id)

    # --- MD5 read-backs, overlapped with the transfer -------------------------------------

    async def _read_back(self, ctx: TransferContext) -> None:
        """One of the read-back workers: the target's MD5 of each uploaded
        instance, into ``ctx.target_md5s``. A failure leaves the instance to
        the scheduler's final check."""
        assert self._md5_queue is not None and self._md5_gate is not None
        queue, gate = self._md5_queue, self._md5_gate
        found = ctx.target_md5s
        hook = self._retry_hook(ctx, None, gate, "MD5 read-backs")
        while True:
            instance_id = await queue.get()
            try:
                async with gate:
                    md5 = await with_retries(lambda: ctx.target.instance_md5_or_none(instance_id),
                                             ctx.options.MaxHttpRetries, on_retry=hook)
                if md5 is not None:
                    found[instance_id] = md5
            except OrthancError as exc:
                log.debug("job %s: read-back of %s left to the final check: %s", ctx.job_id, instance_id, exc)
            finally:
                queue.task_done()

    # --- presence: what the rollback may delete ---------------------------------------------

    async def _note_absent(self, ctx: TransferContext, instances: List[InstanceInfo]) -> None:
        """Look before writing: only what is absent now is ours to delete later.
        One listing of the job's resources on the target answers for all of
        them when the job has resources (see target_md5)."""
        wanted = [i.id for i in instances if i.id not in ctx.created_on_target]
        if not wanted:
            return
        befores = await md5s_on(ctx.target, wanted, bulk=False, concurrency=MD5_READBACKS,
                                retries=ctx.options.MaxHttpRetries, resources=ctx.resources or None)
        absent = []
        for instance_id in wanted:
            before = befores.get(instance_id)
            if isinstance(before, OrthancError):
                raise TransferFailed(str(before), {instance_id: str(before)})
            if before is None:
                absent.append(instance_id)
        # One write for all: nothing is uploaded before it ends.
        await ctx.mark_created_many(absent)

    # --- large instances: piped from the source to the target --------------------------------

    def streams(self, ctx: TransferContext) -> bool:
        """Whether instances larger than a bucket are piped from the source to
        the target (never whole in memory): when they are read from the
        source server, not by a subclass's own reader (local files, pulled data)."""
        return type(self).read_instance is PlainTransport.read_instance

    async def _piped_unit(self, ctx: TransferContext, unit: Unit, on_retry: RetryHook) -> None:
        assert self._budget is not None
        info = unit.instances[0]
        # Two pieces in the pipe, whatever the instance's size.
        reserved = min(info.size, 2 * ctx.options.bucket_size_bytes)
        await self._budget.acquire(reserved)
        try:
            await ctx.wait_running()
            self._event(ctx, unit, BucketState.READING)
            while True:
                digests: List[str] = []
                answers = await self._send(ctx, unit, lambda: self._pipe(ctx, unit, digests),
                                           0, info.size)
                digest = digests[-1] if digests else ""
                expected = await ctx.source_md5(info)
                if digest == expected:
                    break
                # Piped on as it came, so the bad copy is on the target: remove
                # it (if this job created it) and pipe the instance again.
                if info.id not in ctx.created_on_target or not ctx.resends.allow(
                        info.id, f"downloaded with MD5 {digest}, planned {expected}"):
                    raise self._changed_on_source(ctx, info, info.size, digest, expected)
                await with_retries(lambda: ctx.target.delete("Instance", info.id), ctx.options.MaxHttpRetries)
            await self._finish(ctx, unit, answers, info.size, info.size)
        finally:
            self._budget.release(reserved)

    async def _pipe(self, ctx: TransferContext, unit: Unit, digests: List[str]) -> List[Dict[str, Any]]:
        """One attempt: download the unit's instance and upload it as it comes."""
        info = unit.instances[0]
        pipe: "asyncio.Queue[Optional[bytes]]" = asyncio.Queue(maxsize=PIPE_DEPTH)
        digest = hashlib.md5()
        done = [0]

        async def fill() -> None:
            reported = 0

            async def put(piece: bytes) -> None:
                nonlocal reported
                if len(piece) >= PIPE_PIECE:
                    await asyncio.to_thread(digest.update, piece)   # hashlib lets go of the GIL
                else:
                    digest.update(piece)
                done[0] += len(piece)
                await pipe.put(piece)
                if done[0] - reported >= 8 * PIPE_PIECE:
                    reported = done[0]
                    self._event(ctx, unit, BucketState.SENDING, raw_done=done[0], wire_total=info.size)

            await ctx.source.download_instance_to(info.id, _AsyncSink(put), gzip=False)
            await pipe.put(None)

        async def pieces() -> Any:
            while True:
                piece = await pipe.get()
                if piece is None:
                    return
                yield piece

        filler = asyncio.ensure_future(fill())
        uploader = asyncio.ensure_future(self.upload_pieces(ctx, info, pieces()))
        try:
            await asyncio.wait({filler, uploader}, return_when=asyncio.FIRST_EXCEPTION)
            if filler.done() and filler.exception() is not None:
                raise filler.exception()  # type: ignore[misc]
            answers = await uploader
            await filler
        finally:
            for task in (filler, uploader):
                if not task.done():
                    task.cancel()
            await asyncio.gather(filler, uploader, return_exceptions=True)
        if done[0] != info.size:
            raise self._changed_on_source(ctx, info, done[0], digest.hexdigest(), info.md5 or "(not yet read)")
        digests.append(digest.hexdigest())
        return answers

    async def upload_pieces(self, ctx: TransferContext, info: InstanceInfo, pieces: Any) -> List[Dict[str, Any]]:
        """Upload one instance given as an async iterator of pieces."""
        return await ctx.target.upload_stream(pieces, info.size)

    def _check_answers(self, ctx: TransferContext, unit: Unit, answers: List[Dict[str, Any]]) -> None:
        expected = {i.id for i in unit.instances}
        seen = set()
        for answer in answers:
            if not isinstance(answer, dict):
                continue
            status = answer.get("Status")
            if status not in ACCEPTED_STATUSES:
                where = answer.get("ID") or answer.get("Path") or "a file"
                raise TransferFailed(f"{ctx.target.peer.name} refused {where}: {status or answer}")
            seen.add(answer.get("ID"))
        missing = expected - seen
        if missing:
            first = sorted(missing)[0]
            raise TransferFailed(f"{ctx.target.peer.name} did not report storing {len(missing)} "
                                 f"instance(s), e.g. {first}", {i: "not stored" for i in missing})

    # --- rollback ------------------------------------------------------------------

    async def discard(self, ctx: TransferContext) -> None:
        """Delete every instance this job created; keep everything else."""
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        await ctx.delete_created_on_target()


class _AsyncSink:
    """A sink whose ``write`` returns an awaitable (the lean client awaits it:
    backpressure from the upload down to the download)."""

    def __init__(self, put: Callable[[bytes], Awaitable[None]]) -> None:
        self.write = put
