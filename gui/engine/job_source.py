"""Where a job's instances come from: an Orthanc peer, or files on this computer.

The runner asks its job's source to plan each run (what to send, in which
mode, with which transport); the rest of the run (verification, report,
rollback) is the same for every source. A peer source probes both ends,
chooses the mode among the engine's transports and plans through the
protocol or Orthanc's REST API (or takes the plan its confirmation showed);
local files (dropped on a pane) go up in plain mode, read from disk.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from gui.client.orthanc_client import OrthancClient
from gui.engine import planner
from gui.engine.events import TransferMode
from gui.engine.job import Job
from gui.engine.job_store import JobStore
from gui.engine.retry import with_retries
from gui.engine.transport_base import Transport
from gui.engine.transport_registry import TransportRegistry

log = logging.getLogger(__name__)


@dataclass
class Planning:
    """What a source may use to plan one run of its job."""
    job: Job
    store: JobStore
    target: OrthancClient
    source: Optional[OrthancClient]
    transports: TransportRegistry
    plan_again: bool                 # False: reload the stored plan (a rollback after a restart)
    sent_before: Set[str]            # instances an earlier run sent
    concurrency: int
    retries: int
    on_found: planner.FoundHook = None   # count of instances found so far (progress)


@dataclass
class RunPlan:
    mode: TransferMode
    transport: Transport
    plan: planner.Plan
    source_speaks: bool = False
    target_speaks: bool = False


class JobSource(abc.ABC):
    @abc.abstractmethod
    async def plan_run(self, p: Planning) -> RunPlan:
        """The run's mode, transport and plan."""

    def resources(self, job: Job) -> List[Dict[str, Any]]:
        """The job's resources on the source (presence checks list below them), if any."""
        return []


class PeerSource(JobSource):
    """Instances on an Orthanc peer."""

    async def plan_run(self, p: Planning) -> RunPlan:
        job, source, target = p.job, p.source, p.target
        assert source is not None
        source_speaks = target_speaks = False
        prepared, job.prepared = job.prepared, None
        if p.plan_again and prepared is not None:
            # Planned for the confirmation a moment ago: not again.
            source_speaks, target_speaks = prepared.source_speaks, prepared.target_speaks
            mode, plan = prepared.mode, prepared.plan
            source.keep_listings(prepared.listings)
            log.info("job %s: %s mode (%s), as planned for its confirmation", job.id, mode.value,
                     prepared.reason)
        elif p.plan_again:
            # Both ends at once: one round trip of the job's start, not two.
            source_speaks, target_speaks = await asyncio.gather(probe(source, p.retries),
                                                                probe(target, p.retries))
            mode, why = planner.choose_mode(job.requested_mode, source_speaks=source_speaks,
                                            target_speaks=target_speaks,
                                            available=p.transports.available(),
                                            delegable=await delegable(job.requested_mode, source_speaks,
                                                                      source, target, p.retries, p.transports))
            log.info("job %s: %s mode (%s)", job.id, mode.value, why)
            plan = await planner.make_plan(
                source, target, job.resources, use_protocol=source_speaks,
                concurrency=p.concurrency, force=job.force, keep=p.sent_before, retries=p.retries,
                target_speaks=target_speaks, on_found=p.on_found, defer_md5s=mode is TransferMode.PLAIN)
        else:
            mode = TransferMode(job.mode) if job.mode else TransferMode.PLAIN
            instances = p.store.planned_instances(job.id)
            plan = planner.Plan(instances, instances, [])
        return RunPlan(mode, p.transports.create(mode), plan, source_speaks, target_speaks)

    def resources(self, job: Job) -> List[Dict[str, Any]]:
        return list(job.resources or [])


class LocalFiles(JobSource):
    """DICOM files on this computer, uploaded in plain mode (local_upload.py).
    ``files`` (instance ID -> path) comes from the drop; a job loaded from
    disk scans its paths again."""

    def __init__(self, files: Optional[Dict[str, Path]] = None) -> None:
        self.files = files

    async def plan_run(self, p: Planning) -> RunPlan:
        from gui.engine.local_upload import LocalUploadTransport, scan_files
        job = p.job
        if self.files is None:
            found, _skipped = await asyncio.to_thread(scan_files, [Path(path) for path in job.upload_paths])
            self.files = {f.info.id: f.path for f in found}
            instances = [f.info for f in found]
        else:
            known = {i.id: i for i in p.store.planned_instances(job.id)}
            instances = [known[i] for i in sorted(self.files) if i in known]
        if p.plan_again:
            plan = await planner.split_present(p.target, instances, concurrency=p.concurrency,
                                               force=job.force, keep=p.sent_before, retries=p.retries)
        else:
            plan = planner.Plan(instances, instances, [])
        return RunPlan(TransferMode.UPLOAD, LocalUploadTransport(self.files), plan)


def source_of(job: Job, upload_files: Optional[Dict[str, Path]] = None) -> JobSource:
    return LocalFiles(upload_files) if job.kind == "upload" else PeerSource()


async def probe(client: OrthancClient, retries: int) -> bool:
    """Whether the peer speaks the transfers protocol; unreachable peers raise."""
    return await with_retries(client.speaks_accelerator, retries)


async def delegable(requested: str, source_speaks: bool, source: OrthancClient, target: OrthancClient,
                    retries: int, transports: TransportRegistry) -> bool:
    """For auto: whether the source should send server to server (delegated_mode.should_delegate)."""
    if requested != "auto" or not source_speaks or transports.get(TransferMode.DELEGATE) is None:
        return False
    from gui.engine.delegated_mode import should_delegate
    return await should_delegate(source, target, retries)
