"""The selected job: its buckets as a live grid, and its storage commitment once finished."""

from __future__ import annotations

from typing import Callable, List, Optional

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent, QResizeEvent
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QListView, QSizePolicy, QSplitter,
                               QVBoxLayout, QWidget)

from gui.engine.events import BucketProgress, CommitmentReport, JobState
from gui.ui.transfers.bucket_delegate import CELL_SIZE, STATE_COLOURS, BucketDelegate
from gui.ui.transfers.bucket_model import BucketModel
from gui.ui.transfers.commitment_view import CommitmentView
from gui.ui.transfers.jobs_model import JobRow


class BucketGrid(QListView):
    """Cells flowing left to right and wrapping: thousands fit in a small dock."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.ListMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        # Uniform sizes and a fixed grid let the view lay out without asking every row.
        self.setUniformItemSizes(True)
        self.setGridSize(QSize(CELL_SIZE, CELL_SIZE))
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(2000)
        self.setSpacing(0)
        self.setMovement(QListView.Movement.Static)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setMouseTracking(True)   # tooltips follow the pointer
        self.setItemDelegate(BucketDelegate(self))


class ElidedLabel(QLabel):
    """A one-line label that never asks for more width than it gets: a long job title is
    cut with "…" (full text in the tooltip) instead of widening the window."""

    def __init__(self, text: str = "", parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(50)
        self.full_text = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's naming
        self.full_text = text
        self.setToolTip(text)
        super().setText(text)
        self.update()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(50, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(50, super().sizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        rect = self.contentsRect()
        shown = self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight, rect.width())
        painter.setFont(self.font())
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), shown)

    def shown_text(self) -> str:
        """What fits (tests)."""
        return self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight,
                                             self.contentsRect().width())


def legend_html(counts: dict) -> str:
    parts = []
    for group in counts:
        colour = STATE_COLOURS[group][0]
        parts.append(f"<span style='color:{colour}; font-size:14px'>■</span> {group} {counts.get(group, 0)}")
    return "&nbsp;&nbsp;&nbsp;".join(parts)


class JobDetail(QWidget):
    def __init__(self, buckets_of: Callable[[str], List[BucketProgress]] = lambda _id: [],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._buckets_of = buckets_of
        self.title = ElidedLabel("Select a transfer to see its buckets.")
        self.title.setObjectName("jobDetailTitle")
        self.title.setStyleSheet("font-weight:bold;")
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        # The job's speed limit, apart from the title so that a long title never hides it.
        self.limit_label = QLabel()
        self.limit_label.setObjectName("jobSpeedLimit")
        self.limit_label.setStyleSheet("color:#6d4c41; font-weight:bold;")
        self.limit_label.hide()
        self.model = BucketModel(self)
        self.grid = BucketGrid()
        self.grid.setModel(self.model)
        self.grid.setMinimumHeight(2 * CELL_SIZE + 6)
        self.commitment = CommitmentView()

        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.limit_label)
        head.addWidget(self.legend)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(head)
        top_layout.addWidget(self.grid, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.commitment)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([120, 240])
        self._top = top
        self._finished_layout = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.splitter)
        self._update_legend()

    @property
    def job_id(self) -> Optional[str]:
        return self.model.job_id

    def show_job(self, row: Optional[JobRow]) -> None:
        if row is None:
            self.model.reset(None)
            self.title.setText("Select a transfer to see its buckets.")
            self.limit_label.hide()
            self.commitment.set_report(None)
        else:
            self.model.reset(row.job_id, self._buckets_of(row.job_id))
            self.update_title(row)
            self.commitment.set_report(row.report, row.description)
            if row.report is not None and row.report.state != JobState.SUCCESS:
                self.model.stop()
        self._give_room(row is not None and row.report is not None)
        self._update_legend()

    def update_title(self, row: JobRow) -> None:
        mode = f" · {row.mode.value}" if row.mode else ""
        phase = row.progress.phase if row.progress is not None and not row.state.finished else None
        state = f"{row.state.value}{f' ({phase.value})' if phase else ''}"
        self.title.setText(f"{row.source} → {row.target}: {row.description}{mode} · {state}"
                           f" · compression: {row.compression}")
        self.limit_label.setText(f"speed limit {row.limit_text}" if row.limit_text else "")
        self.limit_label.setToolTip(row.limit_tooltip)
        self.limit_label.setVisible(bool(row.limit_text))

    def _give_room(self, finished: bool) -> None:
        """A finished job's commitment is what the user reads: the grid keeps only its header
        and two rows of cells (it scrolls); while the job runs, the grid gets its share back."""
        if finished == self._finished_layout:
            return
        self._finished_layout = finished
        total = sum(self.splitter.sizes()) or 360
        top = self._top.minimumSizeHint().height() if finished else total // 3
        self.splitter.setSizes([top, max(total - top, 1)])

    def apply_buckets(self, job_id: str, updates: List[BucketProgress]) -> None:
        if job_id == self.model.job_id:
            self.model.apply(job_id, updates)
            self._update_legend()

    def set_report(self, report: CommitmentReport) -> None:
        if report.job_id == self.model.job_id:
            self.commitment.set_report(report, self.commitment.subject)
            if report.state != JobState.SUCCESS:
                self.model.stop()
            self._give_room(True)
            self._update_legend()

    def restart(self) -> None:
        """The shown job runs again: no verdict yet, buckets move again."""
        self.commitment.set_report(None, self.commitment.subject)
        self.model.restart()
        self._give_room(False)
        self._update_legend()

    def _update_legend(self) -> None:
        count = self.model.rowCount()
        self.legend.setText(f"{count} bucket{'s' if count != 1 else ''}: " + legend_html(self.model.counts()))
