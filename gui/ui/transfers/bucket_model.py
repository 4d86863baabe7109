"""One row per bucket of the selected job: the data behind the bucket grid.

A single flat list model; updates arrive in batches (see event_bridge) and
are announced with one dataChanged per contiguous run of rows, so thousands
of buckets cost a few repaints per second, not thousands.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Optional

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

from gui.engine.events import BucketProgress, BucketState
from gui.ui.transfers.formatting import human_bytes

BucketRole = Qt.ItemDataRole.UserRole + 1      # the BucketProgress itself
FractionRole = Qt.ItemDataRole.UserRole + 2    # 0.0 .. 1.0
StateRole = Qt.ItemDataRole.UserRole + 3       # BucketState value ("sending"...): Qt turns str enums into str
GroupRole = Qt.ItemDataRole.UserRole + 4       # the visible state group (StateGroup)


class StateGroup:
    """What the user sees: reading, compressing and sending are 'transferring'."""

    QUEUED = "queued"
    TRANSFERRING = "transferring"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    #: Not done when its job ended (canceled or failed): nothing is on the way any more.
    STOPPED = "stopped"
    ALL = (QUEUED, TRANSFERRING, RETRYING, DONE, FAILED)
    _UNFINISHED = frozenset((QUEUED, TRANSFERRING, RETRYING))


def state_group(state: BucketState) -> str:
    return _GROUP_OF[state]


def bucket_fraction(bucket: BucketProgress) -> float:
    if bucket.state == BucketState.DONE:
        return 1.0
    if bucket.raw_total <= 0:
        return 0.0
    if bucket.wire_total:
        # On the wire the bytes are compressed: wire progress is the honest one.
        return min(1.0, bucket.wire_done / bucket.wire_total)
    return min(1.0, bucket.raw_done / bucket.raw_total)


_MAX_TOOLTIP_IDS = 8
# Looked up once: attribute access on Qt's enums is slow in a per-cell hot path.
_DISPLAY = Qt.ItemDataRole.DisplayRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_ACTIVE = frozenset((BucketState.READING, BucketState.COMPRESSING, BucketState.SENDING))
_GROUP_OF = {state: (StateGroup.TRANSFERRING if state in _ACTIVE else state.value) for state in BucketState}


def bucket_tooltip(bucket: BucketProgress) -> str:
    group = state_group(bucket.state)
    detail = bucket.state.value if group == StateGroup.TRANSFERRING and bucket.state.value != group else ""
    lines = [f"Bucket {bucket.index + 1}: {group}{f' ({detail})' if detail else ''}"]
    count = len(bucket.instance_ids)
    size = human_bytes(bucket.raw_total)
    if bucket.wire_total:
        size += f", {human_bytes(bucket.wire_total)} on the wire"
    lines.append(f"{count} instance{'s' if count != 1 else ''} in {bucket.chunks} chunk"
                 f"{'s' if bucket.chunks != 1 else ''}, {size}")
    lines.append(f"{int(bucket_fraction(bucket) * 100)} % done")
    lines.append(f"{bucket.retries} retr{'ies' if bucket.retries != 1 else 'y'}")
    if bucket.error:
        lines.append(f"Error: {bucket.error}")
    lines.extend(bucket.instance_ids[:_MAX_TOOLTIP_IDS])
    if count > _MAX_TOOLTIP_IDS:
        lines.append(f"… and {count - _MAX_TOOLTIP_IDS} more")
    return "\n".join(lines)


class BucketModel(QAbstractListModel):
    def __init__(self, parent: Optional[Any] = None) -> None:
        super().__init__(parent)
        self._job_id: Optional[str] = None
        self._rows: List[Optional[BucketProgress]] = []
        self._stopped = False

    # --- feeding ------------------------------------------------------------

    @property
    def job_id(self) -> Optional[str]:
        return self._job_id

    def reset(self, job_id: Optional[str], buckets: Iterable[BucketProgress] = ()) -> None:
        """Show another job (or none)."""
        self.beginResetModel()
        self._job_id = job_id
        self._rows = []
        self._stopped = False
        for bucket in buckets:
            self._put(bucket)
        self.endResetModel()

    def _put(self, bucket: BucketProgress) -> None:
        if bucket.index >= len(self._rows):
            self._rows.extend([None] * (bucket.index + 1 - len(self._rows)))
        self._rows[bucket.index] = bucket

    def apply(self, job_id: str, updates: List[BucketProgress]) -> None:
        """A batch of the latest bucket events (any order) for ``job_id``."""
        if job_id != self._job_id or not updates:
            return
        top = max(b.index for b in updates)
        if top >= len(self._rows):
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, top)
            self._rows.extend([None] * (top + 1 - first))
            self.endInsertRows()
        indices = sorted({b.index for b in updates})
        for bucket in updates:
            self._rows[bucket.index] = bucket
        # One signal per contiguous run of changed rows.
        start = prev = indices[0]
        for i in indices[1:] + [None]:  # type: ignore[list-item]
            if i is not None and i == prev + 1:
                prev = i
                continue
            self.dataChanged.emit(self.index(start), self.index(prev),
                                  [Qt.ItemDataRole.DisplayRole, BucketRole, FractionRole, StateRole, GroupRole])
            if i is not None:
                start = prev = i

    def stop(self) -> None:
        """The job ended without finishing: its unfinished buckets stop looking busy."""
        if self._stopped:
            return
        self._stopped = True
        if self._rows:
            self.dataChanged.emit(self.index(0), self.index(len(self._rows) - 1), [GroupRole, StateRole])

    def restart(self) -> None:
        """The job runs again (retry): its buckets move again."""
        if self._stopped:
            self._stopped = False
            if self._rows:
                self.dataChanged.emit(self.index(0), self.index(len(self._rows) - 1), [GroupRole, StateRole])

    @property
    def stopped(self) -> bool:
        return self._stopped

    # --- reading ------------------------------------------------------------

    def group(self, row: int) -> str:
        """The visible state group of a row (what the cell's colour and the legend say)."""
        bucket = self._rows[row] if 0 <= row < len(self._rows) else None
        group = state_group(bucket.state) if bucket else StateGroup.QUEUED
        if self._stopped and group in StateGroup._UNFINISHED:
            return StateGroup.STOPPED
        return group

    def bucket(self, row: int) -> Optional[BucketProgress]:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def counts(self) -> Dict[str, int]:
        """How many buckets are in each visible state group."""
        counter: Counter = Counter(self.group(n) for n in range(len(self._rows)))
        counts = {group: counter.get(group, 0) for group in StateGroup.ALL}
        if counter.get(StateGroup.STOPPED):
            counts[StateGroup.STOPPED] = counter[StateGroup.STOPPED]
        return counts

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        bucket = self._rows[index.row()]
        if role == _DISPLAY:
            return str(index.row() + 1)
        if role == BucketRole:
            return bucket
        if role == StateRole:
            return bucket.state.value if bucket else BucketState.QUEUED.value
        if role == GroupRole:
            return self.group(index.row())
        if role == FractionRole:
            return bucket_fraction(bucket) if bucket else 0.0
        if role == _TOOLTIP:
            if self._stopped and self.group(index.row()) == StateGroup.STOPPED:
                return f"Bucket {index.row() + 1}: not sent (the transfer ended before it)"
            return bucket_tooltip(bucket) if bucket else f"Bucket {index.row() + 1}: queued"
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags
