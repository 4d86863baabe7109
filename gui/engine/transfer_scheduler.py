"""Running one job: plan → choose a transport → run → verify → report.

A :class:`JobRunner` owns one run of one job: its HTTP clients (every
request carries the job's ``sender-transfer-id``), the transport, the
aggregation of bucket events into job progress, the job store updates and
the final storage-commitment report. :class:`ConcurrencyGate` bounds how
many jobs move data at once; a paused job gives its place back.

Accelerated transports are imported lazily: an installation without them
falls back to plain mode in ``auto`` and refuses them when asked for.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import importlib
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Type

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.client.peer import Peer
from gui.config.settings import TransferOptions
from gui.engine import planner, verification
from gui.engine.events import (BucketProgress, BucketState, CommitmentReport, InstanceVerdict, JobFinished,
                               JobProgress, JobState, TransferMode)
from gui.engine.job_store import JobStore
from gui.engine.resend import verify_with_resends
from gui.engine.retry import with_retries
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.protocol import wire
from gui.protocol.wire import Bucket, InstanceInfo

if TYPE_CHECKING:
    from gui.engine.transfer_engine import Job

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.1     # seconds between two JobProgress events of one job
RATE_WINDOW = 3.0           # seconds of history for the live rates

TRANSPORTS: Dict[TransferMode, Tuple[str, str]] = {
    TransferMode.PLAIN: ("gui.engine.plain_mode", "PlainTransport"),
    TransferMode.PUSH: ("gui.engine.push_mode", "PushTransport"),
    TransferMode.PULL: ("gui.engine.pull_mode", "PullTransport"),
    TransferMode.DELEGATE: ("gui.engine.delegated_mode", "DelegatedTransport"),
}


def transport_class(mode: TransferMode) -> Optional[Type[Transport]]:
    """The transport class of a mode, or None when its module is not installed."""
    module_name, class_name = TRANSPORTS[mode]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        log.warning("%s transport cannot be loaded: %s", mode.value, exc)
        return None
    except Exception as exc:  # noqa: BLE001 - a broken optional transport must not break the engine
        log.warning("%s transport cannot be loaded: %s", mode.value, exc)
        return None
    return getattr(module, class_name, None)


def available_transports() -> Dict[TransferMode, bool]:
    return {mode: transport_class(mode) is not None for mode in TRANSPORTS}


def make_client(peer: Peer, options: TransferOptions, transfer_id: Optional[str]) -> OrthancClient:
    headers = {wire.SENDER_TRANSFER_ID_HEADER: transfer_id} if transfer_id else {}
    return OrthancClient(peer, timeout=float(options.HttpTimeout),
                         max_connections=max(4, options.Threads * 2 + 2), extra_headers=headers)


async def delegable(requested: str, source_speaks: bool, source: OrthancClient, target: OrthancClient,
                    retries: int) -> bool:
    """For auto: whether the source should send server to server (delegated_mode.should_delegate)."""
    if requested != "auto" or not source_speaks or transport_class(TransferMode.DELEGATE) is None:
        return False
    from gui.engine.delegated_mode import should_delegate
    return await should_delegate(source, target, retries)


async def probe(client: OrthancClient, retries: int) -> bool:
    """Whether the peer speaks the transfers protocol; unreachable peers raise."""
    return await with_retries(client.speaks_accelerator, retries)


class ConcurrencyGate:
    """At most ``limit`` jobs hold a place; FIFO."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(max(1, limit))

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()


class JobRunner:
    """One run of one job. Created by the engine; ``task`` runs :meth:`execute`."""

    def __init__(self, job: "Job", *, store: JobStore, gate: ConcurrencyGate,
                 source: Optional[Peer], target: Peer, emit: Callable[[object], None],
                 staging_root: Path, upload_files: Optional[Dict[str, Path]] = None,
                 start_paused: bool = False, cancel_only: bool = False) -> None:
        self.job = job
        self.store = store
        self.gate = gate
        self.source_peer = source
        self.target_peer = target
        self.emit = emit
        self.staging_root = staging_root
        self.upload_files = upload_files
        self.cancel_only = cancel_only
        self.running = asyncio.Event()
        self.paused = start_paused
        if not start_paused:
            self.running.set()
        self.stop_reason: Optional[str] = None     # "cancel" | "shutdown"
        self.has_slot = False
        self.task: "Optional[asyncio.Task[Optional[CommitmentReport]]]" = None
        self.ctx: Optional[TransferContext] = None
        self.transport: Optional[Transport] = None
        self.source: Optional[OrthancClient] = None
        self.target: Optional[OrthancClient] = None
        self.started = time.monotonic()
        self._last_progress = 0.0
        self._samples: "collections.deque[Tuple[float, int, int]]" = collections.deque()
        self._bucket_index: Dict[int, BucketProgress] = {}
        self._instances_total = 0
        self._raw_total = 0
        self._planned: List[InstanceInfo] = []
        self._statuses: Dict[str, str] = {}
        self._buckets: List[Bucket] = []
        # Running totals, updated per bucket event (jobs can have many thousands of buckets).
        self._raw_done = 0
        self._wire_done = 0
        self._buckets_done = 0
        self._instances_done = 0
        self._remaining: Dict[str, int] = {}     # instance -> its buckets not done yet

    # --- control ---------------------------------------------------------------

    def start(self) -> "asyncio.Task[Optional[CommitmentReport]]":
        self.task = asyncio.ensure_future(self.execute())
        return self.task

    def pause(self) -> None:
        if self.paused or self.job.state.finished:
            return
        self.paused = True
        self.running.clear()
        if self.has_slot:
            self.has_slot = False
            self.gate.release()
        self._set_state(JobState.PAUSED)

    async def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self._set_state(JobState.PENDING)
        asyncio.ensure_future(self._reacquire())

    async def _reacquire(self) -> None:
        await self.gate.acquire()
        if self.paused or self.has_slot or self.task is None or self.task.done():
            # Paused again meanwhile, or the run already holds a place.
            self.gate.release()
        else:
            self.has_slot = True
        if self.has_slot and not self.paused and not self.running.is_set():
            self._set_state(JobState.RUNNING)
            self.running.set()

    async def stop(self, reason: str) -> None:
        """Cancel the run; ``cancel`` rolls back, ``shutdown`` keeps the job resumable."""
        self.stop_reason = reason
        if self.ctx is not None:
            self.ctx.shutting_down = reason == "shutdown"
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    # --- state and events --------------------------------------------------------

    def _set_state(self, state: JobState, error: Optional[str] = None) -> None:
        self.job.state = state
        fields: Dict[str, object] = {"state": state.value}
        if error is not None:
            fields["error"] = error
        self.store.update_job(self.job.id, **fields)
        self._progress(force=True, error=error)

    def _progress(self, force: bool = False, error: Optional[str] = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        raw_done, wire_done = self._raw_done, self._wire_done
        self._samples.append((now, raw_done, wire_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        raw_rate = wire_rate = 0.0
        first = self._samples[0]
        if now - first[0] > 0.2:
            raw_rate = (raw_done - first[1]) / (now - first[0])
            wire_rate = (wire_done - first[2]) / (now - first[0])
        done_buckets, instances_done = self._buckets_done, self._instances_done
        progress = JobProgress(
            job_id=self.job.id, state=self.job.state, mode=self.job.mode,
            compression=self.job.compression, instances_total=self._instances_total,
            instances_done=instances_done, raw_total=self._raw_total, raw_done=raw_done,
            wire_done=wire_done, buckets_total=len(self._bucket_index), buckets_done=done_buckets,
            elapsed=now - self.started, raw_rate=max(0.0, raw_rate), wire_rate=max(0.0, wire_rate),
            error=error)
        self.job.progress = progress
        self.emit(progress)

    def _count(self, event: BucketProgress, sign: int) -> None:
        """Add (sign 1) or remove (sign -1) one bucket event from the running totals."""
        self._raw_done += sign * event.raw_done
        self._wire_done += sign * event.wire_done
        if event.state is BucketState.DONE:
            self._buckets_done += sign
            for instance_id in event.instance_ids:
                before = self._remaining.get(instance_id, 0)
                after = before - sign
                self._remaining[instance_id] = after
                if before > 0 and after == 0:
                    self._instances_done += 1
                elif before == 0 and after > 0:
                    self._instances_done -= 1

    def _on_bucket(self, event: BucketProgress) -> None:
        old = self._bucket_index.get(event.index)
        if old is not None:
            self._count(old, -1)
        self._count(event, 1)
        self._bucket_index[event.index] = event
        buckets = self.job.buckets
        if event.index < len(buckets):
            buckets[event.index] = event
        if event.state is BucketState.DONE:
            self.store.set_bucket_state(self.job.id, event.index, "done")
            self.store.set_instance_status(self.job.id, event.instance_ids, "sent")
        self.emit(event)
        self._progress(force=event.state is BucketState.FAILED)

    async def _checkpoint(self, key: str, value: object) -> None:
        if key == "bucket-done" and isinstance(value, int):
            self.store.set_bucket_state(self.job.id, value, "done")
        elif key == "created":
            self.store.mark_created(self.job.id, str(value))
        elif value is None:
            self.store.delete_checkpoint(self.job.id, key)
        else:
            self.store.set_checkpoint(self.job.id, key, value)

    # --- the run ---------------------------------------------------------------------

    async def execute(self) -> Optional[CommitmentReport]:
        self._set_state(JobState.PAUSED if self.paused else JobState.PENDING)
        try:
            report = await self._execute()
        except asyncio.CancelledError:
            if self.stop_reason == "shutdown":
                # Quitting: no rollback, the job stays resumable.
                self._set_state(JobState.PAUSED)
                await self._close_clients()
                self._release_slot()
                raise
            report = await self._rollback_and_report(JobState.CANCELED, "canceled by the user")
        except Exception as exc:  # noqa: BLE001 - e.g. the job database failing: end the job anyway
            log.exception("job %s: unexpected error", self.job.id)
            report = self._report(JobState.FAILURE, [], f"internal error: {type(exc).__name__}: {exc}")
        await self._close_clients()
        self._finish(report)
        # Released only once the job has reported its end, so that observers
        # never see more jobs running than the limit.
        self._release_slot()
        return report

    async def _execute(self) -> CommitmentReport:
        if self.cancel_only:
            raise asyncio.CancelledError()
        await self.gate.acquire()
        if self.paused or self.has_slot:
            self.gate.release()      # paused meanwhile, or a resume already got a place
        else:
            self.has_slot = True
            self.running.set()       # a pause then resume while waiting cleared it
        await self.running.wait()
        if not self.paused:
            self._set_state(JobState.RUNNING)
        self.started = time.monotonic()
        return await self._run()

    def _release_slot(self) -> None:
        if self.has_slot:
            self.has_slot = False
            self.gate.release()

    async def _run(self) -> CommitmentReport:
        job = self.job
        options = job.options
        self.target = make_client(self.target_peer, options, job.transfer_id)
        if self.source_peer is not None:
            self.source = make_client(self.source_peer, options, job.transfer_id)
        try:
            await self._prepare(plan_again=True)
            await self.running.wait()
            assert self.transport is not None and self.ctx is not None
            buckets = self._buckets
            await self.transport.run(self.ctx, buckets)
        except asyncio.CancelledError:
            raise
        except (TransferFailed, OrthancError, planner.PlanningError, wire.WireFormatError) as exc:
            reason = exc.reason if isinstance(exc, TransferFailed) else str(exc)
            return await self._rollback_and_report(JobState.FAILURE, reason)
        except Exception as exc:  # noqa: BLE001 - a bug must still end the job cleanly
            log.exception("job %s: unexpected error", job.id)
            return await self._rollback_and_report(JobState.FAILURE,
                                                   f"internal error: {type(exc).__name__}: {exc}")
        return await self._verify_and_report()

    async def _prepare(self, plan_again: bool) -> None:
        """Plan (or reload the plan), choose and set up the transport."""
        job = self.job
        assert self.target is not None
        options = job.options
        retries = options.MaxHttpRetries
        concurrency = max(2, options.Threads * 2)
        statuses = self.store.instance_statuses(job.id)
        sent_before = {i for i, s in statuses.items() if s == "sent"}
        created = self.store.created_instances(job.id)
        source_speaks = target_speaks = False

        if job.kind == "upload":
            from gui.engine.local_upload import LocalUploadTransport, scan_files
            if self.upload_files is None:
                files, _skipped = await asyncio.to_thread(scan_files, [Path(p) for p in job.upload_paths])
                self.upload_files = {f.info.id: f.path for f in files}
                instances = [f.info for f in files]
            else:
                known = {i.id: i for i in self.store.planned_instances(job.id)}
                instances = [known[i] for i in sorted(self.upload_files) if i in known]
            mode = TransferMode.UPLOAD
            transport: Transport = LocalUploadTransport(self.upload_files)
            if plan_again:
                plan = await planner.split_present(self.target, instances, concurrency=concurrency,
                                                   force=job.force, keep=sent_before, retries=retries)
            else:
                plan = planner.Plan(instances, instances, [])
        else:
            assert self.source is not None
            if plan_again:
                source_speaks = await probe(self.source, retries)
                target_speaks = await probe(self.target, retries)
                mode, why = planner.choose_mode(job.requested_mode, source_speaks=source_speaks,
                                                target_speaks=target_speaks,
                                                available=available_transports(),
                                                delegable=await delegable(job.requested_mode, source_speaks,
                                                                          self.source, self.target, retries))
                log.info("job %s: %s mode (%s)", job.id, mode.value, why)
                plan = await planner.make_plan(
                    self.source, self.target, job.resources, use_protocol=source_speaks,
                    concurrency=concurrency, force=job.force, keep=sent_before, retries=retries,
                    target_speaks=target_speaks)
            else:
                mode = TransferMode(job.mode) if job.mode else TransferMode.PLAIN
                instances = self.store.planned_instances(job.id)
                plan = planner.Plan(instances, instances, [])
            cls = transport_class(mode)
            if cls is None:
                raise planner.PlanningError(f"{mode.value} mode is not available in this installation")
            transport = cls()

        job.mode = mode
        compression = job.compression_requested or options.Compression
        job.compression = compression
        self.store.update_job(job.id, mode=mode.value, compression=compression)
        self.store.save_plan(job.id, plan.instances, "planned")
        self._planned = plan.instances
        present_ids = {i.id for i in plan.present}
        self._statuses = {i.id: ("skipped-present" if i.id in present_ids else "transferred")
                          for i in plan.instances}

        # Bucket states of an earlier run only apply to the very same list of instances.
        plan_key = hashlib.sha1(".".join(i.id for i in plan.to_send).encode()).hexdigest()
        saved = self.store.checkpoints(job.id)
        done = self.store.done_buckets(job.id)
        if saved.get("_plan") != plan_key:
            self.store.reset_buckets(job.id)
            done = set()
            self.store.set_checkpoint(job.id, "_plan", plan_key)
        saved_state = {k: v for k, v in saved.items() if not k.startswith("_")}

        staging = self.staging_root / job.id
        self.ctx = TransferContext(
            job_id=job.id, transfer_id=job.transfer_id, source=self.source,  # type: ignore[arg-type]
            target=self.target, instances=plan.to_send, options=options,
            compression=compression, staging_dir=staging, report_bucket=self._on_bucket,
            done_buckets=set(done), checkpoint=self._checkpoint, saved_state=saved_state,
            running=self.running, created_on_target=set(created),
            resources=list(job.resources or []) if job.kind != "upload" else [])
        self.ctx.source_accelerated = source_speaks
        self.ctx.target_accelerated = target_speaks
        self.transport = transport
        if not plan_again:
            self._buckets = []
            return
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._buckets = transport.plan(self.ctx)
        self._instances_total = len(plan.to_send)
        self._raw_total = plan.bytes_to_send
        self.job.buckets = []
        for bucket in self._buckets:
            for instance_id in bucket.instance_ids():
                self._remaining[instance_id] = self._remaining.get(instance_id, 0) + 1
        for index, bucket in enumerate(self._buckets):
            state = BucketState.DONE if index in done else BucketState.QUEUED
            event = BucketProgress(job_id=job.id, index=index, state=state, chunks=len(bucket.chunks),
                                   instance_ids=bucket.instance_ids(), raw_total=bucket.total_size,
                                   raw_done=bucket.total_size if state is BucketState.DONE else 0)
            self.job.buckets.append(event)
            self._count(event, 1)
            self._bucket_index[index] = event
            self.emit(event)
        self._progress(force=True)

    async def _verify_and_report(self) -> CommitmentReport:
        job = self.job
        assert self.target is not None
        concurrency = max(2, job.options.Threads * 2)
        bulk = self.ctx is not None and self.ctx.target_accelerated
        # MD5s the transport read back after each upload need no second
        # request; instances that fail the read-back are re-sent first (resend.py).
        verdicts = await verify_with_resends(self.ctx, self.transport, self._planned, self._statuses,
                                             concurrency=concurrency, bulk=bulk)
        if all(v.verified for v in verdicts):
            return self._report(JobState.SUCCESS, verdicts, None)
        bad = [v for v in verdicts if not v.verified]
        error = (f"{len(bad)} of {len(verdicts)} instance(s) not verified on "
                 f"{self.target_peer.name}: {bad[0].instance_id}: {bad[0].reason}")
        # All or nothing: what this job created goes away again.
        rollback_error = await self._discard()
        if rollback_error:
            error += f"; {rollback_error}"
        return self._report(JobState.FAILURE, verdicts, error)

    async def _discard(self) -> Optional[str]:
        if self.transport is None or self.ctx is None:
            return None
        try:
            await self.transport.discard(self.ctx)
        except TransferFailed as exc:
            return exc.reason
        except OrthancError as exc:
            return f"rollback incomplete: {exc}"
        except Exception as exc:  # noqa: BLE001
            log.exception("job %s: discard failed", self.job.id)
            return f"rollback failed: {type(exc).__name__}: {exc}"
        self.store.clear_created(self.job.id)
        for key in list(self.ctx.saved_state):
            self.store.delete_checkpoint(self.job.id, key)
        self.store.reset_buckets(self.job.id)
        self.store.set_instance_status(self.job.id, [i.id for i in self._planned], "planned")
        return None

    async def _rollback_and_report(self, state: JobState, reason: str) -> CommitmentReport:
        if self.cancel_only and self.transport is None:
            # A job loaded from disk: build enough of a context to undo its work.
            try:
                self.target = make_client(self.target_peer, self.job.options, self.job.transfer_id)
                if self.source_peer is not None:
                    self.source = make_client(self.source_peer, self.job.options, self.job.transfer_id)
                await self._prepare(plan_again=False)
            except Exception as exc:  # noqa: BLE001
                reason += f"; cannot roll back: {exc}"
        rollback_error = await self._discard()
        if rollback_error:
            reason = f"{reason}; {rollback_error}"
        statuses = {i: ("not-sent" if s == "transferred" else s) for i, s in self._statuses.items()}
        verdicts = verification.unverified(self._planned, statuses, reason)
        return self._report(state, verdicts, reason)

    def _report(self, state: JobState, verdicts: List[InstanceVerdict], error: Optional[str]) -> CommitmentReport:
        job = self.job
        if self.ctx is not None and self.ctx.compression_used:
            job.compression = self.ctx.compression_used
        elif job.mode in (TransferMode.PLAIN, TransferMode.UPLOAD):
            job.compression = "none"   # ZIP stored; downloads use HTTP gzip transparently
        raw = sum(b.raw_done for b in self._bucket_index.values() if b.state is BucketState.DONE)
        wire_bytes = self._wire_done
        report = verification.build_report(
            job.id, state=state, mode=job.mode, source=job.source_name, target=job.target_name,
            verdicts_=verdicts, bytes_=raw, wire_bytes=wire_bytes,
            seconds=time.monotonic() - self.started, error=error, compression=job.compression,
            notes=self.ctx.notes if self.ctx is not None else None)
        if self.ctx is not None:
            report.resent = self.ctx.resends.report()
        return report

    def _finish(self, report: CommitmentReport) -> None:
        job = self.job
        job.report = report
        job.state = report.state
        self.store.update_job(job.id, state=report.state.value, error=report.error,
                              report=report.to_json())
        self._progress(force=True, error=report.error)
        # The job's scratch space is only needed to resume; a finished job has none.
        shutil.rmtree(self.staging_root / job.id, ignore_errors=True)
        self.emit(JobFinished(job.id, report))
        job._finished.set()

    async def _close_clients(self) -> None:
        for client in (self.source, self.target):
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # noqa: BLE001 - closing must not mask the result
                    pass
        self.source = self.target = None


def new_transfer_id() -> str:
    return str(uuid.uuid4())
