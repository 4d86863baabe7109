"""Plain transport: stock Orthanc on both ends, only its REST API.

Instances are downloaded whole (stock Orthanc ignores ``Range``), with
``Accept-Encoding: gzip`` only where it pays (``source_download``); the small
instances of one bucket are uploaded together as one stored ZIP archive
(``POST /instances`` takes ZIPs), larger ones alone. At most ``Threads`` buckets are in flight, so memory stays
within about ``Threads × 2 × BucketSize`` plus one large instance per worker.

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
from typing import Dict, List, Sequence, Tuple

from gui.client.errors import OrthancError
from gui.engine.compression import PullCompressionPolicy
from gui.engine.events import BucketState, TransferMode
from gui.engine.source_download import download_instance
from gui.engine.target_md5 import SMALL_GET_CONCURRENCY, md5s_on
from gui.engine.retry import with_retries
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.protocol.wire import Bucket, InstanceInfo, plan_buckets

ACCEPTED_STATUSES = ("Success", "AlreadyStored")
# Instances of one unit downloaded at once.
READS_PER_UNIT = 8


async def _all_or_none(jobs: List) -> List:
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


class PlainTransport(Transport):
    mode = TransferMode.PLAIN

    def __init__(self) -> None:
        self._in_flight: "set[asyncio.Future]" = set()
        self._policy: "PullCompressionPolicy | None" = None

    def plan(self, ctx: TransferContext) -> List[Bucket]:
        return plan_buckets(ctx.instances, ctx.options.bucket_size_bytes)

    # --- reading (overridden by the local upload) ------------------------------

    async def read_instance(self, ctx: TransferContext, info: InstanceInfo) -> Tuple[bytes, int]:
        """The instance's bytes and how many bytes crossed the network for them."""
        if self._policy is None:
            self._policy = PullCompressionPolicy(ctx.compression)
        return await download_instance(ctx.source, info.id, self._policy)

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
                    raise TransferFailed(
                        f"instance {info.id} read from {self.source_label(ctx)} does not match the plan "
                        f"(size {len(data)} vs {info.size}, MD5 {digest} vs {info.md5}); "
                        "was it modified during the transfer?", {info.id: "changed on the source"})
                raw_done += len(data)
                self._event(ctx, unit, BucketState.READING, raw_done=raw_done)
                return data

            contents = await _all_or_none([read(info) for info in unit.instances])
            files: List[Tuple[str, bytes]] = [(f"{info.id}.dcm", data)
                                              for info, data in zip(unit.instances, contents)]
            del contents

            # Look before writing: only what is absent now is ours to delete later.
            # Many instances: one listing of the job's resources on the target
            # answers for all of them (see target_md5).
            many = len(unit.instances) > SMALL_GET_CONCURRENCY
            befores = await md5s_on(ctx.target, [i.id for i in unit.instances], bulk=False,
                                    concurrency=len(unit.instances), retries=retries,
                                    resources=ctx.resources if many else None, on_retry=on_retry)
            for info in unit.instances:
                before = befores.get(info.id)
                if isinstance(before, OrthancError):
                    raise before
                if before is None and info.id not in ctx.created_on_target:
                    await ctx.mark_created(info.id)

            if len(files) > 1:
                self._event(ctx, unit, BucketState.COMPRESSING, raw_done=raw_done)
            body = await self.encode_body(files)
            files.clear()
            self._event(ctx, unit, BucketState.SENDING, raw_done=raw_done, wire_total=len(body))
            # Shielded: a cancel must not leave an upload half-way whose import
            # lands after the rollback; discard() waits for these first.
            upload = asyncio.ensure_future(
                with_retries(lambda: ctx.target.upload(body), retries, on_retry=on_retry))
            self._in_flight.add(upload)
            upload.add_done_callback(self._in_flight.discard)
            answers = await asyncio.shield(upload)
            self._check_answers(ctx, unit, answers)
            self._event(ctx, unit, BucketState.DONE, raw_done=raw_done, wire_total=len(body),
                        wire_done=len(body))
            for index in unit.indexes:
                await ctx.mark_bucket_done(index)
        except asyncio.CancelledError:
            raise
        except TransferFailed as exc:
            self._event(ctx, unit, BucketState.FAILED, error=exc.reason)
            raise
        except OrthancError as exc:
            self._event(ctx, unit, BucketState.FAILED, error=str(exc))
            raise TransferFailed(str(exc), {i.id: str(exc) for i in unit.instances}) from None

    def _check_answers(self, ctx: TransferContext, unit: Unit, answers: List[dict]) -> None:
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
