"""A job as the engine, the UI and the CLI see it: what it moves, its state,
its latest progress and, once finished, its report.

Its own module so that the engine (gui/engine/transfer_engine.py) and the
runner of one job (gui/engine/job_runner.py) share it without importing
each other.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from gui.config.settings import TransferOptions
from gui.engine.events import (BucketProgress, CommitmentReport, InstanceStatus, InstanceVerdict, JobProgress,
                               JobState, TransferMode)
from gui.engine.job_store import JobRecord
from gui.engine.planner import PreparedPlan


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
    # The confirmation's plan, used by the first run instead of planning again (not stored).
    prepared: Optional[PreparedPlan] = field(default=None, repr=False)
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
    verdicts = [InstanceVerdict(**{**d, "status": InstanceStatus(d["status"])}) for d in data.get("details", [])]
    return CommitmentReport(
        job_id=data["job"], state=JobState(data["state"]),
        mode=TransferMode(data["mode"]) if data.get("mode") else None,
        source=data.get("source", ""), target=data.get("target", ""), instances=verdicts,
        bytes=data.get("bytes", 0), wire_bytes=data.get("wire_bytes", 0),
        seconds=data.get("seconds", 0.0), error=data.get("error"), compression=data.get("compression"),
        notes=list(data.get("notes") or []),
        resent=list(data.get("resent") or []),
        series={str(k): dict(v) for k, v in (data.get("series") or {}).items()},
        finished_at=str(data.get("finished_at") or ""),
        speed_limit=data.get("speed_limit"))
