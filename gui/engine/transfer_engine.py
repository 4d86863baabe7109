"""The transfer engine: jobs, their control, their events. Pure asyncio, no Qt.

See ``docs/engine-api.md`` for the contract with the UI, the CLI and tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from gui.client.peer import Peer
from gui.client.rate_limit import RateLimit, TokenBucket
from gui.config.settings import ConfigError, TransferOptions, default_data_dir
from gui.engine import planner
from gui.engine.concurrency_gate import ConcurrencyGate
from gui.engine.events import Compression, EngineEvent, InstanceStatus, JobState, TransferMode
from gui.engine.job import Job, report_from_json
from gui.engine.job_runner import JobRunner, StopReason, make_client, new_transfer_id
from gui.engine.job_source import delegable, probe
from gui.engine.job_store import JobRecord, JobStore
from gui.engine.target_capacity import recycling_warning
from gui.engine.transport_registry import TransportRegistry, default_transports
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
    # The plan itself, for submit(..., plan=): a drop is planned once.
    prepared: Optional[planner.PreparedPlan] = field(default=None, repr=False, compare=False)


def default_peer_resolver(name: str, url: str) -> Peer:
    """The peer of a stored job, found again in the user's configuration
    (AppConfig.peer_for); front ends with a configuration of their own pass
    its ``peer_for`` instead."""
    try:
        from gui.config.settings import load_config
        return load_config().peer_for(name, url)
    except (ConfigError, OSError) as exc:
        log.warning("cannot read the configuration to resume a job: %s", exc)
    return Peer(name=name, url=url)


class TransferEngine:
    def __init__(self, options: Optional[TransferOptions] = None, *, data_dir: Optional[Path] = None,
                 max_concurrent_jobs: Optional[int] = None,
                 peer_resolver: Callable[[str, str], Peer] = default_peer_resolver,
                 transports: Optional[TransportRegistry] = None) -> None:
        self.options = options or TransferOptions()
        # The transport class of each mode (default_transports(): this package's).
        self.transports = transports or default_transports()
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
        # Bandwidth caps (gui/client/rate_limit.py): one for all jobs, one per job.
        self.global_rate = TokenBucket(self.options.MaxTotalRate * 1024)
        self._job_rates: Dict[str, TokenBucket] = {}

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
            await runner.stop(StopReason.SHUTDOWN)
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
        jobs keep the options they started with (but the global speed limit is for all)."""
        self.options = options
        self.global_rate.rate = options.MaxTotalRate * 1024

    def job_rate(self, job_id: str) -> TokenBucket:
        """The job's own bandwidth cap (its accounting: ``total`` bytes moved through it)."""
        job = self.job(job_id)
        bucket = self._job_rates.get(job.id)
        if bucket is None:
            bucket = self._job_rates[job.id] = TokenBucket(job.options.MaxRate * 1024)
        return bucket

    def set_job_rate(self, job_id: str, kb_per_second: int) -> None:
        """Cap one job at ``kb_per_second`` KB/s (0: no cap of its own), at once if it runs."""
        job = self.job(job_id)
        value = TransferOptions.validate_field("MaxRate", kb_per_second)
        job.options = dataclasses.replace(job.options, MaxRate=value)
        self.job_rate(job.id).rate = value * 1024
        self.store.update_job(job.id, options=json.dumps(job.options.to_json()))

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
            source_speaks, target_speaks = await asyncio.gather(probe(src, options.MaxHttpRetries),
                                                                probe(dst, options.MaxHttpRetries))
            chosen, why = planner.choose_mode(mode, source_speaks=source_speaks,
                                               target_speaks=target_speaks,
                                               available=self.transports.available(),
                                               delegable=await delegable(mode, source_speaks, src, dst,
                                                                         options.MaxHttpRetries, self.transports))
            result = await planner.make_plan(src, dst, resources, use_protocol=source_speaks,
                                             concurrency=max(2, options.Threads * 2), force=force,
                                             retries=options.MaxHttpRetries, target_speaks=target_speaks,
                                             defer_md5s=chosen is TransferMode.PLAIN)
            warning = await recycling_warning(src, dst, resources, result.bytes_to_send)
            listings = src.take_listings()
        buckets = plan_buckets(result.to_send, options.bucket_size_bytes)
        prepared = planner.PreparedPlan(mode, force, resources, chosen, why, result, source_speaks, target_speaks,
                                        listings)
        return PlanSummary(chosen, options.Compression, len(result.instances), result.bytes_to_send,
                           len(result.present), len(buckets), [warning] if warning else [], prepared)

    async def submit(self, source: Peer, target: Peer, resources: List[Dict[str, Any]],
                     options: Optional[TransferOptions] = None, *, mode: str = "auto",
                     compression: Optional[str] = None, force: bool = False,
                     description: str = "", plan: Optional[PlanSummary] = None) -> Job:
        """Start a job. ``plan``: what :meth:`plan` answered for the same peers,
        resources, mode and force (the confirmation's); the job then starts
        from it instead of planning again."""
        if mode not in planner.MODE_NAMES:
            raise EngineError(f"unknown mode {mode!r} (use {', '.join(planner.MODE_NAMES)})")
        if compression is not None and compression not in {c.value for c in Compression}:
            raise EngineError(f"unknown compression {compression!r} (use gzip, none or auto)")
        try:
            resources = planner.check_resources(resources)
        except planner.PlanningError as exc:
            raise EngineError(str(exc)) from None
        prepared = plan.prepared if plan is not None else None
        if prepared is not None and (prepared.requested_mode, prepared.force, prepared.resources) != \
                (mode, force, resources):
            raise EngineError("the plan given was made for other resources, mode or force")
        job = Job(id=str(uuid.uuid4()), source_name=source.name, target_name=target.name,
                  description=description or _describe(resources), resources=resources,
                  state=JobState.PENDING, source_url=source.url, target_url=target.url,
                  requested_mode=mode, compression_requested=compression, force=force,
                  options=options or self.options, transfer_id=new_transfer_id(), prepared=prepared)
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
        self.store.save_plan(job.id, [f.info for f in files], InstanceStatus.PLANNED)
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
            await runner.stop(StopReason.CANCEL)
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
            await runner.stop(StopReason.SHUTDOWN)
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
        runner = JobRunner(job, store=self.store, gate=self._gate, transports=self.transports,
                           source=source, target=target,
                           emit=self._emit, staging_root=self.data_dir / "staging",
                           upload_files=self._uploads.get(job.id), cancel_only=cancel_only,
                           rate_limit=RateLimit([self.job_rate(job.id), self.global_rate]))
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


__all__ = ["TransferEngine", "Job", "PlanSummary", "EngineError", "report_from_json", "LOCAL_SOURCE",
           "TransportRegistry", "default_transports"]
