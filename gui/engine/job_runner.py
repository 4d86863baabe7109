"""Running one job: plan → choose a transport → run → verify → report.

A :class:`JobRunner` owns one run of one job: its HTTP clients (every
request carries the job's ``sender-transfer-id``), the transport (taken
from the engine's :class:`TransportRegistry`), the job store updates and
the final storage-commitment report. Its neighbours do one job each:
:class:`ConcurrencyGate` (how many jobs move data at once; a paused job
gives its place back), :class:`ProgressTracker` (bucket events folded into
job progress and rates).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.client.peer import Peer
from gui.client.rate_limit import RateLimit
from gui.config.settings import TransferOptions
from gui.engine import identity, planner, verification
from gui.engine.concurrency_gate import ConcurrencyGate
from gui.engine.events import (BucketProgress, BucketState, CommitmentReport, InstanceStatus, InstanceVerdict,
                               JobFinished, JobPhase, JobState, TransferMode)
from gui.engine.job import Job
from gui.engine.job_source import Planning, source_of
from gui.engine.journal import Journal, plan_key
from gui.engine.job_store import JobStore
from gui.engine.progress import ProgressTracker
from gui.engine.resend import verify_with_resends
from gui.engine.source_md5 import DeferredSourceMd5s, SourceMd5Error, filled, pending
from gui.engine.transport_base import TransferContext, TransferFailed, Transport
from gui.engine.transport_registry import TransportRegistry
from gui.protocol import wire
from gui.protocol.wire import Bucket, InstanceInfo

log = logging.getLogger(__name__)


# Seconds the report waits, once the transfer is over, for the instances' DICOM names.
IDENTIFY_GRACE = 15.0


class StopReason(enum.Enum):
    CANCEL = "cancel"        # the user's: roll back, the job ends Canceled
    SHUTDOWN = "shutdown"    # the app or engine closes: the job stays resumable (Paused)


def make_client(peer: Peer, options: TransferOptions, transfer_id: Optional[str],
                rate_limit: Optional[RateLimit] = None) -> OrthancClient:
    headers = {wire.SENDER_TRANSFER_ID_HEADER: transfer_id} if transfer_id else {}
    return OrthancClient(peer, timeout=float(options.HttpTimeout),
                         max_connections=max(4, options.Threads * 2 + 2), extra_headers=headers,
                         rate_limit=rate_limit)


class JobRunner:
    """One run of one job. Created by the engine; ``task`` runs :meth:`execute`."""

    def __init__(self, job: Job, *, store: JobStore, gate: ConcurrencyGate, transports: TransportRegistry,
                 source: Optional[Peer], target: Peer, emit: Callable[[object], None],
                 staging_root: Path, upload_files: Optional[Dict[str, Path]] = None,
                 start_paused: bool = False, cancel_only: bool = False,
                 rate_limit: Optional[RateLimit] = None) -> None:
        self.job = job
        # The job's bandwidth caps (its own and the global one): both clients spend on them.
        self.rate_limit = rate_limit
        self.store = store
        self.gate = gate
        self.transports = transports
        self.source_peer = source
        self.target_peer = target
        self.emit = emit
        self.staging_root = staging_root
        # Where the instances come from: an Orthanc peer, or files on this computer.
        self.job_source = source_of(job, upload_files)
        self.cancel_only = cancel_only
        self.running = asyncio.Event()
        self.paused = start_paused
        if not start_paused:
            self.running.set()
        self.stop_reason: Optional[StopReason] = None
        self.has_slot = False
        self.task: "Optional[asyncio.Task[Optional[CommitmentReport]]]" = None
        self.ctx: Optional[TransferContext] = None
        self.transport: Optional[Transport] = None
        self.source: Optional[OrthancClient] = None
        self._identity: Optional["asyncio.Future[identity.Identity]"] = None
        self.target: Optional[OrthancClient] = None
        self.tracker = ProgressTracker(job.id)
        self.phase: Optional[JobPhase] = None
        self._planned: List[InstanceInfo] = []
        self._planning_seconds: Optional[float] = None
        self._statuses: Dict[str, InstanceStatus] = {}
        self._buckets: List[Bucket] = []

    # --- control ---------------------------------------------------------------

    def start(self) -> "asyncio.Task[Optional[CommitmentReport]]":
        self.task = asyncio.ensure_future(self.execute())
        return self.task

    def pause(self) -> None:
        if self.paused or self.job.state.finished:
            return
        self.paused = True
        self.running.clear()
        self.tracker.pause_clock()
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
            self.tracker.resume_clock()
            self._set_state(JobState.RUNNING)
            self.running.set()

    async def stop(self, reason: StopReason) -> None:
        """Cancel the run: CANCEL rolls back, SHUTDOWN keeps the job resumable."""
        self.stop_reason = reason
        if self.ctx is not None:
            self.ctx.shutting_down = reason is StopReason.SHUTDOWN
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
        if not self.tracker.due(force):
            return
        if (self.phase is JobPhase.SENDING and self.job.mode is TransferMode.PUSH
                and self.tracker.all_buckets_done):
            self.phase = JobPhase.COMMITTING   # every bucket is on the target: its commit runs
        progress = self.tracker.snapshot(self.job.state, self.job.mode, self.job.compression, error)
        progress.phase = None if self.job.state.finished else self.phase
        self.job.progress = progress
        self.emit(progress)

    def _on_found(self, count: int) -> None:
        """Planning found ``count`` instances so far: say so (once per listed resource, so
        not throttled: the user sees the count grow however fast planning goes)."""
        self.tracker.due(force=True)
        progress = self.tracker.snapshot(self.job.state, self.job.mode, self.job.compression)
        progress.phase, progress.instances_found = JobPhase.PLANNING, count
        self.job.progress = progress
        self.emit(progress)

    def _on_bucket(self, event: BucketProgress) -> None:
        self.tracker.on_bucket(event)
        buckets = self.job.buckets
        if event.index < len(buckets):
            buckets[event.index] = event
        if event.state is BucketState.DONE:
            self.store.set_bucket_state(self.job.id, event.index, "done")
            self.store.set_instance_status(self.job.id, event.instance_ids, InstanceStatus.SENT)
        self.emit(event)
        all_done = event.state is BucketState.DONE and self.tracker.all_buckets_done
        # The last bucket done starts the commit: say so at once, not at the next tick.
        self._progress(force=event.state is BucketState.FAILED
                       or (all_done and self.phase is JobPhase.SENDING and self.job.mode is TransferMode.PUSH))

    # --- the run ---------------------------------------------------------------------

    async def execute(self) -> Optional[CommitmentReport]:
        self._set_state(JobState.PAUSED if self.paused else JobState.PENDING)
        try:
            report = await self._execute()
        except asyncio.CancelledError:
            if self.stop_reason is StopReason.SHUTDOWN:
                # Quitting: no rollback, the job stays resumable.
                self._set_state(JobState.PAUSED)
                if self._identity is not None:
                    self._identity.cancel()
                    self._identity = None
                await self._close_clients()
                self._release_slot()
                raise
            report = await self._rollback_and_report(JobState.CANCELED, "canceled by the user")
        except Exception as exc:  # noqa: BLE001 - e.g. the job database failing: end the job anyway
            log.exception("job %s: unexpected error", self.job.id)
            report = self._report(JobState.FAILURE, [], f"internal error: {type(exc).__name__}: {exc}")
        await self._identify(report)
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
        self.phase = JobPhase.PLANNING
        if not self.paused:
            self._set_state(JobState.RUNNING)
        self.tracker.restart_clock()
        return await self._run()

    def _release_slot(self) -> None:
        if self.has_slot:
            self.has_slot = False
            self.gate.release()

    async def _run(self) -> CommitmentReport:
        job = self.job
        options = job.options
        self.target = make_client(self.target_peer, options, job.transfer_id, self.rate_limit)
        if self.source_peer is not None:
            self.source = make_client(self.source_peer, options, job.transfer_id, self.rate_limit)
        try:
            started = time.monotonic()
            await self._prepare(plan_again=True)
            self._planning_seconds = time.monotonic() - started
            if self.source is not None and job.kind != "upload":
                # The audit record's names, asked beside the transfer (not before it).
                self._identity = asyncio.ensure_future(
                    identity.identify_quietly(self.source, self.job_source.resources(job)))
            await self.running.wait()
            assert self.transport is not None and self.ctx is not None
            buckets = self._buckets
            self._enter(JobPhase.SENDING)
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
        self._enter(JobPhase.VERIFYING)
        return await self._verify_and_report()

    def _enter(self, phase: JobPhase) -> None:
        self.phase = phase
        self._progress(force=True)

    async def _prepare(self, plan_again: bool) -> None:
        """Plan (or reload the plan), choose and set up the transport."""
        job = self.job
        assert self.target is not None
        options = job.options
        retries = options.MaxHttpRetries
        concurrency = max(2, options.Threads * 2)
        statuses = self.store.instance_statuses(job.id)
        sent_before = {i for i, s in statuses.items() if s == InstanceStatus.SENT}
        journal = Journal(self.store, job.id)

        chosen = await self.job_source.plan_run(Planning(
            job=job, store=self.store, target=self.target, source=self.source, transports=self.transports,
            plan_again=plan_again, sent_before=sent_before, concurrency=concurrency, retries=retries,
            on_found=self._on_found))
        mode, transport, plan = chosen.mode, chosen.transport, chosen.plan
        source_speaks, target_speaks = chosen.source_speaks, chosen.target_speaks

        job.mode = mode
        compression = job.compression_requested or options.Compression
        job.compression = compression
        self.store.update_job(job.id, mode=mode.value, compression=compression)
        self.store.save_plan(job.id, plan.instances, InstanceStatus.PLANNED)
        self._planned = plan.instances
        present_ids = {i.id for i in plan.present}
        self._statuses = {i.id: (InstanceStatus.SKIPPED_PRESENT if i.id in present_ids
                                 else InstanceStatus.TRANSFERRED)
                          for i in plan.instances}

        # Bucket states of an earlier run only apply to the very same list of instances.
        done = journal.start_plan(plan_key(plan.to_send))

        staging = self.staging_root / job.id
        self.ctx = TransferContext(
            job_id=job.id, transfer_id=job.transfer_id, source=self.source,  # type: ignore[arg-type]
            target=self.target, instances=plan.to_send, options=options,
            compression=compression, staging_dir=staging, report_bucket=self._on_bucket,
            done_buckets=set(done), journal=journal,
            running=self.running, created_on_target=journal.created_instances(),
            resources=self.job_source.resources(job))
        self.ctx.source_accelerated = source_speaks
        self.ctx.target_accelerated = target_speaks
        left = pending(plan.to_send)
        if left and self.source is not None and plan_again:
            # Asked beside the transfer, in its order (source_md5.py), from
            # when the transport has measured its links (or first needs one).
            self.ctx.source_md5s = DeferredSourceMd5s(self.source, left, retries=retries)
        self.transport = transport
        if not plan_again:
            self._buckets = []
            return
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._buckets = transport.plan(self.ctx)
        self.job.buckets = self.tracker.plan(self._buckets, set(done), len(plan.to_send), plan.bytes_to_send)
        for event in self.job.buckets:
            self.emit(event)
        self._progress(force=True)

    async def _verify_and_report(self) -> CommitmentReport:
        job = self.job
        assert self.target is not None
        concurrency = max(2, job.options.Threads * 2)
        bulk = self.ctx is not None and self.ctx.target_accelerated
        if self.ctx is not None and self.ctx.source_md5s is not None:
            try:
                found = await self.ctx.source_md5s.all()
            except SourceMd5Error as exc:
                return await self._rollback_and_report(JobState.FAILURE, str(exc))
            self._planned = filled(self._planned, found)
            self.ctx.instances = filled(self.ctx.instances, found)
            self.store.set_md5s(job.id, found)
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
        self.ctx.journal.forget_run()
        self.store.set_instance_status(self.job.id, [i.id for i in self._planned], InstanceStatus.PLANNED)
        return None

    async def _rollback_and_report(self, state: JobState, reason: str) -> CommitmentReport:
        if self.cancel_only and self.transport is None:
            # A job loaded from disk: build enough of a context to undo its work.
            try:
                self.target = make_client(self.target_peer, self.job.options, self.job.transfer_id, self.rate_limit)
                if self.source_peer is not None:
                    self.source = make_client(self.source_peer, self.job.options, self.job.transfer_id, self.rate_limit)
                await self._prepare(plan_again=False)
            except Exception as exc:  # noqa: BLE001
                reason += f"; cannot roll back: {exc}"
        rollback_error = await self._discard()
        if rollback_error:
            reason = f"{reason}; {rollback_error}"
        statuses = {i: (InstanceStatus.NOT_SENT if s == InstanceStatus.TRANSFERRED else s)
                    for i, s in self._statuses.items()}
        verdicts = verification.unverified(self._planned, statuses, reason)
        return self._report(state, verdicts, reason)

    async def _identify(self, report: CommitmentReport) -> None:
        """Name the report's instances by SOP Instance UID, with patient, study and series."""
        report.finished_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        task, self._identity = self._identity, None
        if task is None:
            return
        if not report.instances:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        # Names are worth a short wait, not a report held back by a source that stopped answering.
        done, _ = await asyncio.wait({task}, timeout=IDENTIFY_GRACE)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        found = task.result()
        for v in report.instances:
            v.sop_instance_uid, v.series_id = found.instances.get(v.instance_id, ("", ""))
        used = {v.series_id for v in report.instances}
        report.series = {k: tags for k, tags in found.series.items() if k in used}

    def _report(self, state: JobState, verdicts: List[InstanceVerdict], error: Optional[str]) -> CommitmentReport:
        job = self.job
        if self.ctx is not None and self.ctx.compression_used:
            job.compression = self.ctx.compression_used
        elif job.mode in (TransferMode.PLAIN, TransferMode.UPLOAD):
            job.compression = "none"   # ZIP stored; downloads use HTTP gzip transparently
        raw = self.tracker.raw_done_in_done_buckets()
        wire_bytes = self.tracker.wire_done
        report = verification.build_report(
            job.id, state=state, mode=job.mode, source=job.source_name, target=job.target_name,
            verdicts_=verdicts, bytes_=raw, wire_bytes=wire_bytes,
            seconds=self.tracker.elapsed(), error=error, compression=job.compression,
            notes=self.ctx.notes if self.ctx is not None else None)
        if self.ctx is not None:
            report.resent = self.ctx.resends.report()
        report.planning_seconds = self._planning_seconds
        if self.rate_limit is not None and self.rate_limit.buckets:
            report.speed_limit = self.rate_limit.buckets[0].accounting()   # the job's own bucket
        return report

    def _finish(self, report: CommitmentReport) -> None:
        job = self.job
        job.report = report
        job.state = report.state
        self.store.update_job(job.id, state=report.state.value, error=report.error,
                              report=report.to_json())
        if report.state is JobState.SUCCESS or not self.store.created_instances(job.id):
            # The report holds what the export needs; the plan, buckets and
            # checkpoints only served a resume or a rollback, and a finished job
            # has neither left (unless a rollback failed: it keeps its list).
            self.store.clear_run_state(job.id)
        self._progress(force=True, error=report.error)
        # The job's scratch space is only needed to resume; a finished job has none.
        shutil.rmtree(self.staging_root / job.id, ignore_errors=True)
        self.emit(JobFinished(job.id, report))
        job._finished.set()

    async def _close_clients(self) -> None:
        if self.ctx is not None and self.ctx.source_md5s is not None:
            await self.ctx.source_md5s.close()
        for client in (self.source, self.target):
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # noqa: BLE001 - closing must not mask the result
                    pass
        self.source = self.target = None


def new_transfer_id() -> str:
    return str(uuid.uuid4())
