"""The transfer engine: jobs, their control, their events. Pure asyncio, no Qt.

See ``docs/engine-api.md`` for the contract with the UI, the CLI and tests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from gui.client.peer import Peer
from gui.config.settings import ConfigError, TransferOptions, default_data_dir
from gui.engine import planner
from gui.engine.events import (BucketProgress, CommitmentReport, EngineEvent, InstanceVerdict,
                               JobProgress, JobState, TransferMode)
from gui.engine.job_store import JobRecord, JobStore
from gui.engine.target_capacity import recycling_warning
from gui.engine.transfer_scheduler import (ConcurrencyGate, JobRunner, available_transports, delegable,
                                           make_client, new_transfer_id, probe)
from gui.protocol.wire import plan_buckets

log = logging.getLogger(__name__)

LOCAL_SOURCE = "local files"


class EngineError(Exception):
    """A request to the engine cannot be honoured (unknown job, wrong state...)."""


@dataclass
class PlanSummary:
    mode: TransferMode
    compression: str
    instances: int
    bytes: int
    already_present: int
    buckets: int
    # Said before the transfer starts, e.g. that the target would recycle
    # (delete) other patients to make room (target_capacity).
    warnings: List[str] = field(default_factory=list)


@dataclass(eq=False)
class Job:
    id: str
    source_name: str
    target_name: str
    description: str
    resources: List[Dict[str, Any]]
    state: JobState
    mode: Optional[TransferMode] = None
    progress: Optional[JobProgress] = None
    buckets: List[BucketProgress] = field(default_factory=list)
    report: Optional[CommitmentReport] = None
    # Not part of the UI contract, but useful to it and to the CLI:
    kind: str = "transfer"
    source_url: str = ""
    target_url: str = ""
    requested_mode: str = "auto"
    compression_requested: Optional[str] = None
    compression: Optional[str] = None
    force: bool = False
    options: TransferOptions = field(default_factory=TransferOptions)
    transfer_id: str = ""
    created: float = field(default_factory=time.time)
    upload_paths: List[str] = field(default_factory=list)   # local files/folders (upload jobs)
    _finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        if self.progress is None:
            self.progress = JobProgress(self.id, self.state, self.mode, None, 0, 0, 0, 0, 0, 0, 0, 0.0)
        if self.state.finished:
            self._finished.set()

    async def wait(self) -> CommitmentReport:
        """Until the job is finished (Success, Failure or Canceled); its report."""
        while True:
            await self._finished.wait()
            if self.report is not None and self.state.finished:
                return self.report
            self._finished.clear()

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id, kind=self.kind, source_name=self.source_name, source_url=self.source_url,
            target_name=self.target_name, target_url=self.target_url,
            resources=self.upload_paths if self.kind == "upload" else self.resources,
            options=self.options.to_json(), requested_mode=self.requested_mode,
            transfer_id=self.transfer_id, state=self.state.value,
            mode=self.mode.value if self.mode else None, compression=self.compression_requested,
            force=self.force, description=self.description, created=self.created)


def report_from_json(data: Dict[str, Any]) -> CommitmentReport:
    """Rebuild a stored report (``CommitmentReport.to_json()``)."""
    verdicts = [InstanceVerdict(**d) for d in data.get("details", [])]
    return CommitmentReport(
        job_id=data["job"], state=JobState(data["state"]),
        mode=TransferMode(data["mode"]) if data.get("mode") else None,
        source=data.get("source", ""), target=data.get("target", ""), instances=verdicts,
        bytes=data.get("bytes", 0), wire_bytes=data.get("wire_bytes", 0),
        seconds=data.get("seconds", 0.0), error=data.get("error"), compression=data.get("compression"),
        notes=list(data.get("notes") or []),
        resent=list(data.get("resent") or []))


def default_peer_resolver(name: str, url: str) -> Peer:
    """Credentials are never stored with jobs: find the peer again in the configuration
    (same name and URL), else use the bare URL."""
    try:
        from gui.config.settings import load_config
        for peer in load_config().peers:
            if peer.name == name and peer.url == url:
                return peer
    except (ConfigError, OSError) as exc:
        log.warning("cannot read the configuration to resume a job: %s", exc)
    return Peer(name=name, url=url)


class TransferEngine:
    def __init__(self, options: Optional[TransferOptions] = None, *, data_dir: Optional[Path] = None,
                 max_concurrent_jobs: Optional[int] = None,
                 peer_resolver: Callable[[str, str], Peer] = default_peer_resolver) -> None:
        self.options = options or TransferOptions()
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.max_concurrent_jobs = max_concurrent_jobs or self.options.MaxConcurrentJobs
        self.peer_resolver = peer_resolver
        self._store: Optional[JobStore] = None
        self._jobs: Dict[str, Job] = {}
        self._runners: Dict[str, JobRunner] = {}
        self._peers: Dict[str, Tuple[Optional[Peer], Peer]] = {}
        self._uploads: Dict[str, Dict[str, Path]] = {}
        self._subscribers: List[Callable[[EngineEvent], None]] = []
        self._gate: Optional[ConcurrencyGate] = None

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._store = JobStore(self.data_dir)
        self._gate = ConcurrencyGate(self.max_concurrent_jobs)
        for record in self._store.load_jobs():
            state = JobState(record.state)
            if not state.finished and state is not JobState.PAUSED:
                # Interrupted by a crash or a kill: back as paused, resumable.
                state = JobState.PAUSED
                self._store.update_job(record.id, state=state.value)
            job = self._job_from_record(record, state)
            self._jobs[job.id] = job

    async def close(self) -> None:
        """Stop running jobs without rolling back: they stay resumable (paused)."""
        for runner in list(self._runners.values()):
            await runner.stop("shutdown")
        self._runners.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> "TransferEngine":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise EngineError("the engine is not started (call await engine.start())")
        return self._store

    def set_options(self, options: TransferOptions) -> None:
        """Options for the jobs submitted from now on (Settings saved); running and paused
        jobs keep the options they started with."""
        self.options = options

    # --- events ----------------------------------------------------------------------

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def _emit(self, event: object) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - an observer's bug must not stop a transfer
                log.exception("engine event subscriber failed")

    # --- planning and submitting ----------------------------------------------------

    async def plan(self, source: Peer, target: Peer, resources: List[Dict[str, Any]],
                   options: Optional[TransferOptions] = None, *, mode: str = "auto",
                   force: bool = False) -> PlanSummary:
        options = options or self.options
        resources = planner.check_resources(resources)
        async with make_client(source, options, None) as src, make_client(target, options, None) as dst:
            source_speaks = await probe(src, options.MaxHttpRetries)
            target_speaks = await probe(dst, options.MaxHttpRetries)
            chosen, _why = planner.choose_mode(mode, source_speaks=source_speaks,
                                               target_speaks=target_speaks,
                                               available=available_transports(),
                                               delegable=await delegable(mode, source_speaks, src, dst,
                                                                         options.MaxHttpRetries))
            result = await planner.make_plan(src, dst, resources, use_protocol=source_speaks,
                                             concurrency=max(2, options.Threads * 2), force=force,
                                             retries=options.MaxHttpRetries)
            warning = await recycling_warning(src, dst, resources, result.bytes_to_send)
        buckets = plan_buckets(result.to_send, options.bucket_size_bytes)
        return PlanSummary(chosen, options.Compression, len(result.instances), result.bytes_to_send,
                           len(result.present), len(buckets), [warning] if warning else [])

    async def submit(self, source: Peer, target: Peer, resources: List[Dict[str, Any]],
                     options: Optional[TransferOptions] = None, *, mode: str = "auto",
                     compression: Optional[str] = None, force: bool = False,
                     description: str = "") -> Job:
        if mode not in planner.MODE_NAMES:
            raise EngineError(f"unknown mode {mode!r} (use {', '.join(planner.MODE_NAMES)})")
        if compression is not None and compression not in ("gzip", "none", "auto"):
            raise EngineError(f"unknown compression {compression!r} (use gzip, none or auto)")
        try:
            resources = planner.check_resources(resources)
        except planner.PlanningError as exc:
            raise EngineError(str(exc)) from None
        job = Job(id=str(uuid.uuid4()), source_name=source.name, target_name=target.name,
                  description=description or _describe(resources), resources=resources,
                  state=JobState.PENDING, source_url=source.url, target_url=target.url,
                  requested_mode=mode, compression_requested=compression, force=force,
                  options=options or self.options, transfer_id=new_transfer_id())
        self.store.save_job(job.record())
        self._jobs[job.id] = job
        self._peers[job.id] = (source, target)
        self._launch(job)
        return job

    async def upload_files(self, target: Peer, paths: List[Path],
                           options: Optional[TransferOptions] = None
                           ) -> Tuple[Optional[Job], List[Tuple[Path, str]]]:
        from gui.engine.local_upload import scan_files
        files, skipped = await asyncio.to_thread(scan_files, [Path(p) for p in paths])
        if not files:
            return None, skipped
        names = ", ".join(p.name for p in list(map(Path, paths))[:3])
        job = Job(id=str(uuid.uuid4()), source_name=LOCAL_SOURCE, target_name=target.name,
                  description=f"{len(files)} local file(s) from {names}",
                  resources=[], upload_paths=[str(Path(p).resolve()) for p in paths],
                  state=JobState.PENDING,
                  kind="upload", source_url="file://", target_url=target.url, requested_mode="plain",
                  options=options or self.options, transfer_id=new_transfer_id())
        self.store.save_job(job.record())
        self.store.save_plan(job.id, [f.info for f in files], "planned")
        self._jobs[job.id] = job
        self._peers[job.id] = (None, target)
        self._uploads[job.id] = {f.info.id: f.path for f in files}
        self._launch(job)
        return job, skipped

    # --- queries ------------------------------------------------------------------------

    def jobs(self) -> List[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created)

    def job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            matches = [j for j in self._jobs.values() if j.id.startswith(job_id)] if len(job_id) >= 4 else []
            if len(matches) == 1:
                return matches[0]
            raise EngineError(f"no job {job_id!r}")
        return job

    # --- control ----------------------------------------------------------------------------

    async def pause(self, job_id: str) -> None:
        job = self.job(job_id)
        runner = self._runners.get(job.id)
        if job.state.finished:
            raise EngineError(f"job {job.id} is finished ({job.state.value}); it cannot be paused")
        if runner is not None:
            runner.pause()

    async def resume(self, job_id: str, *, source: Optional[Peer] = None,
                     target: Optional[Peer] = None) -> None:
        """Resume a paused job. ``source``/``target`` give credentials for a job loaded
        from disk whose peers are not in the configuration (e.g. URLs on the command line)."""
        job = self.job(job_id)
        if job.state.finished:
            raise EngineError(f"job {job.id} is finished ({job.state.value}); use resubmit")
        if source is not None or target is not None:
            old_source, old_target = self._peers_of(job)
            self._peers[job.id] = (source or old_source, target or old_target)
        runner = self._runners.get(job.id)
        if runner is not None and runner.task is not None and not runner.task.done():
            await runner.resume()
            return
        self._launch(job)

    async def cancel(self, job_id: str) -> None:
        job = self.job(job_id)
        if job.state.finished:
            return
        runner = self._runners.get(job.id)
        if runner is not None and runner.task is not None and not runner.task.done():
            await runner.stop("cancel")
            return
        # A paused job from an earlier session: undo what it did on the target.
        runner = self._new_runner(job, cancel_only=True)
        await runner.start()

    async def resubmit(self, job_id: str) -> Job:
        job = self.job(job_id)
        if not job.state.finished:
            raise EngineError(f"job {job.id} is still {job.state.value.lower()}")
        self.store.clear_run_state(job.id)
        if job.kind == "upload":
            self._uploads.pop(job.id, None)
        job.report = None
        job.mode = None
        job.buckets = []
        job.transfer_id = new_transfer_id()
        job.state = JobState.PENDING
        job._finished.clear()
        self.store.update_job(job.id, state=job.state.value, error=None, report=None,
                              transfer_id=job.transfer_id)
        self._launch(job)
        return job

    async def remove(self, job_id: str) -> None:
        job = self.job(job_id)
        if not job.state.finished and job.state is not JobState.PAUSED:
            raise EngineError(f"job {job.id} is {job.state.value.lower()}; cancel or pause it first")
        runner = self._runners.pop(job.id, None)
        if runner is not None:
            await runner.stop("shutdown")
        self.store.delete_job(job.id)
        self._jobs.pop(job.id, None)
        self._peers.pop(job.id, None)
        self._uploads.pop(job.id, None)

    def find_unfinished(self, source_url: str, target_url: str, resources: List[Dict[str, Any]],
                        mode: str) -> Optional[Job]:
        """An unfinished job moving the same resources between the same peers (CLI re-run)."""
        wanted = sorted((r["Level"], r["ID"]) for r in resources)
        for job in reversed(self.jobs()):
            if (not job.state.finished and job.kind == "transfer" and job.source_url == source_url
                    and job.target_url == target_url and job.requested_mode == mode
                    and sorted((r["Level"], r["ID"]) for r in job.resources) == wanted):
                return job
        return None

    # --- internals ---------------------------------------------------------------------------

    def _peers_of(self, job: Job) -> Tuple[Optional[Peer], Peer]:
        if job.id not in self._peers:
            source = None if job.kind == "upload" else self.peer_resolver(job.source_name, job.source_url)
            target = self.peer_resolver(job.target_name, job.target_url)
            self._peers[job.id] = (source, target)
        return self._peers[job.id]

    def _new_runner(self, job: Job, cancel_only: bool = False) -> JobRunner:
        source, target = self._peers_of(job)
        assert self._gate is not None
        runner = JobRunner(job, store=self.store, gate=self._gate, source=source, target=target,
                           emit=self._emit, staging_root=self.data_dir / "staging",
                           upload_files=self._uploads.get(job.id), cancel_only=cancel_only)
        self._runners[job.id] = runner
        return runner

    def _launch(self, job: Job) -> None:
        runner = self._new_runner(job)
        task = runner.start()
        task.add_done_callback(functools.partial(self._forget_runner, job.id, runner))

    def _forget_runner(self, job_id: str, runner: JobRunner, _task: "asyncio.Task[None]") -> None:
        self._runner_done(job_id, runner)

    def _runner_done(self, job_id: str, runner: JobRunner) -> None:
        if self._runners.get(job_id) is runner:
            del self._runners[job_id]

    def _job_from_record(self, record: JobRecord, state: JobState) -> Job:
        try:
            options = TransferOptions.from_json(record.options)
        except ConfigError:
            options = self.options
        upload = record.kind == "upload"
        job = Job(id=record.id, source_name=record.source_name, target_name=record.target_name,
                  description=record.description, resources=[] if upload else record.resources,
                  upload_paths=record.resources if upload else [], state=state,
                  mode=TransferMode(record.mode) if record.mode else None, kind=record.kind,
                  source_url=record.source_url, target_url=record.target_url,
                  requested_mode=record.requested_mode, compression_requested=record.compression,
                  force=record.force, options=options, transfer_id=record.transfer_id,
                  created=record.created)
        if record.report:
            try:
                job.report = report_from_json(record.report)
            except (KeyError, TypeError, ValueError):
                job.report = None
        return job


def _describe(resources: List[Dict[str, Any]]) -> str:
    if len(resources) == 1:
        return f"{resources[0]['Level']} {resources[0]['ID'][:8]}"
    return f"{len(resources)} resources"


__all__ = ["TransferEngine", "Job", "PlanSummary", "EngineError", "report_from_json", "LOCAL_SOURCE"]
