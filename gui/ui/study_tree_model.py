"""The Qt face of a ``StudyBrowser``: Patients → Studies → Series, rendered.

All network work (pages, search merge, children, statistics) is the
browser's (``gui/ui/study_browser.py``, Qt-free); this model turns its news
into Qt's insert/reset/dataChanged signals, asks it for children when the
view expands a row (``canFetchMore``/``fetchMore``) and for statistics (and a
patient's modalities) when the view paints a row, and sorts what is loaded.
Qt (C++) holds the shape of the tree, so that the per-row questions the view
asks after each insertion cost no Python call (docs/ui.md, "A large server").

Columns follow radiology habits: patient name (or the study / series
description), patient ID, birth date, study date, accession number,
modalities, number of series, instances and size.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from PySide6.QtCore import QMimeData, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
import shiboken6

from gui.client import OrthancClient
from gui.ui.resource_mime import MIME_TYPE, to_mime_data
from gui.ui.study_browser import (DEFAULT_PAGE_SIZE, STATS_FAILED, STATS_PENDING, Node, Search,
                                  StudyBrowser)

COLUMNS = ("Patient / description", "Patient ID", "Birth date", "Study date", "Accession", "Modalities",
           "Series", "Instances", "Size")
(COL_NAME, COL_PATIENT_ID, COL_BIRTH_DATE, COL_STUDY_DATE, COL_ACCESSION, COL_MODALITY, COL_SERIES,
 COL_INSTANCES, COL_SIZE) = range(len(COLUMNS))
HEADER_TIPS = ("Patient name; for a study its description, for a series its number and description",
               "Patient ID", "Patient's birth date", "Study date (series date on a series row)",
               "Accession number of the study",
               "Modalities in the study (on a patient row: in the patient's studies)",
               "Number of series", "Number of instances", "Size on the server (uncompressed)")

LevelRole = int(Qt.ItemDataRole.UserRole) + 1    # "Patient" | "Study" | "Series"
IdRole = int(Qt.ItemDataRole.UserRole) + 2       # Orthanc ID
ResourceRole = int(Qt.ItemDataRole.UserRole) + 3  # {"Level": ..., "ID": ...}

# No flags() override: the view asks it twice per loaded row after every insertion. Qt's
# (C++) flags also say "editable": the tree has no edit triggers. PeerTreeView starts drags
# itself and handles drops.
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_ALIGN = int(Qt.ItemDataRole.TextAlignmentRole)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_NUMERIC = (COL_SERIES, COL_INSTANCES, COL_SIZE)
_COLUMN_COUNT = len(COLUMNS)
_TAG_COLUMNS = {COL_PATIENT_ID: "PatientID", COL_ACCESSION: "AccessionNumber"}
_INVALID = QModelIndex()
_ROLES = frozenset((_DISPLAY, _TOOLTIP, _ALIGN, LevelRole, IdRole, ResourceRole))
#: Qt rows a reset left behind, freed per loop turn (5,000: ~1 ms).
RELEASE_SLICE = 5000


class StudyTreeModel(QStandardItemModel):
    """Patients → Studies → Series of one Orthanc peer, as a ``StudyBrowser`` knows them.

    Qt holds the shape of the tree (a ``QStandardItemModel`` whose rows are mostly empty
    slots): after every insertion at the top level QTreeView asks ``index()``,
    ``hasChildren()`` and ``flags()`` of every loaded row, and those stay in C++. Python
    only answers what is painted (``data()``) and what is rare (``rowCount()``, fetching,
    sorting, drag payload). A row whose children are not loaded yet holds one hidden empty
    child, so that C++ says it has children (the expand arrow) while ``rowCount()`` says 0.
    """

    #: Top-level pages are loading (True) or done/failed (False).
    loadingChanged = Signal(bool)
    #: Loading something failed: a message for the user.
    loadFailed = Signal(str)
    #: Number of top-level rows loaded so far.
    rowsLoaded = Signal(int)
    #: A sort is about to rebuild the rows (a reset): remember what is expanded and selected.
    aboutToRebuild = Signal()
    #: The sort is done: put it back.
    rebuilt = Signal()

    def __init__(self, parent: Optional[QObject] = None, *,
                 page_size: int = DEFAULT_PAGE_SIZE, stats_concurrency: int = 4) -> None:
        super().__init__(0, _COLUMN_COUNT, parent)
        self.browser = StudyBrowser(self, page_size=page_size, stats_concurrency=stats_concurrency)
        self._root = self.browser.root
        # Qt's internal id of an index is its parent item's address: which node's children
        # live under that item.
        self._owners: Dict[int, Node] = {}
        self._sort: Optional[Tuple[int, Qt.SortOrder]] = None
        self._prototype = QStandardItem()
        self._releasing = False

    # --- the browser's news (BrowserListener) ------------------------------------

    def browser_reset(self, begin: bool) -> None:
        if begin:
            self.beginResetModel()
            return
        # Qt's old rows are not dropped inside the reset: deleting 50,000 of them took
        # 10-12 ms in one turn. They stay behind the browser's rows, out of sight (the
        # top level's rowCount() is the browser's), and go RELEASE_SLICE at a time, from
        # the end, one loop turn after the other; new rows are inserted before them.
        self._owners.clear()
        self.endResetModel()
        self._schedule_release()

    def _schedule_release(self) -> None:
        if not self._releasing and self.stale_rows:
            self._releasing = True
            QTimer.singleShot(0, self, self._release_slice)

    def _release_slice(self) -> None:
        self._releasing = False
        total = QStandardItemModel.rowCount(self)
        count = min(RELEASE_SLICE, total - len(self._root.children))
        if count > 0:
            # Silently: the view never knew these rows (it was reset).
            self._silently(lambda: QStandardItemModel.removeRows(self, total - count, count))
        self._schedule_release()

    @property
    def stale_rows(self) -> int:
        """Qt rows of an earlier list not freed yet (after a reset: a search, F5)."""
        return QStandardItemModel.rowCount(self) - len(self._root.children)

    def browser_insert(self, parent: Node, first: int, last: int, begin: bool) -> None:
        if begin:
            return   # Qt's rows are added at the end, once the browser's nodes exist
        parent_index = self._index_of(parent)
        if parent.hidden_child:
            # The hidden child goes quietly: the view was never told about it.
            parent.hidden_child = False
            self._silently(lambda: QStandardItemModel.removeRows(self, 0, 1, parent_index))
        parent_item = self.itemFromIndex(parent_index) if parent is not self._root else self.invisibleRootItem()
        columns = parent_item.columnCount()
        if columns < _COLUMN_COUNT:   # a study or a series row has every column
            self._silently(lambda: parent_item.insertColumns(columns, _COLUMN_COUNT - columns))
        # Known before the rows are announced: rowsInserted handlers look the new rows up.
        self._owners[shiboken6.getCppPointer(parent_item)[0]] = parent
        parent_item.insertRows(first, self._items_for(parent.children[first:last + 1]))  # one rowsInserted

    def _items_for(self, nodes: Sequence[Node]) -> List[QStandardItem]:
        """Qt rows for nodes: items copied in C++ from a prototype (no Python object stays
        behind once they are in the model); a row whose children are not loaded gets its
        hidden empty child before Qt shows it."""
        clone = self._prototype.clone
        items = []
        for node in nodes:
            item = clone()
            if not node.fetched:
                item.setChild(0, 0, None)   # one row, one column, no item: hasChildren() in C++
                node.hidden_child = True
            elif node.children:   # a search's patient, with its studies: in the same insertion
                item.setColumnCount(_COLUMN_COUNT)
                self._owners[shiboken6.getCppPointer(item)[0]] = node
                item.appendRows(self._items_for(node.children))
            items.append(item)
        return items

    def browser_changed(self, node: Node, what: str) -> None:
        if node.fetched and node.hidden_child and self.browser.nodes.get(node.uid) is node:
            # Loaded without children (or failed): the expand arrow goes. Told to the view,
            # which relays the tree out; rowCount() says 1 until the row is gone.
            node.hidden_child = False
            QStandardItemModel.removeRows(self, 0, 1, self._index_of(node))
        if what == "stats":
            self._changed(node, COL_SERIES, COL_SIZE)
        elif what == "modalities":
            self._changed(node, COL_MODALITY, COL_MODALITY)
        else:
            self._changed(node, COL_NAME, COL_NAME)

    def browser_loading(self, loading: bool) -> None:
        if not loading and self._sort is not None and self.browser.is_complete:
            self.sort(*self._sort)   # pages that came after the sort take their place
        self.loadingChanged.emit(loading)

    def browser_failed(self, message: str) -> None:
        self.loadFailed.emit(message)

    def browser_rows(self, count: int) -> None:
        self.rowsLoaded.emit(count)

    # --- public API ---------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self.browser.page_size

    @property
    def peer_name(self) -> str:
        return self.browser.peer_name

    @property
    def client(self) -> Optional[OrthancClient]:
        return self.browser.client

    @property
    def search_text(self) -> str:
        return self.browser.search.text

    @property
    def search(self) -> Search:
        return self.browser.search

    @property
    def is_loading(self) -> bool:
        return self.browser.is_loading

    @property
    def is_complete(self) -> bool:
        """Every top-level page has been loaded."""
        return self.browser.is_complete

    @property
    def error(self) -> Optional[str]:
        return self.browser.error

    @property
    def top_level_count(self) -> int:
        return self.browser.top_level_count

    def set_source(self, client: Optional[OrthancClient], peer_name: str) -> None:
        """Point the model at another peer (or none); empties it, loads nothing yet."""
        self.browser.set_source(client, peer_name)

    def load(self, search: "str | Search" = "") -> None:
        """Empty the tree and load the first page (then the next ones)."""
        self.browser.load(search if isinstance(search, Search) else Search(text=search))

    def reload(self) -> None:
        self.browser.load(self.browser.search)

    def clear(self) -> None:
        self.browser.reset()

    def node(self, index: "QModelIndex | QPersistentModelIndex") -> Optional[Node]:
        if not index.isValid():
            return None
        owner = self._owners.get(index.internalId())
        if owner is None:
            return None
        row = index.row()
        children = owner.children
        return children[row] if row < len(children) else None

    def index_of(self, level: str, resource_id: str) -> QModelIndex:
        """The (first) index of a loaded resource, or an invalid index."""
        node = self.browser.find(level, resource_id)
        return self._index_of(node) if node is not None else QModelIndex()

    def resources_for(self, indexes: Iterable[QModelIndex]) -> Tuple[List[Dict[str, str]], List[str]]:
        """Resources and labels of the given rows, without rows whose ancestor is
        also given (a selected patient already includes its selected studies)."""
        nodes = [n for n in (self.node(i) for i in indexes) if n is not None]
        chosen = self.browser.resources_for(nodes)
        return [n.resource for n in chosen], [self.label(n) for n in chosen]

    def label(self, node: Node) -> str:
        """A short human-readable name of a row (confirmations, drag text, job titles)."""
        tags = node.tags
        if node.level == "Patient":
            return f"{_person(tags.get('PatientName', ''))} ({tags.get('PatientID', '?')})"
        if node.level == "Study":
            parts = [_person(tags.get("PatientName", "")), tags.get("PatientID", ""), self._name(node),
                     tags.get("AccessionNumber", ""), _date(tags.get("StudyDate", ""))]
            return " · ".join(p for p in parts if p)
        parts = [_person(tags.get("PatientName", "")), self._name(node), tags.get("Modality", "")]
        return " · ".join(p for p in parts if p)

    # --- Qt model interface -----------------------------------------------------
    # index(), parent(), hasChildren(), flags() and columnCount() are Qt's (C++): the view
    # asks them about every loaded row after each insertion.

    def rowCount(self, parent: "QModelIndex | QPersistentModelIndex" = _INVALID) -> int:
        if not parent.isValid():
            return len(self._root.children)   # not the old rows a reset left to free
        node = self.node(parent)
        if node is not None and node.hidden_child:
            return 0   # only the hidden child: nothing loaded yet
        return QStandardItemModel.rowCount(self, parent)

    def canFetchMore(self, parent: "QModelIndex | QPersistentModelIndex") -> bool:
        node = self.node(parent)
        return node is not None and not node.fetched and not node.loading

    def fetchMore(self, parent: "QModelIndex | QPersistentModelIndex") -> None:
        node = self.node(parent)
        if node is not None:
            self.browser.fetch_children(node)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal:
            if role == _DISPLAY:
                return COLUMNS[section]
            if role == _TOOLTIP:
                return HEADER_TIPS[section]
        return None

    def data(self, index: "QModelIndex | QPersistentModelIndex", role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role not in _ROLES:
            return None   # a painted cell asks 7 roles (font, colours, check state…): most have none
        node = self.node(index)
        if node is None:
            return None
        column = index.column()
        if role == _DISPLAY:
            return self._display(node, column)
        if role == _TOOLTIP:
            return self._tooltip(node, column)
        if role == _ALIGN and column in _NUMERIC:
            return _RIGHT
        if role == LevelRole:
            return node.level
        if role == IdRole:
            return node.id
        if role == ResourceRole:
            return node.resource
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort what is loaded (every level) by a column; rows loaded later join at the
        end until the list is complete, then take their place."""
        if not 0 <= column < len(COLUMNS):
            return
        self._sort = (column, order)
        if not self._root.children:
            return
        key = self._sort_key(column)
        reverse = order == Qt.SortOrder.DescendingOrder
        # Inside a reset, Qt's rows are made to fit the nodes' new order. Qt's items only
        # carry the tree's shape, so a row stays as it is when its new node has the same
        # shape as the old one (no children loaded: the hidden child); only rows whose
        # children are loaded are rebuilt. (Letting Qt sort its items costs a Python call
        # per row to give each its key, and leaves the items' cached positions stale: the
        # next reset of 50,000 sorted rows then took seconds.) The view forgets expansion
        # and selection in a reset: its pane puts them back (aboutToRebuild, rebuilt).
        self.aboutToRebuild.emit()
        self.beginResetModel()
        before: Dict[int, List[Node]] = {}
        stack = [self._root]
        while stack:
            owner = stack.pop()
            children = owner.children
            if len(children) > 1:
                before[owner.uid] = list(children)
                children.sort(key=key, reverse=reverse)
                for row, child in enumerate(children):
                    child.row = row
            stack.extend(c for c in children if c.children)
        self._silently(lambda: self._refit(self._root, self.invisibleRootItem(), before))
        self.endResetModel()
        self.rebuilt.emit()

    def _refit(self, owner: Node, owner_item: QStandardItem, before: Dict[int, List[Node]]) -> None:
        old = before.get(owner.uid)
        if old is None:   # order unchanged: only deeper levels may have moved
            for node in owner.children:
                if node.children:
                    self._refit(node, owner_item.child(node.row, 0), before)
            return
        for row, node in enumerate(owner.children):
            was = old[row]
            if was is node:
                if node.children:
                    self._refit(node, owner_item.child(row, 0), before)
                continue
            if not node.children and not was.children and node.hidden_child == was.hidden_child:
                continue   # same shape: nothing to change
            item = owner_item.child(row, 0)
            self._owners.pop(shiboken6.getCppPointer(item)[0], None)
            item.removeRows(0, item.rowCount())
            if node.hidden_child:
                item.setChild(0, 0, None)
            elif node.children:
                self._build(node, item)

    def _build(self, owner: Node, owner_item: QStandardItem) -> None:
        """Qt's rows under an item for a node's loaded children (silently); ``_items_for``
        builds the rows below them (a node with children is always fetched)."""
        if owner_item.columnCount() < _COLUMN_COUNT:
            owner_item.setColumnCount(_COLUMN_COUNT)
        self._owners[shiboken6.getCppPointer(owner_item)[0]] = owner
        owner_item.insertRows(0, self._items_for(owner.children))

    def _sort_key(self, column: int) -> Callable[[Node], Any]:
        if column == COL_SIZE:
            return lambda n: int(n.stats.get("UncompressedSize") or -1)
        if column == COL_INSTANCES:
            return lambda n: int(n.stats.get("CountInstances", n.instances) or -1)
        if column == COL_SERIES:
            return lambda n: int(n.stats.get("CountSeries") or -1)
        if column == COL_NAME:
            def name_key(n: Node) -> Any:
                if n.level == "Series":
                    number = n.tags.get("SeriesNumber", "")
                    return (int(number) if number.isdigit() else 1 << 30, self._name(n).lower())
                return (0, self._name(n).lower())
            return name_key
        tag = _TAG_COLUMNS.get(column)
        if tag is not None:   # most sorts: one tag, looked up directly (50,000 rows)
            return lambda n: n.tags.get(tag, "").lower() if tag != "AccessionNumber" or n.level == "Study" else ""
        return lambda n: self._plain(n, column).lower()

    # drag and drop: the model produces the payload; the pane handles drops.

    def mimeTypes(self) -> List[str]:
        return [MIME_TYPE]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        resources, labels = self.resources_for(i for i in indexes if i.column() == 0)
        return to_mime_data(self.browser.peer_name, resources, labels)

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def canDropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int,
                        parent: "QModelIndex | QPersistentModelIndex") -> bool:
        return False  # drops are the pane's business (its drop handler)

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int,
                     parent: "QModelIndex | QPersistentModelIndex") -> bool:
        return False

    # --- display helpers --------------------------------------------------------

    def _plain(self, node: Node, column: int) -> str:
        """Text of a column that needs no request."""
        tags = node.tags
        level = node.level
        if column == COL_NAME:
            if level == "Patient":
                return _person(tags.get("PatientName", "")) or "(no name)"
            return self._name(node)
        if column == COL_PATIENT_ID:
            return tags.get("PatientID", "")
        if column == COL_BIRTH_DATE:
            return _date(tags.get("PatientBirthDate", "")) if level != "Series" else ""
        if column == COL_STUDY_DATE:
            return _date(tags.get("StudyDate" if level == "Study" else "SeriesDate", "")) \
                if level != "Patient" else ""
        if column == COL_ACCESSION:
            return tags.get("AccessionNumber", "") if level == "Study" else ""
        if column == COL_MODALITY:
            return tags.get("Modality", "") if level == "Series" else node.modalities
        return ""

    def _display(self, node: Node, column: int) -> str:
        if column < COL_SERIES:
            if column == COL_MODALITY and node.study_modalities is None and node.level == "Patient":
                self.browser.want_stats(node)   # with the statistics: the patient's series
            return self._plain(node, column)
        if column == COL_SERIES:
            if node.level == "Series":
                return ""
            value = node.stats.get("CountSeries")
        elif column == COL_INSTANCES:
            value = node.stats.get("CountInstances", node.instances)
        else:
            value = node.stats.get("UncompressedSize")
        if value is None:
            self.browser.want_stats(node)
            return "…" if node.stats_state == STATS_PENDING else ""
        return format_size(int(value)) if column == COL_SIZE else str(value)

    def _tooltip(self, node: Node, column: int) -> Optional[str]:
        if node.error:
            return node.error
        if column in _NUMERIC and node.stats_state == STATS_FAILED:
            return "statistics unavailable"
        if column != COL_NAME:
            text = self._plain(node, column)
            return text or None
        tags = node.tags
        lines: List[str] = []
        if node.level == "Patient":
            lines.append(f"Patient {_person(tags.get('PatientName', '')) or '(no name)'}")
            lines.append(f"ID {tags.get('PatientID', '?')}, born {_date(tags.get('PatientBirthDate', '')) or '?'}")
            if node.search_subset:
                lines.append("Only the studies matching the search are shown.")
        elif node.level == "Study":
            lines.append(tags.get("StudyDescription") or "(study without description)")
            lines.append(f"Accession {tags.get('AccessionNumber') or '–'}, "
                         f"study date {_date(tags.get('StudyDate', '')) or '–'}")
            lines.append(f"Patient {_person(tags.get('PatientName', ''))} ({tags.get('PatientID', '?')})")
        else:
            lines.append(tags.get("SeriesDescription") or "(series without description)")
            lines.append(f"Series {tags.get('SeriesNumber') or '–'}, {tags.get('Modality') or 'modality ?'}"
                         + (f", {tags['BodyPartExamined']}" if tags.get("BodyPartExamined") else ""))
        return "\n".join(lines)

    @staticmethod
    def _name(node: Node) -> str:
        tags = node.tags
        if node.level == "Study":
            return tags.get("StudyDescription") or "(study without description)"
        if node.level == "Series":
            text = tags.get("SeriesDescription", "")
            number = tags.get("SeriesNumber", "")
            if text and number:
                return f"#{number} {text}"
            return text or (f"Series {number}" if number else "(series without description)")
        return _person(tags.get("PatientName", ""))

    def _index_of(self, node: Node, column: int = 0) -> QModelIndex:
        parent = node.parent
        if node is self._root or parent is None:
            return QModelIndex()
        return self.index(node.row, column, self._index_of(parent) if parent is not self._root else _INVALID)

    def _silently(self, change: Callable[[], Any]) -> None:
        """Change Qt's rows without telling anyone (what the view was never shown)."""
        blocked = self.blockSignals(True)
        try:
            change()
        finally:
            self.blockSignals(blocked)

    def _changed(self, node: Node, first: int, last: int) -> None:
        if self.browser.nodes.get(node.uid) is node:
            self.dataChanged.emit(self._index_of(node, first), self._index_of(node, last))


def _person(name: str) -> str:
    """DICOM person name ``Family^Given^Middle`` as ``Family Given Middle``."""
    return " ".join(filter(None, name.split("^"))).strip()


def _date(value: str) -> str:
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def format_size(size: int) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    amount = float(size)
    for unit in units:
        if amount < 1024 or unit == units[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{size} B"


__all__ = ["StudyTreeModel", "Node", "COLUMNS", "LevelRole", "IdRole", "ResourceRole",
           "DEFAULT_PAGE_SIZE", "format_size"]
