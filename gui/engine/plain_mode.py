"""Plain transport: stock Orthanc on both ends, only its REST API.

Instances are downloaded whole (stock Orthanc ignores ``Range``), with
``Accept-Encoding: gzip`` only where it pays (``source_download``); the small
instances of one bucket are uploaded together as one stored ZIP archive
(``POST /instances`` takes ZIPs). An instance larger than a bucket is
streamed into a scratch file of the job (hashed on the way) and uploaded
from it piece by piece. At most ``Threads`` buckets are in flight, so
memory stays within about ``Threads × 2 × BucketSize`` whatever the
instance sizes.

Rollback: before uploading, each instance is looked up on the target; only
the ones absent then are recorded (durably) as created by this job, and only
those are deleted on failure or cancel. An instance that was on the target
before the job is never deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any, Awaitable, BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from gui.client.errors import OrthancError
from gui.engine.compression import PullCompressionPolicy
from gui.engine.events import BucketState, TransferMode
from gui.engine.source_download import download_instance, download_instance_to
from gui.engine.target_md5 import SMALL_GET_CONCURRENCY, md5s_on
from gui.engine.retry import with_retries
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.protocol.wire import Bucket, InstanceInfo, plan_buckets

ACCEPTED_STATUSES = ("Success", "AlreadyStored")
RetryHook = Optional[Callable[[int, OrthancError], None]]
# Instances of one unit downloaded at once.
READS_PER_UNIT = 8

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


def zip_stored(files: Sequence[Tuple[str, bytes]]) -> bytes:
    """A ZIP archive without compression: DICOM pixel data rarely shrinks, and
    the CPU is better spent elsewhere."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


class _HashingSink:
    """A file being written that hashes what it is given and reports progress
    every few megabytes."""

    REPORT_EVERY = 4 * 1024 * 1024

    def __init__(self, handle: BinaryIO, progress: Callable[[int], None]) -> None:
        self.handle = handle
        self.progress = progress
        self.digest = hashlib.md5()
        self.done = 0
        self._reported = 0

    def write(self, piece: bytes) -> None:
        self.handle.write(piece)
        self.digest.update(piece)
        self.done += len(piece)
        if self.done - self._reported >= self.REPORT_EVERY:
            self._reported = self.done
            self.progress(self.done)


class PlainTransport(Transport):
    mode = TransferMode.PLAIN

    def __init__(self) -> None:
        self._in_flight: "set[asyncio.Future[Any]]" = set()
        self._policy: "PullCompressionPolicy | None" = None

    def plan(self, ctx: TransferContext) -> List[Bucket]:
        return plan_buckets(ctx.instances, ctx.options.bucket_size_bytes)

    # --- reading (overridden by the local upload) ------------------------------

    async def read_instance(self, ctx: TransferContext, info: InstanceInfo) -> Tuple[bytes, int]:
        """The instance's bytes and how many bytes crossed the network for them."""
        return await download_instance(ctx.source, info.id, self._source_policy(ctx))

    def _source_policy(self, ctx: TransferContext) -> PullCompressionPolicy:
        """Whether to accept gzip from the source: one adaptive choice per job."""
        if self._policy is None:
            self._policy = PullCompressionPolicy(ctx.compression)
        return self._policy

    def _changed_on_source(self, ctx: TransferContext, info: InstanceInfo, size: int,
                           digest: str) -> TransferFailed:
        return TransferFailed(
            f"instance {info.id} read from {self.source_label(ctx)} does not match the plan "
            f"(size {size} vs {info.size}, MD5 {digest} vs {info.md5}); "
            "was it modified during the transfer?", {info.id: "changed on the source"})

    def source_label(self, ctx: TransferContext) -> str:
        return ctx.source.peer.name

    async def encode_body(self, files: List[Tuple[str, bytes]]) -> bytes:
        """The upload body: the file itself, or a stored ZIP of several files."""
        if len(files) == 1:
            return files[0][1]
        return await asyncio.to_thread(zip_stored, files)

    # --- running ----------------------------------------------------------------

    async def run(self, ctx: TransferContext, buckets: List[Bucket]) -> None:
        by_id = {i.id: i for i in ctx.instances}
        units = [u for u in group_units(buckets, by_id)
                 if not all(i in ctx.done_buckets for i in u.indexes)]
        gate = asyncio.Semaphore(max(1, ctx.options.Threads))

        async def guarded(unit: Unit) -> None:
            async with gate:
                await self._unit(ctx, unit)

        tasks = [asyncio.ensure_future(guarded(u)) for u in units]
        if not tasks:
            return
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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

    async def _unit(self, ctx: TransferContext, unit: Unit) -> None:
        await ctx.wait_running()
        retries = ctx.options.MaxHttpRetries

        def on_retry(attempt: int, exc: OrthancError) -> None:
            self._event(ctx, unit, BucketState.RETRYING, retries=attempt, error=str(exc))

        try:
            if self.streams(ctx) and len(unit.instances) == 1 \
                    and unit.instances[0].size > ctx.options.bucket_size_bytes:
                await self._streamed_unit(ctx, unit, on_retry)
                return
            raw_done = 0
            self._event(ctx, unit, BucketState.READING)
            # The instances of a unit are read a few at a time: a bucket of
            # small instances read one by one costs one round trip each.
            gate = asyncio.Semaphore(READS_PER_UNIT)

            async def read(info: InstanceInfo) -> bytes:
                nonlocal raw_done
                async with gate:
                    data, _wire = await with_retries(lambda: self.read_instance(ctx, info),
                                                     retries, on_retry=on_retry)
                digest = await asyncio.to_thread(lambda: hashlib.md5(data).hexdigest())
                if len(data) != info.size or digest != info.md5:
                    raise self._changed_on_source(ctx, info, len(data), digest)
                raw_done += len(data)
                self._event(ctx, unit, BucketState.READING, raw_done=raw_done)
                return data

            contents = await _all_or_none([read(info) for info in unit.instances])
            files: List[Tuple[str, bytes]] = [(f"{info.id}.dcm", data)
                                              for info, data in zip(unit.instances, contents)]
            del contents

            await self._note_absent(ctx, unit, on_retry)
            if len(files) > 1:
                self._event(ctx, unit, BucketState.COMPRESSING, raw_done=raw_done)
            body = await self.encode_body(files)
            files.clear()
            await self._deliver(ctx, unit, lambda: ctx.target.upload(body), raw_done, len(body), on_retry)
        except asyncio.CancelledError:
            raise
        except TransferFailed as exc:
            self._event(ctx, unit, BucketState.FAILED, error=exc.reason)
            raise
        except OrthancError as exc:
            self._event(ctx, unit, BucketState.FAILED, error=str(exc))
            raise TransferFailed(str(exc), {i.id: str(exc) for i in unit.instances}) from None

    async def _note_absent(self, ctx: TransferContext, unit: Unit, on_retry: RetryHook) -> None:
        """Look before writing: only what is absent now is ours to delete later.
        Many instances: one listing of the job's resources on the target
        answers for all of them (see target_md5)."""
        many = len(unit.instances) > SMALL_GET_CONCURRENCY
        befores = await md5s_on(ctx.target, [i.id for i in unit.instances], bulk=False,
                                concurrency=len(unit.instances), retries=ctx.options.MaxHttpRetries,
                                resources=ctx.resources if many else None, on_retry=on_retry)
        for info in unit.instances:
            before = befores.get(info.id)
            if isinstance(before, OrthancError):
                raise before
            if before is None and info.id not in ctx.created_on_target:
                await ctx.mark_created(info.id)

    async def _deliver(self, ctx: TransferContext, unit: Unit, send: Callable[[], Awaitable[List[Dict[str, Any]]]],
                       raw_done: int, wire_total: int, on_retry: RetryHook) -> None:
        """Upload (``send``, retried), check Orthanc's answers, mark the unit done."""
        self._event(ctx, unit, BucketState.SENDING, raw_done=raw_done, wire_total=wire_total)
        # Shielded: a cancel must not leave an upload half-way whose import
        # lands after the rollback; discard() waits for these first.
        upload = asyncio.ensure_future(with_retries(send, ctx.options.MaxHttpRetries, on_retry=on_retry))
        self._in_flight.add(upload)
        upload.add_done_callback(self._in_flight.discard)
        answers = await asyncio.shield(upload)
        self._check_answers(ctx, unit, answers)
        self._event(ctx, unit, BucketState.DONE, raw_done=raw_done, wire_total=wire_total,
                    wire_done=wire_total)
        for index in unit.indexes:
            await ctx.mark_bucket_done(index)

    # --- large instances: through a file, never whole in memory ------------------------

    def streams(self, ctx: TransferContext) -> bool:
        """Whether instances larger than a bucket go through a scratch file
        (the memory bound is then ``Threads × 2 × BucketSize``, whatever the
        instance size): when they are read from the source server, not by a
        subclass's own reader (local files, pulled data)."""
        return type(self).read_instance is PlainTransport.read_instance

    async def upload_path(self, ctx: TransferContext, path: Path) -> List[Dict[str, Any]]:
        """Upload one scratch file (streamed) to the target."""
        return await ctx.target.upload_file(path)

    async def _streamed_unit(self, ctx: TransferContext, unit: Unit, on_retry: RetryHook) -> None:
        info = unit.instances[0]
        scratch = ctx.staging_dir / "plain"
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / f"{info.id}.dcm"
        try:
            self._event(ctx, unit, BucketState.READING)
            digest = await with_retries(lambda: self._download_to(ctx, unit, path),
                                        ctx.options.MaxHttpRetries, on_retry=on_retry)
            size = path.stat().st_size
            if size != info.size or digest != info.md5:
                raise self._changed_on_source(ctx, info, size, digest)
            await self._note_absent(ctx, unit, on_retry)
            await self._deliver(ctx, unit, lambda: self.upload_path(ctx, path), size, size, on_retry)
        finally:
            path.unlink(missing_ok=True)

    async def _download_to(self, ctx: TransferContext, unit: Unit, path: Path) -> str:
        """Stream the unit's instance into ``path``; its MD5, computed on the way."""
        with open(path, "wb") as handle:
            sink = _HashingSink(handle, lambda done: self._event(ctx, unit, BucketState.READING, raw_done=done))
            await download_instance_to(ctx.source, unit.instances[0].id, sink, self._source_policy(ctx))
        return sink.digest.hexdigest()

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
