"""The contract between the job scheduler and the transports.

The job runner (``gui/engine/job_runner.py``) plans a job, picks a
transport, and hands it a :class:`TransferContext`. A transport moves the
instances listed there to the target and returns when the target *holds*
them (imported); the scheduler then verifies MD5s on the target and writes
the storage commitment report. A transport must leave the target exactly as
before when it fails or is cancelled (``discard``).

Transports:
- ``plain_mode.PlainTransport``      stock Orthanc on both sides
- ``push_mode.PushTransport``        target speaks the protocol
- ``pull_mode.PullTransport``        source speaks the protocol
- ``delegated_mode.DelegatedTransport`` the source's C++ plugin moves the data
"""

from __future__ import annotations

import abc
import asyncio
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.config.settings import TransferOptions
from gui.engine.events import BucketProgress, BucketState, TransferMode
from gui.engine.resend import ResendLog
from gui.engine.journal import Journal
from gui.engine.retry import with_retries
from gui.engine.source_md5 import PENDING, DeferredSourceMd5s, SourceMd5Error
from gui.protocol.wire import Bucket, InstanceInfo


class TransferFailed(Exception):
    """A transport gave up; ``reason`` is shown to the user, ``instances``
    names the instances concerned when known."""

    def __init__(self, reason: str, instances: Optional[Dict[str, str]] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.instances = instances or {}


@dataclass
class TransferContext:
    job_id: str
    transfer_id: str                      # sent as the sender-transfer-id header
    source: OrthancClient
    target: OrthancClient
    instances: List[InstanceInfo]         # what must arrive (already-present ones removed)
    options: TransferOptions
    compression: str                      # "gzip" | "none" | "auto"
    staging_dir: Path                     # private scratch space of this job
    report_bucket: Callable[[BucketProgress], None]
    # Buckets finished in an earlier run of this job (resume after a crash).
    done_buckets: Set[int] = field(default_factory=set)
    # What this job has durably done (buckets, created instances, the push
    # transaction or delegated job in progress), read back on resume. The
    # runner's is kept in the job database; the default only in memory.
    journal: Journal = field(default_factory=Journal)
    # Set while the job may run; cleared to pause (transports wait at bucket boundaries).
    running: asyncio.Event = field(default_factory=asyncio.Event)
    # Instances this job created on the target (plain mode's rollback list).
    created_on_target: Set[str] = field(default_factory=set)
    # The job's resources (Level/ID) on the source, when it has some: every
    # instance lies below them, which lets presence checks list instead of
    # asking one by one (``target_md5``). Empty for local uploads.
    resources: List[Dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.running.set()
        if self.resends is None:
            self.resends = ResendLog(self.options.MaxHttpRetries)

    async def wait_running(self) -> None:
        await self.running.wait()

    # Whether each end answered /transfers/lookup (probed by the scheduler).
    source_accelerated: bool = False
    target_accelerated: bool = False
    # Set by the scheduler before it cancels the run because the app quits (or
    # the engine closes): the job will resume later, so a transport should keep
    # its resumable state (e.g. its push transaction) instead of discarding it.
    # Unset on a user's cancel, which must discard.
    shutting_down: bool = False
    # The compression the transport actually uses ("gzip"/"none"), set by it
    # once decided (``compression`` may be "auto"); None until then.
    compression_used: Optional[str] = None
    # What the transport had to change on its way (a refused compression, fewer
    # concurrent uploads...): shown with the job's report.
    notes: List[str] = field(default_factory=list)
    # Target MD5s the transport already read back after an upload answered:
    # the final check asks only for the others.
    target_md5s: Dict[str, str] = field(default_factory=dict)
    # Instances sent again after failing an MD5 check, and why (resend.py):
    # at most MaxHttpRetries times each.
    resends: ResendLog = field(default=None)  # type: ignore[assignment]
    # Plain mode from a stock source: the MD5s the planner left to fetch
    # while the transfer runs (source_md5.py); None when the plan has them all.
    source_md5s: Optional[DeferredSourceMd5s] = None

    # --- helpers for transports ----------------------------------------------------

    async def source_md5(self, info: InstanceInfo) -> str:
        """The source's MD5 of ``info``: the plan's, or the one fetched beside the transfer."""
        if info.md5 != PENDING or self.source_md5s is None:
            return info.md5
        try:
            return await self.source_md5s.get(info.id)
        except SourceMd5Error as exc:
            raise TransferFailed(str(exc), {info.id: str(exc.error)}) from None

    async def mark_bucket_done(self, index: int) -> None:
        self.done_buckets.add(index)
        await self.journal.bucket_done(index)

    async def mark_created(self, instance_id: str) -> None:
        """Record, durably, that this job created ``instance_id`` on the target."""
        await self.mark_created_many([instance_id])

    async def mark_created_many(self, instance_ids: List[str]) -> None:
        """:meth:`mark_created` of several, in one write."""
        self.created_on_target.update(instance_ids)
        await self.journal.instances_created(instance_ids)

    async def delete_created_on_target(self) -> None:
        """Rollback: delete every instance this job created on the target, and
        only those (one already gone counts as deleted). Raises TransferFailed
        naming what could not be deleted."""
        failures = []
        for instance_id in sorted(self.created_on_target):
            try:
                await with_retries(functools.partial(self.target.delete, "Instance", instance_id),
                                   self.options.MaxHttpRetries)
            except OrthancError as exc:
                if exc.status != 404:
                    failures.append(f"{instance_id}: {exc}")
        if failures:
            raise TransferFailed(f"rollback incomplete on {self.target.peer.name}: {len(failures)} "
                                 f"instance(s) could not be deleted ({failures[0]})")
        self.created_on_target.clear()

    def bucket_event(self, index: int, bucket: Bucket, state: BucketState, **extra: object) -> BucketProgress:
        event = BucketProgress(job_id=self.job_id, index=index, state=state,
                               chunks=len(bucket.chunks), instance_ids=bucket.instance_ids(),
                               raw_total=bucket.total_size, **extra)  # type: ignore[arg-type]
        self.report_bucket(event)
        return event


class Transport(abc.ABC):
    mode: TransferMode

    @abc.abstractmethod
    def plan(self, ctx: TransferContext) -> List[Bucket]:
        """The buckets this transport will move (for progress display)."""

    @abc.abstractmethod
    async def run(self, ctx: TransferContext, buckets: List[Bucket]) -> None:
        """Move everything; return when the target has imported it all.
        Raise TransferFailed on a definitive failure (after cleaning up)."""

    @abc.abstractmethod
    async def discard(self, ctx: TransferContext) -> None:
        """Undo: leave the target exactly as before this job (cancel/failure)."""
