"""The Transfers dock: the jobs table with its controls, and the selected job's detail."""

from __future__ import annotations

from typing import Callable, List, Optional, Protocol

from PySide6.QtCore import (QModelIndex, QPersistentModelIndex, QPoint, QSortFilterProxyModel, Qt, QTimer,
                            Signal)
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QComboBox, QHBoxLayout, QHeaderView, QLabel,
                               QInputDialog, QMenu, QMessageBox, QPushButton, QSplitter, QStyle, QStyledItemDelegate,
                               QStyleOptionProgressBar, QStyleOptionViewItem, QTableView, QVBoxLayout, QWidget)
from PySide6.QtGui import QColor, QPainter, QPalette, QResizeEvent

from gui.engine.events import BucketProgress, CommitmentReport, JobProgress, JobState, TransferMode
from gui.ui.transfers.job_detail import JobDetail
from gui.ui.transfers.jobs_model import (COL_PROGRESS, COL_WHAT, BarColourRole, FractionRole, JobIdRole,
                                         JobRow, JobsModel)


class JobActions(Protocol):
    """What the panel's buttons ask for; the controller runs them on the engine."""

    def pause_job(self, job_id: str) -> None: ...
    def resume_job(self, job_id: str) -> None: ...
    def cancel_job(self, job_id: str) -> None: ...
    def retry_job(self, job_id: str) -> None: ...
    def remove_job(self, job_id: str) -> None: ...
    def job_limit(self, job_id: str) -> int: ...                   # the job's own cap, KB/s (0: none)
    def set_job_limit(self, job_id: str, kb_per_second: int) -> None: ...


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


class JobsFilter(QSortFilterProxyModel):
    """Rows of the jobs model whose state is in the chosen group."""

    GROUPS = {
        "all": None,
        "active": (JobState.PENDING, JobState.RUNNING, JobState.PAUSED),
        "failed": (JobState.FAILURE, JobState.CANCELED),
        "finished": (JobState.SUCCESS,),
    }

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._states: Optional[tuple] = None

    def set_group(self, key: str) -> None:
        self._states = self.GROUPS.get(key)
        self.invalidate()   # (invalidateFilter is deprecated in this Qt)

    def filterAcceptsRow(self, row: int, parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        if self._states is None:
            return True
        model = self.sourceModel()
        assert isinstance(model, JobsModel)
        return model.row(row).state in self._states


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
        # The table shows the model through a filter: all, active, failed or finished jobs.
        self.proxy = JobsFilter(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setObjectName("jobsTable")
        self.table.setModel(self.proxy)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self._column_widths: Optional[tuple] = None
        self._fit_columns(1400)
        header.setSectionResizeMode(COL_WHAT, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.table.setMinimumHeight(2 * 24 + 28)   # two jobs and the header; the splitter gives more
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
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.setObjectName("clearFinishedButton")
        self.clear_button.setToolTip("Forget every successful or canceled job (nothing changes on the servers)")
        self.clear_button.clicked.connect(self.clear_finished)
        bar.addWidget(self.clear_button)
        bar.addStretch(1)
        self.summary = QLabel()
        bar.addWidget(self.summary)
        self.filter_combo = QComboBox()
        self.filter_combo.setObjectName("jobsFilter")
        self.filter_combo.setToolTip("Which jobs the table lists")
        for label, key in (("All jobs", "all"), ("Active", "active"), ("Failed", "failed"),
                           ("Finished", "finished")):
            self.filter_combo.addItem(label, key)
        self.filter_combo.currentIndexChanged.connect(
            lambda _i: self.set_filter(str(self.filter_combo.currentData())))
        bar.addWidget(self.filter_combo)

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
        self._after_change()

    #: Column widths (What stretches): State fits "Running · verifying (push)"; the narrow set
    #: fits every column in a 1024-pixel window, the texts cut with "…" (tooltips have them).
    WIDE_COLUMNS = (190, 260, 165, 240, 90, 90, 90, 60, 60, 60)
    NARROW_COLUMNS = (140, 120, 150, 215, 75, 82, 75, 48, 56, 40)
    NARROW_BELOW = 1250

    def _fit_columns(self, width: int) -> None:
        """The wide or the narrow widths, as the panel's width asks; a user's own widths are
        kept until the panel crosses from one to the other."""
        widths = self.NARROW_COLUMNS if width < self.NARROW_BELOW else self.WIDE_COLUMNS
        if widths is not self._column_widths:
            self._column_widths = widths
            for col, size in enumerate(widths):
                self.table.setColumnWidth(col, size)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's naming
        super().resizeEvent(event)
        self._fit_columns(event.size().width())

    # --- selection ----------------------------------------------------------

    def selected_job_id(self) -> Optional[str]:
        index = self.proxy.mapToSource(self.table.selectionModel().currentIndex())
        if not index.isValid():
            return None
        return self.model.row(index.row()).job_id

    def select_job(self, job_id: str) -> None:
        n = self.model.row_of(job_id)
        if n >= 0:
            index = self.proxy.mapFromSource(self.model.index(n, 0))
            if not index.isValid():          # filtered out: show every job again
                self.filter_combo.setCurrentIndex(0)
                index = self.proxy.mapFromSource(self.model.index(n, 0))
            self.table.selectRow(index.row())
            self.table.setCurrentIndex(index)

    def _select_new_row(self, _parent: QModelIndex, first: int, _last: int) -> None:
        # Follow a newly started job, unless the user is looking at a running one.
        current = self.selected_job_id()
        current_row = self.model.job_row(current) if current else None
        if current_row is None or current_row.state != JobState.RUNNING:
            self.select_job(self.model.row(first).job_id)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        source = self.proxy.mapToSource(current)
        row = self.model.row(source.row()) if source.isValid() else None
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

    def set_job_limit(self, job_id: str, kb_per_second: int) -> None:
        """The job's own cap changed: its row and, when shown, its header say so."""
        self.model.set_limit(job_id, kb_per_second)
        self._refresh_title(job_id)

    def set_global_limit(self, kb_per_second: int) -> None:
        """The cap for all jobs changed (Settings ▸ Transfers)."""
        self.model.set_global_limit(kb_per_second)
        if self.detail.job_id:
            self._refresh_title(self.detail.job_id)

    def _refresh_title(self, job_id: str) -> None:
        row = self.model.job_row(job_id)
        if row is not None and job_id == self.detail.job_id:
            self.detail.update_title(row)

    def running_job_ids(self) -> List[str]:
        return [self.model.row(n).job_id for n in range(self.model.rowCount())
                if self.model.row(n).state in (JobState.RUNNING, JobState.PENDING)]

    # --- queue ---------------------------------------------------------------

    def set_filter(self, key: str) -> None:
        """all | active | failed | finished"""
        n = self.filter_combo.findData(key)
        if n >= 0 and n != self.filter_combo.currentIndex():
            self.filter_combo.setCurrentIndex(n)
            return
        self.proxy.set_group(key)
        self._update_buttons()

    def visible_job_ids(self) -> List[str]:
        return [str(self.proxy.index(n, 0).data(JobIdRole)) for n in range(self.proxy.rowCount())]

    def clear_finished(self) -> None:
        for n in reversed(range(self.model.rowCount())):
            row = self.model.row(n)
            if row.state in (JobState.SUCCESS, JobState.CANCELED) and self.actions is not None:
                self.actions.remove_job(row.job_id)

    def context_menu_for(self, job_id: str) -> QMenu:
        """The job's menu: what the buttons do, plus the report (built for a click or a test)."""
        row = self.model.job_row(job_id)
        allowed = allowed_actions(row.state if row else None)
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        for key, label in (("pause", "Pause"), ("resume", "Resume"), ("cancel", "Cancel…"),
                           ("retry", "Retry"), ("report", "Show report"), ("remove", "Remove"),
                           ("limit", "Speed limit…")):
            action = menu.addAction(label)
            action.setObjectName(f"{key}JobAction")
            if key == "limit":
                # Any job not finished yet: a running one slows down (or speeds up) at once;
                # not a delegated one, whose bytes go server to server.
                delegated = row is not None and row.mode is TransferMode.DELEGATE
                action.setEnabled(row is not None and not row.state.finished and not delegated)
                if row is not None and row.limit_text:
                    action.setText(f"Speed limit… ({row.limit_text})")
                action.setToolTip(row.limit_tooltip if row is not None else "")
                action.triggered.connect(lambda _=False, j=job_id: self._act("limit", j))
            elif key == "report":
                action.setEnabled(row is not None and row.report is not None)
                action.triggered.connect(lambda _=False, j=job_id: self.show_report(j))
            else:
                action.setEnabled(allowed[key])
                action.triggered.connect(lambda _=False, k=key, j=job_id: self._act(k, j))
        return menu

    def show_report(self, job_id: str) -> None:
        self.select_job(job_id)
        self.detail.commitment.table.setFocus()

    def _context_menu(self, position: QPoint) -> None:
        index = self.proxy.mapToSource(self.table.indexAt(position))
        if not index.isValid():
            return
        job_id = self.model.row(index.row()).job_id
        self.select_job(job_id)
        self.context_menu_for(job_id).popup(self.table.viewport().mapToGlobal(position))

    # --- buttons -----------------------------------------------------------

    def _trigger(self, key: str) -> None:
        job_id = self.selected_job_id()
        if job_id is None:
            return
        self._act(key, job_id)

    def _act(self, key: str, job_id: str) -> None:
        if self.actions is None:
            return
        if key == "cancel" and not self.confirm_cancel(job_id):
            return
        if key == "limit":
            value = self.ask_rate(self.actions.job_limit(job_id))
            if value is not None:
                self.actions.set_job_limit(job_id, value)
            return
        handlers = {"pause": self.actions.pause_job, "resume": self.actions.resume_job,
                    "cancel": self.actions.cancel_job, "retry": self.actions.retry_job,
                    "remove": self.actions.remove_job}
        handlers[key](job_id)

    def _after_change(self) -> None:
        # No job, no detail: the dock then needs only its buttons and an empty table.
        self.detail.setVisible(self.model.rowCount() > 0)
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
        self.clear_button.setEnabled(any(self.model.row(n).state in (JobState.SUCCESS, JobState.CANCELED)
                                         for n in range(self.model.rowCount())))

    #: Cancelling throws away what was sent: ask first once this much is done.
    CONFIRM_CANCEL_FROM = 0.5

    def confirm_cancel(self, job_id: str) -> bool:
        """Whether to cancel: asked only for a job that is mostly done."""
        row = self.model.job_row(job_id)
        done = row.progress.fraction if row is not None and row.progress is not None else 0.0
        if done < self.CONFIRM_CANCEL_FROM:
            return True
        return self.ask_cancel(f"This transfer is {done * 100:.0f} % done. Cancelling discards it: "
                               "the target is put back as it was. Cancel it anyway?")

    def ask_rate(self, current: int) -> Optional[int]:
        """The job's speed limit in KB/s, asked (tests replace it); None when dismissed."""
        value, ok = QInputDialog.getInt(
            self, "Speed limit", "Most KB per second this transfer may move (0: no limit of its own;\n"
            "the limit for all jobs in Settings ▸ Transfers still applies):", current, 0, 100 * 1024 * 1024, 100)
        return value if ok else None

    def ask_cancel(self, text: str) -> bool:
        """The question itself (tests replace it)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Cancel the transfer?", text, parent=self)
        discard = box.addButton("Cancel the transfer", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(box.addButton("Keep it running", QMessageBox.ButtonRole.RejectRole))
        box.exec()
        return box.clickedButton() is discard
