"""One row per transfer job for the Transfers dock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from gui.engine.events import CommitmentReport, JobPhase, JobProgress, JobState, TransferMode
from gui.ui.transfers.formatting import (compression_summary, human_bytes, human_duration, human_rate,
                                         human_ratio)

if TYPE_CHECKING:
    from gui.engine.transfer_engine import Job

JobIdRole = Qt.ItemDataRole.UserRole + 11
FractionRole = Qt.ItemDataRole.UserRole + 12
JobStateRole = Qt.ItemDataRole.UserRole + 13

COLUMNS = ("Transfer", "What", "State", "Progress", "Speed", "On the wire", "Limit", "Ratio", "Elapsed", "ETA")
(COL_TRANSFER, COL_WHAT, COL_STATE, COL_PROGRESS, COL_SPEED, COL_WIRE, COL_LIMIT, COL_RATIO, COL_ELAPSED,
 COL_ETA) = range(10)

HEADER_TIPS = (
    "Source → target server",
    "What was chosen to send",
    "Pending, running (with its phase: planning, sending, committing, verifying), paused, or how it ended; "
    "the mode in brackets",
    "Instances and bytes done; for a job that failed or was canceled, how many were verified",
    "DICOM bytes per second (live; the average once finished), paused time left out",
    "Bytes per second crossing the network for the data, after compression",
    "The speed limit the job runs under (its own, or the one for all jobs if tighter): the bytes this "
    "computer reads from the source and writes to the target, together",
    "How much compression saved (2.00× means half the bytes travelled)",
    "Running time so far (paused time left out)",
    "Time left at the current speed (only while sending)",
)

STATE_TEXT_COLOURS = {
    JobState.SUCCESS: "#2e7d32", JobState.FAILURE: "#c62828", JobState.CANCELED: "#8d6e63",
    JobState.PAUSED: "#ef6c00", JobState.RUNNING: "#1565c0", JobState.PENDING: "#616161",
}


@dataclass
class JobRow:
    job_id: str
    source: str
    target: str
    description: str
    state: JobState
    mode: Optional[TransferMode] = None
    progress: Optional[JobProgress] = None
    report: Optional[CommitmentReport] = None
    # When the last progress arrived, to keep "elapsed" ticking between events.
    progress_at: float = 0.0
    #: What the job was asked to do ("auto", "gzip", "none").
    compression_requested: Optional[str] = None
    #: Speed limits in KB/s, 0 for none: the job's own (MaxRate) and the one for all jobs
    #: together (MaxTotalRate, the model keeps it the same on every row).
    limit_kb: int = 0
    global_limit_kb: int = 0

    @property
    def limited(self) -> bool:
        """Whether a cap holds this job back (a delegated job moves server to server:
        its bytes never pass through this computer's buckets)."""
        return self.mode is not TransferMode.DELEGATE and bool(self.limit_kb or self.global_limit_kb)

    @property
    def cap_bytes(self) -> Optional[int]:
        """The tighter of the two caps, bytes per second (None: not capped)."""
        caps = [kb for kb in (self.limit_kb, self.global_limit_kb) if kb]
        return min(caps) * 1024 if caps and self.limited else None

    @property
    def limit_text(self) -> str:
        """'≤ 2.0 MB/s', or '' without a cap."""
        cap = self.cap_bytes
        return f"≤ {human_rate(cap)}" if cap else ""

    @property
    def limit_tooltip(self) -> str:
        """Which caps hold the job, and where they are set."""
        if self.mode is TransferMode.DELEGATE:
            return ("Speed limit: none here (server to server: the data does not pass through "
                    "this computer)")
        parts = []
        if self.limit_kb:
            parts.append(f"{human_rate(self.limit_kb * 1024)} for this transfer (its menu ▸ Speed limit…)")
        if self.global_limit_kb:
            parts.append(f"{human_rate(self.global_limit_kb * 1024)} for all transfers together "
                         "(Settings ▸ Transfers)")
        if not parts:
            return "Speed limit: none (set one in the job's menu ▸ Speed limit…, or in Settings ▸ Transfers)"
        return "Speed limit: " + "; ".join(parts)

    @property
    def compression(self) -> str:
        """What the user reads about compression (see ``compression_summary``)."""
        used = self.report.compression if self.report is not None else None
        if used is None and self.progress is not None and self.progress.compression != self.compression_requested:
            used = self.progress.compression
        if used == "auto":
            used = None
        return compression_summary(self.mode.value if self.mode else None, self.compression_requested, used)

    @classmethod
    def from_job(cls, job: "Job") -> "JobRow":
        return cls(job_id=job.id, source=job.source_name, target=job.target_name,
                   description=job.description or describe_resources(job.resources),
                   state=job.state, mode=job.mode, progress=job.progress,
                   report=job.report, progress_at=time.monotonic(),
                   compression_requested=job.compression_requested or job.options.Compression,
                   limit_kb=int(job.options.MaxRate or 0))

    @property
    def elapsed(self) -> Optional[float]:
        if self.report is not None:
            return self.report.seconds
        if self.progress is None:
            return None
        if self.state == JobState.RUNNING:
            return self.progress.elapsed + (time.monotonic() - self.progress_at)
        return self.progress.elapsed


_LEVEL_NAMES = {"Patient": ("patient", "patients"), "Study": ("study", "studies"),
                "Series": ("series", "series"), "Instance": ("instance", "instances"), "file": ("file", "files")}


def describe_resources(resources: List[Dict[str, str]]) -> str:
    """'2 studies, 1 series' from the engine's resource list."""
    counts: Dict[str, int] = {}
    for item in resources or []:
        level = item.get("Level", "?") if isinstance(item, dict) else "file"
        counts[level] = counts.get(level, 0) + 1
    parts = []
    for level, n in counts.items():
        one, many = _LEVEL_NAMES.get(level, (level.lower(), level.lower()))
        parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts) or "–"


#: Colour of the progress bar per state: a failed job must not look like a finished one.
BAR_COLOURS = {JobState.FAILURE: "#c62828", JobState.CANCELED: "#8d6e63", JobState.PAUSED: "#ef6c00",
               JobState.SUCCESS: "#2e7d32"}
BarColourRole = Qt.ItemDataRole.UserRole + 14


def progress_text(row: JobRow) -> str:
    """The Progress column: counts while it runs, the outcome once it ended."""
    p = row.progress
    report = row.report
    if row.state in (JobState.FAILURE, JobState.CANCELED):
        verb = "failed" if row.state == JobState.FAILURE else "canceled"
        planned = report.planned if report is not None else (p.instances_total if p else 0)
        if not planned:
            return f"{verb} before any instance was sent"
        verified = report.verified if report is not None else 0
        return f"{verb}: {verified} of {planned} instances verified"
    if p is None:
        return ""
    if (not p.instances_total and not row.state.finished) or p.phase is JobPhase.PLANNING:
        return f"planning… {p.instances_found} instances found" if p.instances_found else "planning…"
    return (f"{p.instances_done}/{p.instances_total} instances, "
            f"{human_bytes(p.raw_done)} of {human_bytes(p.raw_total)}")


LIMIT_EXPLAINED = ("\nThe cap counts the bytes this computer reads from the source and writes to the target, "
                   "together, as they cross the network: compressed data carries more DICOM per second "
                   "than the cap, and a plain-mode job counts its bytes twice (down and up).")


def speed_limit_outcome(row: JobRow) -> str:
    """What the job's own cap let through, from its report ('' when there is none)."""
    spent = row.report.speed_limit if row.report is not None else None
    if not spent or not spent.get("achieved"):
        return ""
    return (f"\nThrough its cap: {human_bytes(spent.get('bytes'))} at {human_rate(spent['achieved'])} "
            "on average")


class JobsModel(QAbstractTableModel):
    def __init__(self, parent: Optional[Any] = None) -> None:
        super().__init__(parent)
        self._rows: List[JobRow] = []
        self.global_limit_kb = 0

    # --- feeding ------------------------------------------------------------

    def row_of(self, job_id: str) -> int:
        for n, row in enumerate(self._rows):
            if row.job_id == job_id:
                return n
        return -1

    def job_row(self, job_id: str) -> Optional[JobRow]:
        n = self.row_of(job_id)
        return self._rows[n] if n >= 0 else None

    def job_ids(self) -> List[str]:
        return [row.job_id for row in self._rows]

    def upsert(self, row: JobRow) -> int:
        """Add a job, or replace it (a resubmitted job keeps its id)."""
        row.global_limit_kb = self.global_limit_kb
        n = self.row_of(row.job_id)
        if n >= 0:
            self._rows[n] = row
            self._changed(n)
            return n
        # Newest first: the job just started is where the eye is.
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._rows.insert(0, row)
        self.endInsertRows()
        return 0

    def apply_progress(self, events: List[JobProgress]) -> List[str]:
        """Apply a batch; return the job ids that are not in the model."""
        unknown = []
        now = time.monotonic()
        for event in events:
            n = self.row_of(event.job_id)
            if n < 0:
                unknown.append(event.job_id)
                continue
            row = self._rows[n]
            row.progress = event
            row.progress_at = now
            row.state = event.state
            if event.mode is not None:
                row.mode = event.mode
            if not event.state.finished:
                row.report = None   # running again (retry): the old verdict no longer holds
            self._changed(n)
        return unknown

    def apply_report(self, report: CommitmentReport) -> None:
        n = self.row_of(report.job_id)
        if n < 0:
            return
        row = self._rows[n]
        row.report = report
        row.state = report.state
        if report.mode is not None:
            row.mode = report.mode
        self._changed(n)

    def set_state(self, job_id: str, state: JobState) -> None:
        n = self.row_of(job_id)
        if n >= 0:
            self._rows[n].state = state
            self._changed(n)

    def set_limit(self, job_id: str, kb_per_second: int) -> None:
        """The job's own speed limit changed (its menu ▸ Speed limit…)."""
        n = self.row_of(job_id)
        if n >= 0:
            self._rows[n].limit_kb = kb_per_second
            self._changed(n)

    def set_global_limit(self, kb_per_second: int) -> None:
        """The limit for all jobs changed (Settings ▸ Transfers): every row shows it."""
        self.global_limit_kb = kb_per_second
        for n, row in enumerate(self._rows):
            row.global_limit_kb = kb_per_second
            self._changed(n)

    def remove(self, job_id: str) -> None:
        n = self.row_of(job_id)
        if n >= 0:
            self.beginRemoveRows(QModelIndex(), n, n)
            del self._rows[n]
            self.endRemoveRows()

    def tick(self) -> None:
        """Repaint the time columns of running jobs (elapsed moves without events)."""
        for n, row in enumerate(self._rows):
            if row.state == JobState.RUNNING:
                self.dataChanged.emit(self.index(n, COL_ELAPSED), self.index(n, COL_ETA))

    def _changed(self, n: int) -> None:
        self.dataChanged.emit(self.index(n, 0), self.index(n, len(COLUMNS) - 1))

    # --- reading ------------------------------------------------------------

    def row(self, n: int) -> JobRow:
        return self._rows[n]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        col = index.column()
        if role == JobIdRole:
            return row.job_id
        if role == JobStateRole:
            return row.state.value
        if role == FractionRole:
            return self._fraction(row)
        if role == BarColourRole:
            return BAR_COLOURS.get(row.state)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_RATIO:
                return f"Compression: {row.compression}"
            if col == COL_LIMIT:
                return row.limit_tooltip + LIMIT_EXPLAINED + speed_limit_outcome(row)
            return self._tooltip(row)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            return QBrush(QColor(STATE_TEXT_COLOURS.get(row.state, "#000000")))
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= COL_SPEED:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _fraction(row: JobRow) -> float:
        if row.state == JobState.SUCCESS:
            return 1.0
        if row.state == JobState.FAILURE and row.report is not None:
            # Verified instances are what counts once it failed (nothing, after the rollback).
            return row.report.verified / row.report.planned if row.report.planned else 0.0
        return row.progress.fraction if row.progress else 0.0

    @staticmethod
    def _text(row: JobRow, col: int) -> str:
        p = row.progress
        running = row.state == JobState.RUNNING
        if col == COL_TRANSFER:
            return f"{row.source} → {row.target}"
        if col == COL_WHAT:
            return row.description
        if col == COL_STATE:
            text = row.state.value
            if running and p is not None and p.phase is not None:
                text += f" · {p.phase.value}"
            if row.mode is not None:
                text += f" ({row.mode.value})"
            return text
        if col == COL_PROGRESS:
            return progress_text(row)
        if col == COL_SPEED:
            if row.report is not None and row.report.seconds > 0:
                return human_rate(row.report.bytes / row.report.seconds)
            return human_rate(p.raw_rate) if p and running else "–"
        if col == COL_LIMIT:
            # Its own column, not beside the speed: the cap counts network bytes both ways,
            # the speed DICOM bytes (2 MB/s of gzip-compressed traffic can carry 4 MB/s of DICOM).
            return row.limit_text or "–"
        if col == COL_WIRE:
            if row.report is not None and row.report.seconds > 0:
                return human_rate(row.report.wire_bytes / row.report.seconds)
            return human_rate(p.wire_rate) if p and running else "–"
        if col == COL_RATIO:
            if row.report is not None and row.report.wire_bytes:
                return human_ratio(row.report.bytes / row.report.wire_bytes)
            return human_ratio(p.compression_ratio) if p else "–"
        if col == COL_ELAPSED:
            return human_duration(row.elapsed)
        if col == COL_ETA:
            # Only while buckets move: a commit or a read-back has no rate to extrapolate.
            sending = p is not None and p.phase in (None, JobPhase.SENDING)
            return human_duration(p.eta) if p and running and sending else "–"
        return ""

    @staticmethod
    def _tooltip(row: JobRow) -> str:
        lines = [f"Job {row.job_id}", f"{row.source} → {row.target}: {row.description}"]
        p = row.progress
        if p is not None:
            lines.append(f"Mode: {p.mode.value if p.mode else 'not chosen yet'}")
            lines.append(f"Compression: {row.compression}")
            lines.append(f"Buckets: {p.buckets_done} of {p.buckets_total} done")
        lines.append(row.limit_tooltip)
        error = (row.report.error if row.report else None) or (p.error if p else None)
        if error:
            lines.append(f"Error: {error}")
        return "\n".join(lines)
