"""One side of the main window: a peer selector, its status, a search box and its tree.

Each pane has its own OrthancClient and its own tasks, so a slow or dead
peer in one pane never holds up the other. Changing the peer cancels what
the pane was still waiting for and closes the old client.

Drops are not handled here: the transfers UI installs handlers with
``set_drag_enter_handler`` and ``set_drop_handler``; both receive
``(pane, QMimeData)`` and return True to accept.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from PySide6.QtCore import (QByteArray, QDate, QItemSelectionModel, QMimeData, QModelIndex, QPoint, QSettings, Qt,
                            QTimer, Signal)
from PySide6.QtGui import QAction, QDrag, QIcon
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDateEdit, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QMenu, QSizePolicy, QStyle, QToolButton, QTreeView, QVBoxLayout,
                               QWidget)

from gui.client import AcceleratorInfo, OrthancClient, OrthancError, Peer, ServerInfo
from gui.ui.async_tasks import TaskRunner, spawn_detached, user_message
from gui.ui.resource_mime import MIME_TYPE, from_mime_data
from gui.ui.study_browser import MODALITIES, Search, date_range, date_range_label
from gui.ui.study_tree_model import COL_NAME, COLUMNS, DEFAULT_PAGE_SIZE, IdRole, LevelRole, StudyTreeModel

log = logging.getLogger(__name__)

DropHandler = Callable[["PeerPane", QMimeData], bool]
MenuProvider = Callable[["PeerPane", QMenu], None]

SEARCH_DELAY_MS = 350
NAME_MIN_WIDTH = 180
#: Study-date presets of the filter: (label, days back; -1 any date, 0 today, DATE_RANGE the
#: two date fields next to it).
DATE_RANGE = -2
DATE_RANGE_LABEL = "Range\u2026"
DATE_PRESETS = (("Any date", -1), ("Today", 0), ("Last 7 days", 7), ("Last 30 days", 30),
                ("Last 12 months", 365), (DATE_RANGE_LABEL, DATE_RANGE))
#: A new range starts as the last 30 days, a span a user narrows more often than widens.
DATE_RANGE_DEFAULT_DAYS = 30
PLAIN_HTTP_WARNING = ("Plain HTTP to a remote host: passwords and images travel unencrypted. "
                      "Use https:// for peers outside this computer.")


def plain_http_icon() -> QIcon:
    from PySide6.QtWidgets import QApplication
    return QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)


def describe_connection_error(peer: Peer, exc: BaseException) -> str:
    """What went wrong reaching a peer, in words a user can act on."""
    if isinstance(exc, OrthancError):
        if exc.status is None:
            return f"Cannot reach {peer.name} at {peer.url}: {exc.reason}"
        if exc.status == 401:
            return f"{peer.name}: wrong username or password (HTTP 401 from {peer.url})"
        if exc.status == 403:
            return f"{peer.name}: access forbidden (HTTP 403 from {peer.url})"
        if exc.status in (200, 404) or "not Orthanc" in exc.reason:
            return (f"{peer.url} answers HTTP but is not an Orthanc server, or the URL is wrong "
                    f"({exc.reason})")
        return str(exc)
    return user_message(exc, f"Cannot connect to {peer.name}")


class PeerTreeView(QTreeView):
    """The tree; drag and drop events are routed to its pane's handlers."""

    def __init__(self, pane: "PeerPane") -> None:
        super().__init__(pane)
        self._pane = pane
        self._drag_accepted = False

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's naming
        super().resizeEvent(event)
        self._pane._fit_name_column()

    def startDrag(self, supported: Qt.DropAction) -> None:  # noqa: N802 - Qt's naming
        # The model leaves flags() to Qt (a Python flags() costs two calls per loaded row on
        # every insertion), so Qt sees no draggable rows: start the drag here instead.
        rows = self.selectionModel().selectedRows(0)
        if not rows:
            return
        drag = QDrag(self)
        drag.setMimeData(self.model().mimeData(rows))
        drag.exec(Qt.DropAction.CopyAction)

    def dragEnterEvent(self, event: Any) -> None:
        self._drag_accepted = self._pane.accepts_drag(event.mimeData(), source=event.source())
        if self._drag_accepted:
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            self._pane.show_drop_hint(event.mimeData())
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:
        super().dragMoveEvent(event)  # auto-scroll while dragging
        if self._drag_accepted:
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragLeaveEvent(self, event: Any) -> None:
        self._drag_accepted = False
        self._pane.show_drop_hint(None)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: Any) -> None:
        self._drag_accepted = False
        self._pane.show_drop_hint(None)
        if self._pane.handle_drop(event.mimeData()):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()


class PeerPane(QWidget):
    """Browse one peer. Public API used by the main window and the transfers UI."""

    #: The selected peer changed (a gui.client.Peer, or None).
    peerChanged = Signal(object)
    #: The selection in the tree changed.
    selectionChanged = Signal()
    #: The status line changed: (state, text); state is idle|connecting|ok|error.
    statusChanged = Signal(str, str)

    def __init__(self, peers: Sequence[Peer] = (), *, name: str = "", page_size: int = DEFAULT_PAGE_SIZE,
                 http_timeout: float = 60.0, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName(name or "peerPane")
        self.http_timeout = http_timeout
        self._peers: List[Peer] = list(peers)
        self._peer: Optional[Peer] = None
        self._client: Optional[OrthancClient] = None
        self._server: Optional[ServerInfo] = None
        self._accelerator: Optional[AcceleratorInfo] = None
        self._state = "idle"
        self._server_text = ""
        self._drop_handler: Optional[DropHandler] = None
        self._drag_enter_handler: Optional[DropHandler] = None
        self._menu_providers: List[MenuProvider] = []
        # Rows to expand / select again when they come back after a reload or a search.
        self._restore_expanded: Set[Tuple[str, str]] = set()
        self._restore_selected: Set[Tuple[str, str]] = set()
        self._open: Set[Tuple[str, str]] = set()   # rows expanded in the tree now
        self._rebuild_view: Tuple[Optional[Tuple[str, str]], int] = (None, 0)
        self._runner = TaskRunner(self)

        self.selector = QComboBox(self)
        self.selector.setObjectName("peerSelector")
        self.selector.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.selector.setToolTip("The Orthanc server shown in this pane")
        self.selector.setPlaceholderText("Choose a peer…")
        self.status_label = QLabel(self)
        self.status_label.setObjectName("peerStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.search_box = QLineEdit(self)
        self.search_box.setObjectName("searchBox")
        self.search_box.setPlaceholderText("Search patient name, patient ID or accession number")
        self.search_box.setClearButtonEnabled(True)
        self.retry_button = QToolButton(self)
        self.retry_button.setObjectName("retryConnection")
        self.retry_button.setText("Retry")
        self.retry_button.setToolTip("Try to reach the server again (F5)")
        self.retry_button.clicked.connect(self.refresh)
        self.retry_button.hide()
        # While an accepted drag hovers: what the drop will do.
        self.drop_hint = QLabel(self)
        self.drop_hint.setObjectName("dropHint")
        self.drop_hint.setWordWrap(True)
        self.drop_hint.setStyleSheet("QLabel { background:#e3f2fd; color:#0d47a1; border:2px dashed #1e88e5;"
                                     " padding:6px; font-weight:bold; }")
        self.drop_hint.hide()

        self.model = StudyTreeModel(self, page_size=page_size)
        self.tree = PeerTreeView(self)
        self.tree.setObjectName("studyTree")
        self.tree.setModel(self.model)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setUniformRowHeights(True)  # cheap layout with thousands of rows
        # The model's rows are Qt's own items, which call themselves editable: nothing is.
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setDragEnabled(True)
        self.tree.setAcceptDrops(True)
        self.tree.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.tree.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.tree.setDropIndicatorShown(False)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.setAlternatingRowColors(True)
        header = self.tree.header()
        header.setStretchLastSection(False)
        # The name column takes the room the others leave, but never less than NAME_MIN_WIDTH
        # (a narrow pane scrolls sideways instead of cutting every name to "Ja…").
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Interactive)
        for column, width in zip(range(1, len(COLUMNS)), (84, 80, 80, 84, 72, 46, 62, 64)):
            header.resizeSection(column, width)
        header.sectionResized.connect(lambda column, _old, _new: column != COL_NAME and self._fit_name_column())
        # Sorting on a click, not at once: an initial sort would reorder every page as it comes.
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        header.sortIndicatorChanged.connect(self.model.sort)
        self._restore_columns()
        header.sectionResized.connect(lambda *_: self._column_timer.start())
        self._column_timer = QTimer(self)
        self._column_timer.setSingleShot(True)
        self._column_timer.setInterval(500)
        self._column_timer.timeout.connect(self._save_columns)

        self.date_filter = QComboBox(self)
        self.date_filter.setObjectName("dateFilter")
        self.date_filter.setToolTip("Study date")
        # Grows to show a chosen range in full, not cut to the width of "Last 12 months".
        self.date_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for label, days in DATE_PRESETS:
            self.date_filter.addItem(label, days)
        self.modality_filter = QComboBox(self)
        self.modality_filter.setObjectName("modalityFilter")
        self.modality_filter.setToolTip("Modality in the study")
        self.modality_filter.addItem("Any modality", "")
        for modality in MODALITIES:
            self.modality_filter.addItem(modality, modality)
        self.date_from_edit = self._date_edit("dateFrom", "Studies from this date (included)")
        self.date_to_edit = self._date_edit("dateTo", "Studies up to this date (included)")
        today = QDate.currentDate()
        self.date_from_edit.setDate(today.addDays(-DATE_RANGE_DEFAULT_DAYS))
        self.date_to_edit.setDate(today)
        # From ≤ to: moving one end past the other drags the other along.
        self.date_from_edit.dateChanged.connect(lambda date: self._range_edited(date, self.date_to_edit, True))
        self.date_to_edit.dateChanged.connect(lambda date: self._range_edited(date, self.date_from_edit, False))
        self.date_filter.currentIndexChanged.connect(lambda _i: self._date_filter_changed())
        self.modality_filter.currentIndexChanged.connect(lambda _i: self._run_search())

        self._header_row = QHBoxLayout()
        self._header_row.setContentsMargins(0, 0, 0, 0)
        self._header_row.addWidget(self.selector, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(self._header_row)
        status_row = QHBoxLayout()
        status_row.setContentsMargins(0, 0, 0, 0)
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.retry_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(status_row)
        search_row = QHBoxLayout()
        search_row.setContentsMargins(0, 0, 0, 0)
        search_row.addWidget(self.search_box, 1)
        search_row.addWidget(self.date_filter)
        search_row.addWidget(self.date_from_edit)
        search_row.addWidget(self.date_to_edit)
        search_row.addWidget(self.modality_filter)
        layout.addLayout(search_row)
        layout.addWidget(self.drop_hint)
        layout.addWidget(self.tree, 1)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self._run_search)
        self.search_box.textChanged.connect(lambda _text: self._search_timer.start())
        self.search_box.returnPressed.connect(self._run_search)
        self.selector.currentIndexChanged.connect(self._selector_changed)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.selectionModel().selectionChanged.connect(lambda *_: self.selectionChanged.emit())
        # A reload (F5, a search) drops the selection without selectionChanged: say so anyway.
        self.model.modelReset.connect(lambda: self.selectionChanged.emit())
        # A reset closes every row without a signal; what was open is remembered before it.
        self.model.modelReset.connect(self._open.clear)
        self.tree.expanded.connect(self._opened)
        self.tree.collapsed.connect(self._closed)
        self.model.rowsRemoved.connect(lambda *_: self.selectionChanged.emit())
        self.model.rowsInserted.connect(self._rows_back)
        self.model.aboutToRebuild.connect(self._before_rebuild)
        self.model.rebuilt.connect(self._after_rebuild)
        self.model.loadingChanged.connect(lambda _loading: self._render_status())
        self.model.rowsLoaded.connect(lambda _count: self._render_status())
        self.model.loadFailed.connect(self._model_failed)
        self._runner.failed.connect(lambda message: self._set_status("error", message))

        self._fill_selector(self._peers, None)
        self._render_status()

    # --- public API ------------------------------------------------------------

    @property
    def peer(self) -> Optional[Peer]:
        return self._peer

    @property
    def client(self) -> Optional[OrthancClient]:
        return self._client

    @property
    def server_info(self) -> Optional[ServerInfo]:
        return self._server

    @property
    def accelerator_info(self) -> Optional[AcceleratorInfo]:
        return self._accelerator

    @property
    def state(self) -> str:
        """idle | connecting | ok | error"""
        return self._state

    @property
    def status_text(self) -> str:
        return self.status_label.text()

    @property
    def peers(self) -> List[Peer]:
        return list(self._peers)

    def set_peers(self, peers: Sequence[Peer], select: Optional[str] = None) -> None:
        """Replace the peer list (after the settings changed), keeping the
        current peer when it still exists; reconnects when its definition changed."""
        current = select or (self._peer.name if self._peer else None)
        self._peers = list(peers)
        self._fill_selector(self._peers, current)

    def select_peer(self, name: Optional[str]) -> None:
        for row in range(self.selector.count()):
            if self.selector.itemData(row) == name:
                if self.selector.currentIndex() == row:
                    self._selector_changed(row)
                else:
                    self.selector.setCurrentIndex(row)
                return
        self.set_peer(None)

    def set_peer(self, peer: Optional[Peer]) -> None:
        """Show another peer: cancel the old one's requests, connect, then load."""
        self._runner.cancel_all()
        self._close_client()
        if peer is None or self._peer is None or peer.name != self._peer.name:
            self._restore_expanded.clear()
            self._restore_selected.clear()
        self._peer = peer
        self._server = None
        self._accelerator = None
        self.model.set_source(None, peer.name if peer else "")
        if peer is None:
            self._set_status("idle", "No peer selected. Add one with File → Settings…"
                             if not self._peers else "No peer selected.")
        else:
            try:
                self._client = OrthancClient(peer, timeout=peer.timeout or self.http_timeout)
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable certificate file
                self._set_status("error", user_message(exc, f"Cannot use {peer.name}"))
            else:
                self._connect()
        self.peerChanged.emit(peer)

    def refresh(self) -> None:
        """Reconnect if the peer was unreachable, else reload the tree (F5)."""
        if self._peer is None:
            return
        if self._state == "error" or self._server is None or self._client is None:
            self.set_peer(self._peer)
        else:
            self._remember_view()
            self.model.reload()

    def search(self, text: str, *, days: Optional[int] = None, modality: Optional[str] = None,
               dates: Optional[Tuple[datetime.date, datetime.date]] = None) -> None:
        """Search now (the search box waits for typing to pause). ``days``: studies of the
        last N days (0: today, -1: any date); ``dates``: studies from, to (both included),
        instead of ``days``; ``modality``: "" for any."""
        if dates is not None:
            days = DATE_RANGE
            for edit in (self.date_from_edit, self.date_to_edit):
                edit.blockSignals(True)
            first, last = min(dates), max(dates)
            self.date_from_edit.setDate(QDate(first.year, first.month, first.day))
            self.date_to_edit.setDate(QDate(last.year, last.month, last.day))
            for edit in (self.date_from_edit, self.date_to_edit):
                edit.blockSignals(False)
        for widget, value in ((self.date_filter, days), (self.modality_filter, modality)):
            if value is not None:
                widget.blockSignals(True)
                widget.setCurrentIndex(max(0, widget.findData(value)))
                widget.blockSignals(False)
        if self.search_box.text() != text:
            self.search_box.blockSignals(True)
            self.search_box.setText(text)
            self.search_box.blockSignals(False)
        self._show_date_range()
        self._run_search()

    def current_search(self) -> Search:
        """What the search box and the filters ask for."""
        days = self.date_filter.currentData()
        date_from = date_to = ""
        if days == DATE_RANGE:
            date_from, date_to = date_range(*self._range_dates())
        elif isinstance(days, int) and days >= 0:
            date_from = (datetime.date.today() - datetime.timedelta(days=days)).strftime("%Y%m%d")
        return Search(text=self.search_box.text().strip(), date_from=date_from, date_to=date_to,
                      modality=str(self.modality_filter.currentData() or ""))

    def _date_edit(self, name: str, tip: str) -> QDateEdit:
        edit = QDateEdit(self)
        edit.setObjectName(name)
        edit.setToolTip(tip)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd")
        edit.setVisible(False)
        return edit

    def _range_dates(self) -> Tuple[datetime.date, datetime.date]:
        first, last = self.date_from_edit.date(), self.date_to_edit.date()
        return (datetime.date(first.year(), first.month(), first.day()),
                datetime.date(last.year(), last.month(), last.day()))

    def _date_filter_changed(self) -> None:
        self._show_date_range()
        self._run_search()

    def _range_edited(self, date: QDate, other: QDateEdit, is_from: bool) -> None:
        if (is_from and date > other.date()) or (not is_from and date < other.date()):
            other.blockSignals(True)
            other.setDate(date)
            other.blockSignals(False)
        self._show_date_range()
        # Typing a date changes it digit by digit: wait for a pause, as the search box does.
        self._search_timer.start()

    def _show_date_range(self) -> None:
        """The date fields only with "Range…", and the chosen range written in the filter."""
        index = self.date_filter.findData(DATE_RANGE)
        active = self.date_filter.currentData() == DATE_RANGE
        label = DATE_RANGE_LABEL
        if active:
            label = date_range_label(*self._range_dates())
        self.date_filter.setItemText(index, label)
        self.date_from_edit.setVisible(active)
        self.date_to_edit.setVisible(active)

    def selected_resources(self) -> List[Dict[str, str]]:
        """Selected rows as ``{"Level", "ID"}``, without rows covered by a selected parent."""
        return self.model.resources_for(self.tree.selectionModel().selectedRows(0))[0]

    def selected_labels(self) -> List[str]:
        return self.model.resources_for(self.tree.selectionModel().selectedRows(0))[1]

    def set_drop_handler(self, handler: Optional[DropHandler]) -> None:
        self._drop_handler = handler

    def set_drag_enter_handler(self, handler: Optional[DropHandler]) -> None:
        self._drag_enter_handler = handler

    def add_context_menu_provider(self, provider: MenuProvider) -> None:
        """``provider(pane, menu)`` adds actions to the tree's context menu."""
        self._menu_providers.append(provider)

    def add_header_widget(self, widget: QWidget) -> None:
        """Put a widget (a button) next to the peer selector."""
        self._header_row.addWidget(widget)

    def accepts_drag(self, mime: QMimeData, source: Any = None) -> bool:
        if self._drag_enter_handler is not None:
            return bool(self._call_handler(self._drag_enter_handler, mime))
        if self._drop_handler is not None:
            return mime.hasFormat(MIME_TYPE) or mime.hasUrls()
        return False

    def handle_drop(self, mime: QMimeData) -> bool:
        """What a drop on this pane does: whatever the installed handler decides."""
        if self._drop_handler is None:
            return False
        return bool(self._call_handler(self._drop_handler, mime))

    async def aclose(self) -> None:
        """Stop everything and close the client (on quit)."""
        self._runner.cancel_all()
        self.model.set_source(None, "")
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # --- internals ----------------------------------------------------------------

    @property
    def unreachable(self) -> bool:
        """The pane's peer did not answer (its status is an error)."""
        return self._state == "error" and self._peer is not None

    def _mark_reachability(self, failed: bool, text: str) -> None:
        """The selector's entry of the current peer says when it cannot be reached."""
        if self._peer is None:
            return
        row = self.selector.findData(self._peer.name)
        if row < 0:
            return
        label = self._peer.name + ("  (local)" if self._peer.local else "")
        if failed:
            self.selector.setItemText(row, f"{label}  — unreachable")
            self.selector.setItemIcon(row, plain_http_icon())
            self.selector.setItemData(row, text, Qt.ItemDataRole.ToolTipRole)
        elif self.selector.itemText(row) != label:
            self.selector.setItemText(row, label)
            self.selector.setItemIcon(row, plain_http_icon() if self._peer.is_plain_http_to_remote else QIcon())
            self.selector.setItemData(row, self._peer.url, Qt.ItemDataRole.ToolTipRole)

    def show_drop_hint(self, mime: Optional[QMimeData]) -> None:
        """Highlight the pane and say what a drop does (None: the drag left)."""
        text = self._drop_text(mime) if mime is not None else ""
        self.drop_hint.setText(text)
        self.drop_hint.setVisible(bool(text))
        self.tree.viewport().setStyleSheet("background:#f1f8ff;" if text else "")

    def _drop_text(self, mime: QMimeData) -> str:
        target = self._peer.name if self._peer else "this server"
        drag = from_mime_data(mime)
        if drag is not None:
            count = len(drag.resources)
            what = drag.labels[0] if count == 1 and drag.labels else f"{count} items"
            return f"Drop to send {what} from {drag.peer} to {target}"
        files = [u for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        if files:
            return (f"Drop to upload {len(files)} file{'s' if len(files) != 1 else ''} or folder"
                    f"{'s' if len(files) != 1 else ''} to {target} (DICOM files only)")
        return ""

    def _remember_view(self) -> None:
        """What is expanded and selected now, to be put back as the rows return."""
        # The open rows as the tree's signals told them (asking the tree about each row
        # with children took 35 ms after a search matching 10,000 patients).
        self._restore_expanded |= self._open
        selected = {(str(i.data(LevelRole)), str(i.data(IdRole)))
                    for i in self.tree.selectionModel().selectedRows(0)}
        self._restore_selected = selected

    def _rows_back(self, parent: QModelIndex, first: int, last: int) -> None:
        wanted = len(self._restore_expanded) + len(self._restore_selected)
        if not wanted:
            return
        if wanted < last - first + 1:
            self._put_back()   # fewer rows to put back than rows inserted (a page of 1,600)
            return
        model = self.model
        indexes = []
        for row in range(first, last + 1):
            index = model.index(row, 0, parent)
            indexes.append(index)
            node = model.node(index)
            if node is not None and node.children:   # a search's patient comes with its studies
                indexes.extend(model.index(child, 0, index) for child in range(len(node.children)))
        self._put_back(indexes)

    def _opened(self, index: QModelIndex) -> None:
        node = self.model.node(index)
        if node is not None:
            self._open.add((node.level, node.id))

    def _closed(self, index: QModelIndex) -> None:
        node = self.model.node(index)
        if node is not None:
            self._open.discard((node.level, node.id))

    def _put_back(self, indexes: Optional[List[QModelIndex]] = None) -> None:
        """Expand and select again the remembered rows among ``indexes`` (default: all
        the remembered rows that are loaded)."""
        model = self.model
        if indexes is None:
            keys = self._restore_expanded | self._restore_selected
            indexes = [model.index_of(level, resource_id) for level, resource_id in keys]
        for index in indexes:
            node = model.node(index)
            if node is None:
                continue
            key = (node.level, node.id)
            if key in self._restore_expanded:
                self._restore_expanded.discard(key)
                self.tree.expand(index)
            if key in self._restore_selected:
                self._restore_selected.discard(key)
                self.tree.selectionModel().select(
                    index, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)

    def _before_rebuild(self) -> None:
        """A sort rebuilds the model's rows (a reset): remember the view."""
        self._remember_view()
        current = self.model.node(self.tree.currentIndex())
        self._rebuild_view = ((current.level, current.id) if current is not None else None,
                              self.tree.verticalScrollBar().value())

    def _after_rebuild(self) -> None:
        current, scrolled = self._rebuild_view
        self._put_back()   # what is loaded comes back now, the rest as it loads
        index = self.model.index_of(*current) if current is not None else QModelIndex()
        if index.isValid():
            self.tree.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.NoUpdate)
        self.tree.doItemsLayout()   # the scroll range first: the view stays where it was
        self.tree.verticalScrollBar().setValue(scrolled)

    def _fit_name_column(self) -> None:
        header = self.tree.header()
        others = sum(header.sectionSize(c) for c in range(len(COLUMNS)) if c != COL_NAME)
        header.resizeSection(COL_NAME, max(NAME_MIN_WIDTH, self.tree.viewport().width() - others))

    def _settings_key(self) -> str:
        return f"columns/{self.objectName()}/{len(COLUMNS)}-columns"

    def _restore_columns(self) -> None:
        """Column widths as the user left them (per pane)."""
        state = QSettings().value(self._settings_key())
        if isinstance(state, (bytes, bytearray, QByteArray)):
            header = self.tree.header()
            header.restoreState(QByteArray(state))
            # Widths only: the sort and the name column's mode are the pane's own.
            header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Interactive)
            header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)

    def _save_columns(self) -> None:
        QSettings().setValue(self._settings_key(), self.tree.header().saveState())

    def _call_handler(self, handler: DropHandler, mime: QMimeData) -> bool:
        try:
            return handler(self, mime)
        except Exception as exc:  # noqa: BLE001 - a failing handler must not crash the drag
            log.warning("drop handler failed", exc_info=exc)
            self._set_status("error", user_message(exc, "Drop failed"))
            return False

    def _fill_selector(self, peers: Sequence[Peer], current: Optional[str]) -> None:
        old_peer = self._peer
        self.selector.blockSignals(True)
        self.selector.clear()
        if not peers:
            self.selector.addItem("(no peers configured)", None)
            self.selector.setEnabled(False)
        else:
            self.selector.setEnabled(True)
            for peer in peers:
                label = peer.name + ("  (local)" if peer.local else "")
                if peer.is_plain_http_to_remote:
                    self.selector.addItem(plain_http_icon(), label, peer.name)
                    self.selector.setItemData(self.selector.count() - 1,
                                              f"{peer.url}\n{PLAIN_HTTP_WARNING}",
                                              Qt.ItemDataRole.ToolTipRole)
                else:
                    self.selector.addItem(label, peer.name)
                    self.selector.setItemData(self.selector.count() - 1, peer.url,
                                              Qt.ItemDataRole.ToolTipRole)
        new_peer = next((p for p in peers if p.name == current), None)
        if new_peer is not None:
            self.selector.setCurrentIndex(self.selector.findData(new_peer.name))
        elif peers:
            self.selector.setCurrentIndex(-1)  # shows the placeholder: nothing chosen yet
        self.selector.blockSignals(False)
        self._update_selector_badge()
        if new_peer is None:
            if old_peer is not None or self._state != "idle" or not peers:
                self.set_peer(None)
        elif old_peer is None or new_peer.to_orthanc() != old_peer.to_orthanc() \
                or new_peer.name != old_peer.name:
            self.set_peer(new_peer)
        else:
            self._peer = new_peer

    def _update_selector_badge(self) -> None:
        peer = next((p for p in self._peers if p.name == self.selector.currentData()), None)
        self.selector.setToolTip(PLAIN_HTTP_WARNING if peer and peer.is_plain_http_to_remote
                                 else "The Orthanc server shown in this pane")

    def _selector_changed(self, row: int) -> None:
        name = self.selector.itemData(row)
        self._update_selector_badge()
        self.set_peer(next((p for p in self._peers if p.name == name), None))

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            spawn_detached(client.aclose(), "closing a connection")

    def _connect(self) -> None:
        peer, client = self._peer, self._client
        assert peer is not None and client is not None
        self._set_status("connecting", f"Connecting to {peer.name} ({peer.url})…")

        async def probe() -> tuple:
            info = await client.system()
            try:
                accelerator: Optional[AcceleratorInfo] = await client.accelerator()
            except OrthancError as exc:
                if exc.status is None or exc.status == 401:
                    raise
                accelerator = None  # reachable Orthanc; the probe itself misbehaved
            return info, accelerator

        def connected(result: tuple) -> None:
            if self._client is not client:
                return  # the peer changed meanwhile
            self._server, self._accelerator = result
            self._state = "ok"
            self.model.set_source(client, peer.name)
            self.model.load(self.current_search())
            self._render_status()

        def failed(exc: BaseException, _message: str) -> None:
            if self._client is client:
                self._set_status("error", describe_connection_error(peer, exc))

        self._runner.start(probe(), key="connect", what=f"Connecting to {peer.name}",
                           on_result=connected, on_error=failed)

    def _run_search(self) -> None:
        self._search_timer.stop()
        if self._client is not None and self._server is not None:
            self._remember_view()
            self.model.load(self.current_search())

    def _model_failed(self, message: str) -> None:
        if self.model.error:  # the list itself failed, not a single row
            self._set_status("error", message)

    def _render_status(self) -> None:
        if self._state in ("connecting", "error") and self._server is None:
            return
        if self._peer is None:
            return
        if self._server is None:
            return
        parts = [f"Orthanc {self._server.version}"]
        if self._accelerator is None:
            parts.append("accelerator: unknown")
        elif self._accelerator.available:
            parts.append(f"accelerator: yes ({self._accelerator.flavour})")
        else:
            parts.append("accelerator: no (standard REST transfers)")
        count = self.model.top_level_count
        noun = "patient" if count == 1 else "patients"
        if not self.model.search.empty:
            noun += " matching"
        if self.model.error:
            self._set_status("error", self.model.error)
            return
        if self.model.is_loading:
            parts.append(f"loading… {count} {noun}")
        else:
            parts.append(f"{count} {noun}")
        self._set_status("ok", " · ".join(parts))

    def _set_status(self, state: str, text: str) -> None:
        self._state = state
        self.status_label.setText(text)
        self.status_label.setToolTip(text)
        self.status_label.setProperty("state", state)
        # A pane that cannot reach its server offers to try again and has nothing to search.
        failed = state == "error" and self._peer is not None
        self.retry_button.setVisible(failed)
        self._mark_reachability(failed, text)
        for widget in (self.search_box, self.date_filter, self.date_from_edit, self.date_to_edit,
                       self.modality_filter):
            widget.setEnabled(not (failed and self._server is None))
        # Re-apply the style sheet so the colour follows the state property.
        self.status_label.style().unpolish(self.status_label)
        self.status_label.style().polish(self.status_label)
        self.statusChanged.emit(state, text)

    def _context_menu(self, position: QPoint) -> None:
        menu = QMenu(self)
        refresh = QAction("Refresh", menu)
        refresh.setShortcut("F5")
        refresh.triggered.connect(self.refresh)
        menu.addAction(refresh)
        for provider in self._menu_providers:
            try:
                provider(self, menu)
            except Exception as exc:  # noqa: BLE001
                log.warning("context menu provider failed", exc_info=exc)
        menu.popup(self.tree.viewport().mapToGlobal(position))
