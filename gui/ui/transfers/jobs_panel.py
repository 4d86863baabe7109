"""The Transfers dock: the jobs table with its controls, and the selected job's detail."""

from __future__ import annotations

from typing import Callable, List, Optional, Protocol

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QSplitter, QStyle, QStyledItemDelegate, QStyleOptionProgressBar,
                               QStyleOptionViewItem, QTableView, QVBoxLayout, QWidget)
from PySide6.QtGui import QColor, QPainter, QPalette

from gui.engine.events import BucketProgress, CommitmentReport, JobProgress, JobState
from gui.ui.transfers.job_detail import JobDetail
from gui.ui.transfers.jobs_model import (COL_PROGRESS, COL_WHAT, BarColourRole, FractionRole, JobRow,
                                         JobsModel)


class JobActions(Protocol):
    """What the panel's buttons ask for; the controller runs them on the engine."""

    def pause_job(self, job_id: str) -> None: ...
    def resume_job(self, job_id: str) -> None: ...
    def cancel_job(self, job_id: str) -> None: ...
    def retry_job(self, job_id: str) -> None: ...
    def remove_job(self, job_id: str) -> None: ...


class ProgressDelegate(QStyledItemDelegate):
    """A native-looking progress bar in the Progress column."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 2, -2, -2)
        bar.minimum = 0
        bar.maximum = 1000
        bar.progress = int(round(float(index.data(FractionRole) or 0.0) * 1000))
        bar.text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        bar.palette = QPalette(option.palette)
        colour = index.data(BarColourRole)
        if colour:
            bar.palette.setColor(QPalette.ColorRole.Highlight, QColor(colour))
        style = option.widget.style() if option.widget else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)


def allowed_actions(state: Optional[JobState]) -> dict:
    """Which buttons make sense for a job in ``state``."""
    return {
        "pause": state in (JobState.RUNNING, JobState.PENDING),
        "resume": state == JobState.PAUSED,
        "cancel": state in (JobState.RUNNING, JobState.PENDING, JobState.PAUSED),
        "retry": state in (JobState.FAILURE, JobState.CANCELED),
        "remove": state is not None and (state.finished or state == JobState.PAUSED),
    }


class JobsPanel(QWidget):
    selectedJobChanged = Signal(str)   # "" when nothing is selected

    def __init__(self, actions: Optional[JobActions] = None,
                 buckets_of: Callable[[str], List[BucketProgress]] = lambda _id: [],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("transfersPanel")
        self.actions = actions
        self.model = JobsModel(self)
        self.table = QTableView()
        self.table.setObjectName("jobsTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((210, 260, 120, 280, 90, 90, 60, 60, 60)):
            self.table.setColumnWidth(col, width)
        header.setSectionResizeMode(COL_WHAT, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.table.setMinimumHeight(3 * 24 + 28)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.model.rowsInserted.connect(self._select_new_row)

        self.buttons = {}
        bar = QHBoxLayout()
        for key, label, tip in (
                ("pause", "Pause", "Stop at the next bucket; resume later, even after a restart"),
                ("resume", "Resume", "Continue where the job stopped"),
                ("cancel", "Cancel", "Stop and discard: the target is left exactly as before"),
                ("retry", "Retry", "Run a failed or canceled job again"),
                ("remove", "Remove", "Forget this job (the data on the servers is not touched)")):
            button = QPushButton(label)
            button.setObjectName(f"{key}Button")
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, k=key: self._trigger(k))
            bar.addWidget(button)
            self.buttons[key] = button
        bar.addStretch(1)
        self.summary = QLabel()
        bar.addWidget(self.summary)

        self.detail = JobDetail(buckets_of)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(bar)
        top_layout.addWidget(self.table, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.detail)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([130, 360])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.splitter)

        # Elapsed time moves even when no event arrives (a slow bucket).
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self.model.tick)
        self._clock.start()
        self._update_buttons()

    # --- selection ----------------------------------------------------------

    def selected_job_id(self) -> Optional[str]:
        index = self.table.selectionModel().currentIndex()
        if not index.isValid():
            return None
        return self.model.row(index.row()).job_id

    def select_job(self, job_id: str) -> None:
        n = self.model.row_of(job_id)
        if n >= 0:
            self.table.selectRow(n)
            self.table.setCurrentIndex(self.model.index(n, 0))

    def _select_new_row(self, _parent: QModelIndex, first: int, _last: int) -> None:
        # Follow a newly started job, unless the user is looking at a running one.
        current = self.selected_job_id()
        current_row = self.model.job_row(current) if current else None
        if current_row is None or current_row.state != JobState.RUNNING:
            self.select_job(self.model.row(first).job_id)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.model.row(current.row()) if current.isValid() else None
        self.detail.show_job(row)
        self._update_buttons()
        self.selectedJobChanged.emit(row.job_id if row else "")

    # --- engine news ------------------------------------------------------

    def add_job(self, row: JobRow) -> None:
        self.model.upsert(row)
        if row.job_id == self.detail.job_id:
            self.detail.show_job(row)
        self._after_change()

    def apply_progress(self, events: List[JobProgress]) -> List[str]:
        unknown = self.model.apply_progress(events)
        current = self.detail.job_id
        if current and any(e.job_id == current for e in events):
            row = self.model.job_row(current)
            if row is not None:
                self.detail.update_title(row)
                if row.report is None and (self.detail.commitment.report is not None
                                           or self.detail.model.stopped):
                    self.detail.restart()   # the job runs again
        self._after_change()
        return unknown

    def apply_buckets(self, job_id: str, buckets: List[BucketProgress]) -> None:
        self.detail.apply_buckets(job_id, buckets)

    def apply_report(self, report: CommitmentReport) -> None:
        self.model.apply_report(report)
        self.detail.set_report(report)
        row = self.model.job_row(report.job_id)
        if row is not None and row.job_id == self.detail.job_id:
            self.detail.update_title(row)
        self._after_change()

    def remove_job(self, job_id: str) -> None:
        was_current = job_id == self.detail.job_id
        self.model.remove(job_id)
        if was_current and self.model.rowCount() == 0:
            self.detail.show_job(None)
        self._after_change()

    def running_job_ids(self) -> List[str]:
        return [self.model.row(n).job_id for n in range(self.model.rowCount())
                if self.model.row(n).state in (JobState.RUNNING, JobState.PENDING)]

    # --- buttons -----------------------------------------------------------

    def _trigger(self, key: str) -> None:
        job_id = self.selected_job_id()
        if job_id is None:
            return
        if self.actions is None:
            return
        handlers = {"pause": self.actions.pause_job, "resume": self.actions.resume_job,
                    "cancel": self.actions.cancel_job, "retry": self.actions.retry_job,
                    "remove": self.actions.remove_job}
        handlers[key](job_id)

    def _after_change(self) -> None:
        self._update_buttons()
        states = [self.model.row(n).state for n in range(self.model.rowCount())]
        running = sum(1 for s in states if s == JobState.RUNNING)
        paused = sum(1 for s in states if s == JobState.PAUSED)
        parts = [f"{running} running"] if running else []
        if paused:
            parts.append(f"{paused} paused")
        self.summary.setText(", ".join(parts))

    def _update_buttons(self) -> None:
        job_id = self.selected_job_id()
        row = self.model.job_row(job_id) if job_id else None
        allowed = allowed_actions(row.state if row else None)
        for key, button in self.buttons.items():
            button.setEnabled(allowed[key])
