"""One tree model for a peer: Patients → Studies → Series.

Loading is asynchronous and never blocks the GUI thread:

- the top level comes in pages (``POST /tools/find`` with ``Limit`` and
  ``Since``); pages keep coming in the background until the server has no
  more, each page inserted as it arrives, so a server with 10,000 studies
  fills the tree progressively;
- children (a patient's studies, a study's series) load when a view asks
  (``canFetchMore``/``fetchMore``, i.e. on expand);
- instance counts and sizes (``/statistics``) load only for rows a view
  actually paints, a few requests at a time.

Rows are only ever appended (until a reset), so a node's row never changes;
indexes carry an integer node id, never a Python pointer, so a stale index
can't reach freed memory after a reset.

With a search text the model lists the studies whose patient name, patient
ID or accession number matches, grouped under their patients.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

from PySide6.QtCore import QAbstractItemModel, QMimeData, QModelIndex, QObject, Qt, Signal

from gui.client import OrthancClient
from gui.ui.async_tasks import TaskRunner, user_message
from gui.ui.resource_mime import MIME_TYPE, to_mime_data

COLUMNS = ("Name / description", "Patient ID", "Date", "Modality", "Instances", "Size")
COL_NAME, COL_PATIENT_ID, COL_DATE, COL_MODALITY, COL_INSTANCES, COL_SIZE = range(len(COLUMNS))

LevelRole = int(Qt.ItemDataRole.UserRole) + 1    # "Patient" | "Study" | "Series"
IdRole = int(Qt.ItemDataRole.UserRole) + 2       # Orthanc ID
ResourceRole = int(Qt.ItemDataRole.UserRole) + 3  # {"Level": ..., "ID": ...}

DEFAULT_PAGE_SIZE = 200
MAX_PAGE_GROWTH = 16   # pages grow up to 16 × page_size (3200 rows by default)
CHILD_LEVEL = {"Patient": "Study", "Study": "Series"}

_STATS_NONE, _STATS_PENDING, _STATS_DONE, _STATS_FAILED = range(4)
_ITEM_FLAGS = (Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
               | Qt.ItemFlag.ItemIsDragEnabled | Qt.ItemFlag.ItemIsDropEnabled)
_ROOT_FLAGS = Qt.ItemFlag.ItemIsDropEnabled


class Node:
    """One row. ``tags`` are the resource's MainDicomTags (plus patient tags)."""

    __slots__ = ("uid", "level", "id", "parent", "row", "children", "tags", "fetched",
                 "loading", "error", "stats", "stats_state", "instances", "modalities",
                 "search_subset")

    def __init__(self, uid: int, level: str, resource_id: str, parent: Optional["Node"],
                 tags: Optional[Dict[str, str]] = None) -> None:
        self.uid = uid
        self.level = level
        self.id = resource_id
        self.parent = parent
        self.row = 0
        self.children: List[Node] = []
        self.tags: Dict[str, str] = tags or {}
        self.fetched = level == "Series"   # series have no children in this tree
        self.loading = False
        self.error: Optional[str] = None
        self.stats: Dict[str, Any] = {}
        self.stats_state = _STATS_NONE
        self.instances: Optional[int] = None
        self.modalities: str = ""
        self.search_subset = False         # patient shown with only the matching studies

    @property
    def resource(self) -> Dict[str, str]:
        return {"Level": self.level, "ID": self.id}


class StudyTreeModel(QAbstractItemModel):
    """Patients → Studies → Series of one Orthanc peer."""

    #: Top-level pages are loading (True) or done/failed (False).
    loadingChanged = Signal(bool)
    #: Loading something failed: a message for the user.
    loadFailed = Signal(str)
    #: Number of top-level rows loaded so far.
    rowsLoaded = Signal(int)

    def __init__(self, parent: Optional[QObject] = None, *,
                 page_size: int = DEFAULT_PAGE_SIZE, stats_concurrency: int = 4) -> None:
        super().__init__(parent)
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.page_size = page_size
        self.stats_concurrency = max(1, stats_concurrency)
        self._runner = TaskRunner(self)
        self._ids = itertools.count(1)
        self._root = Node(0, "Root", "", None)
        self._nodes: Dict[int, Node] = {}
        self._by_id: Dict[Tuple[str, str], Node] = {}
        self._client: Optional[OrthancClient] = None
        self._peer_name = ""
        self._search = ""
        self._generation = 0
        self._loading = False
        self._complete = False
        self._error: Optional[str] = None
        self._stats_queue: Deque[Node] = collections.deque()
        self._stats_workers = 0

    # --- public API ---------------------------------------------------------

    @property
    def peer_name(self) -> str:
        return self._peer_name

    @property
    def client(self) -> Optional[OrthancClient]:
        return self._client

    @property
    def search_text(self) -> str:
        return self._search

    @property
    def is_loading(self) -> bool:
        return self._loading

    @property
    def is_complete(self) -> bool:
        """Every top-level page has been loaded."""
        return self._complete

    @property
    def error(self) -> Optional[str]:
        return self._error

    @property
    def top_level_count(self) -> int:
        return len(self._root.children)

    def set_source(self, client: Optional[OrthancClient], peer_name: str) -> None:
        """Point the model at another peer (or none); empties it, loads nothing yet."""
        self._client = client
        self._peer_name = peer_name
        self._search = ""
        self._reset()

    def load(self, search: str = "") -> None:
        """Empty the tree and load the first page (then the next ones)."""
        self._search = search.strip()
        self._reset()
        if self._client is None:
            return
        self._set_loading(True)
        generation = self._generation
        self._runner.start(self._load_pages(generation), what="Loading the list",
                           on_error=lambda exc, msg: self._pages_failed(generation, msg))

    def reload(self) -> None:
        self.load(self._search)

    def clear(self) -> None:
        self._reset()

    def node(self, index: QModelIndex) -> Optional[Node]:
        if not index.isValid():
            return None
        return self._nodes.get(int(index.internalId()))

    def index_of(self, level: str, resource_id: str) -> QModelIndex:
        """The (first) index of a loaded resource, or an invalid index."""
        node = self._by_id.get((level, resource_id))
        return self._index_of(node) if node is not None else QModelIndex()

    def resources_for(self, indexes: Iterable[QModelIndex]) -> Tuple[List[Dict[str, str]], List[str]]:
        """Resources and labels of the given rows, without rows whose ancestor is
        also given (a selected patient already includes its selected studies)."""
        chosen: Dict[int, Node] = {}
        for index in indexes:
            node = self.node(index)
            if node is not None:
                chosen[node.uid] = node
        out: List[Node] = []
        for node in chosen.values():
            ancestor = node.parent
            covered = False
            while ancestor is not None and ancestor is not self._root:
                if ancestor.uid in chosen:
                    covered = True
                    break
                ancestor = ancestor.parent
            if not covered:
                out.append(node)
        out.sort(key=self._path_key)
        return [n.resource for n in out], [self.label(n) for n in out]

    def label(self, node: Node) -> str:
        """A short human-readable name of a row (confirmations, drag text)."""
        if node.level == "Patient":
            return f"{_person(node.tags.get('PatientName', ''))} ({node.tags.get('PatientID', '?')})"
        if node.level == "Study":
            parts = [_person(node.tags.get("PatientName", "")), self._name(node),
                     _date(node.tags.get("StudyDate", ""))]
            return " · ".join(p for p in parts if p)
        parts = [self._name(node), node.tags.get("Modality", "")]
        return " · ".join(p for p in parts if p)

    # --- Qt model interface -----------------------------------------------------

    def index(self, row: int, column: int, parent: QModelIndex = QModelIndex()) -> QModelIndex:
        if column < 0 or column >= len(COLUMNS):
            return QModelIndex()
        owner = self.node(parent) if parent.isValid() else self._root
        if owner is None or row < 0 or row >= len(owner.children):
            return QModelIndex()
        return self.createIndex(row, column, owner.children[row].uid)

    def parent(self, index: Any = None) -> Any:  # type: ignore[override]
        if index is None:
            return QObject.parent(self)  # QObject.parent(), shadowed by the model's
        node = self.node(index)
        if node is None or node.parent is None or node.parent is self._root:
            return QModelIndex()
        return self.createIndex(node.parent.row, 0, node.parent.uid)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        if parent.isValid() and parent.column() != 0:
            return 0
        owner = self.node(parent) if parent.isValid() else self._root
        return len(owner.children) if owner is not None else 0

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def hasChildren(self, parent: QModelIndex = QModelIndex()) -> bool:
        if not parent.isValid():
            return bool(self._root.children)
        node = self._nodes.get(parent.internalId())
        if node is None or node.fetched:
            return node is not None and bool(node.children) and parent.column() == 0
        return parent.column() == 0  # not fetched yet: expandable

    def canFetchMore(self, parent: QModelIndex) -> bool:
        node = self.node(parent)
        return node is not None and not node.fetched and not node.loading

    def fetchMore(self, parent: QModelIndex) -> None:
        node = self.node(parent)
        if node is not None:
            self._fetch_children(node)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        # Called for every row on each layout: constants, no enum arithmetic.
        return _ITEM_FLAGS if index.isValid() else _ROOT_FLAGS

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        node = self.node(index)
        if node is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(node, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (COL_INSTANCES, COL_SIZE):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == LevelRole:
            return node.level
        if role == IdRole:
            return node.id
        if role == ResourceRole:
            return node.resource
        return None

    # drag and drop: the model produces the payload; the pane handles drops.

    def mimeTypes(self) -> List[str]:
        return [MIME_TYPE]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        resources, labels = self.resources_for(i for i in indexes if i.column() == 0)
        return to_mime_data(self._peer_name, resources, labels)

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def canDropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int,
                        parent: QModelIndex) -> bool:
        return False  # drops are the pane's business (its drop handler)

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int,
                     parent: QModelIndex) -> bool:
        return False

    # --- display helpers --------------------------------------------------------

    def _display(self, node: Node, column: int) -> str:
        tags = node.tags
        if column == COL_NAME:
            if node.level == "Patient":
                return _person(tags.get("PatientName", "")) or "(no name)"
            return self._name(node)
        if column == COL_PATIENT_ID:
            return tags.get("PatientID", "")
        if column == COL_DATE:
            key = {"Patient": "PatientBirthDate", "Study": "StudyDate", "Series": "SeriesDate"}[node.level]
            return _date(tags.get(key, ""))
        if column == COL_MODALITY:
            return tags.get("Modality", "") if node.level == "Series" else node.modalities
        if column == COL_INSTANCES:
            count = node.stats.get("CountInstances", node.instances)
            if count is None:
                self._want_stats(node)
                return "…" if node.stats_state == _STATS_PENDING else ""
            return str(count)
        if column == COL_SIZE:
            size = node.stats.get("UncompressedSize")
            if size is None:
                self._want_stats(node)
                return "…" if node.stats_state == _STATS_PENDING else ""
            return format_size(int(size))
        return ""

    def _tooltip(self, node: Node, column: int) -> Optional[str]:
        if node.error:
            return node.error
        if column in (COL_INSTANCES, COL_SIZE) and node.stats_state == _STATS_FAILED:
            return "statistics unavailable"
        if column == COL_NAME:
            text = f"{node.level} {node.id}"
            if node.search_subset:
                text += "\nOnly the studies matching the search are shown."
            return text
        return None

    @staticmethod
    def _name(node: Node) -> str:
        tags = node.tags
        if node.level == "Study":
            return tags.get("StudyDescription") or "(study without description)"
        if node.level == "Series":
            text = tags.get("SeriesDescription", "")
            number = tags.get("SeriesNumber", "")
            return text or (f"Series {number}" if number else "(series without description)")
        return _person(tags.get("PatientName", ""))

    def _path_key(self, node: Node) -> Tuple[int, ...]:
        rows: List[int] = []
        while node is not None and node is not self._root:
            rows.append(node.row)
            node = node.parent  # type: ignore[assignment]
        return tuple(reversed(rows))

    # --- loading --------------------------------------------------------------------

    def _reset(self) -> None:
        self.beginResetModel()
        self._runner.cancel_all()
        self._generation += 1
        self._root.children = []
        self._nodes.clear()
        self._by_id.clear()
        self._stats_queue.clear()
        self._stats_workers = 0
        self._complete = False
        self._error = None
        self.endResetModel()
        self._set_loading(False)
        self.rowsLoaded.emit(0)

    def _set_loading(self, loading: bool) -> None:
        if loading != self._loading:
            self._loading = loading
            self.loadingChanged.emit(loading)

    def _pages_failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self._error = message
        self._set_loading(False)
        self.loadFailed.emit(message)

    async def _load_pages(self, generation: int) -> None:
        client = self._client
        assert client is not None
        for query in self._queries():
            since = 0
            limit = self.page_size
            while True:
                page = await query(client, limit, since)
                if generation != self._generation:
                    return
                if self._search:
                    self._add_matching_studies(page)
                else:
                    self._add_patients(page)
                since += len(page)
                if len(page) < limit:
                    break
                # Each insertion makes the view lay out every top-level row
                # again: growing pages keep the total work linear on big
                # servers while the first page still comes quickly.
                limit = min(limit * 2, self.page_size * MAX_PAGE_GROWTH)
                # Let the view paint this page before asking for the next one.
                await asyncio.sleep(0)
                if generation != self._generation:
                    return
        self._complete = True
        self._set_loading(False)

    def _queries(self) -> List[Any]:
        text = self._search
        if not text:
            return [lambda c, limit, since: c.search_patients("", limit=limit, since=since)]
        # Orthanc's find is an AND of its fields: one query per field, merged.
        return [lambda c, limit, since, field=field: c.search_studies(
                    **{field: text}, limit=limit, since=since)
                for field in ("patient_name", "patient_id", "accession")]

    def _new_node(self, level: str, resource_id: str, parent: Node, tags: Dict[str, str]) -> Node:
        node = Node(next(self._ids), level, resource_id, parent, tags)
        node.row = len(parent.children)
        self._nodes[node.uid] = node
        self._by_id.setdefault((level, resource_id), node)
        return node

    def _append(self, parent: Node, items: List[Tuple[str, str, Dict[str, str]]]) -> List[Node]:
        """Insert rows under ``parent`` (level, id, tags), skipping ones already loaded."""
        # A resource has one place in the tree: a page that overlaps the
        # previous one (the server changed meanwhile) must not duplicate rows.
        seen = set()
        fresh = []
        for level, resource_id, tags in items:
            if resource_id and (level, resource_id) not in self._by_id and resource_id not in seen:
                seen.add(resource_id)
                fresh.append((level, resource_id, tags))
        if not fresh:
            return []
        first = len(parent.children)
        parent_index = self._index_of(parent)
        self.beginInsertRows(parent_index, first, first + len(fresh) - 1)
        nodes = []
        for level, resource_id, tags in fresh:
            node = self._new_node(level, resource_id, parent, tags)
            parent.children.append(node)
            nodes.append(node)
        self.endInsertRows()
        if parent is self._root:
            self.rowsLoaded.emit(len(self._root.children))
        return nodes

    def _add_patients(self, page: List[Dict[str, Any]]) -> None:
        self._append(self._root, [("Patient", str(p.get("ID", "")), _tags(p)) for p in page
                                  if isinstance(p, dict)])

    def _add_matching_studies(self, page: List[Dict[str, Any]]) -> None:
        by_patient: Dict[str, List[Dict[str, Any]]] = collections.OrderedDict()
        for study in page:
            if isinstance(study, dict) and study.get("ID"):
                by_patient.setdefault(str(study.get("ParentPatient", "")), []).append(study)
        new_patients = [("Patient", pid, dict(studies[0].get("PatientMainDicomTags") or {}))
                        for pid, studies in by_patient.items()
                        if ("Patient", pid) not in self._by_id]
        for node in self._append(self._root, new_patients):
            node.fetched = True
            node.search_subset = True
        for pid, studies in by_patient.items():
            patient = self._by_id.get(("Patient", pid))
            if patient is not None:
                self._append(patient, [("Study", str(s["ID"]), _tags(s)) for s in studies])

    def _fetch_children(self, node: Node) -> None:
        if node.fetched or node.loading or self._client is None or node.level not in CHILD_LEVEL:
            return
        node.loading = True
        generation = self._generation
        client = self._client

        async def fetch() -> None:
            children = await client.children(node.level, node.id)
            if generation != self._generation:
                return
            node.loading = False
            node.fetched = True
            level = CHILD_LEVEL[node.level]
            items = []
            for child in children:
                if not isinstance(child, dict):
                    continue
                tags = _tags(child)
                tags.setdefault("PatientID", node.tags.get("PatientID", ""))
                tags.setdefault("PatientName", node.tags.get("PatientName", ""))
                items.append((level, str(child.get("ID", "")), tags, child))
            added = self._append(node, [(lvl, cid, tags) for lvl, cid, tags, _ in items])
            raw = {cid: child for _, cid, _, child in items}
            for child_node in added:
                instances = raw[child_node.id].get("Instances")
                if isinstance(instances, list):
                    child_node.instances = len(instances)
            if node.level == "Study":
                modalities = sorted({c.tags.get("Modality", "") for c in node.children} - {""})
                node.modalities = "/".join(modalities)
                self._changed(node, COL_MODALITY, COL_MODALITY)
                patient = node.parent
                if patient is not None and patient.level == "Patient":
                    # What is known so far: the studies whose series are loaded.
                    known = {m for study in patient.children for m in study.modalities.split("/") if m}
                    patient.modalities = "/".join(sorted(known))
                    self._changed(patient, COL_MODALITY, COL_MODALITY)

        def failed(exc: BaseException, message: str) -> None:
            if generation != self._generation:
                return
            # Marked fetched so the view does not retry in a loop; F5 retries.
            node.loading = False
            node.fetched = True
            node.error = message
            self._changed(node, COL_NAME, COL_NAME)
            self.loadFailed.emit(message)

        self._runner.start(fetch(), what=f"Loading the {CHILD_LEVEL[node.level].lower()} list",
                           on_error=failed)

    def _want_stats(self, node: Node) -> None:
        """Queue a /statistics request for a row a view is painting."""
        if node.stats_state != _STATS_NONE or self._client is None:
            return
        node.stats_state = _STATS_PENDING
        self._stats_queue.append(node)
        while self._stats_workers < self.stats_concurrency and self._stats_workers < len(self._stats_queue):
            self._stats_workers += 1
            self._runner.start(self._stats_worker(self._generation), what="Loading statistics")

    async def _stats_worker(self, generation: int) -> None:
        client = self._client
        try:
            while self._stats_queue and generation == self._generation and client is not None:
                node = self._stats_queue.popleft()
                try:
                    stats = await client.statistics(node.level, node.id)
                except Exception as exc:  # noqa: BLE001 - shown as a tooltip on that row
                    if generation != self._generation:
                        return
                    node.stats_state = _STATS_FAILED
                    node.error = user_message(exc, "statistics")
                else:
                    if generation != self._generation:
                        return
                    node.stats = stats if isinstance(stats, dict) else {}
                    node.stats_state = _STATS_DONE
                    if node.level == "Study":
                        # The series give the study's modalities (not in its tags
                        # on Orthanc 1.10) and make expanding it instant.
                        self._fetch_children(node)
                self._changed(node, COL_INSTANCES, COL_SIZE)
        finally:
            if generation == self._generation:
                self._stats_workers -= 1

    def _index_of(self, node: Node, column: int = 0) -> QModelIndex:
        if node is self._root or node.parent is None:
            return QModelIndex()
        return self.createIndex(node.row, column, node.uid)

    def _changed(self, node: Node, first: int, last: int) -> None:
        if self._nodes.get(node.uid) is node:
            self.dataChanged.emit(self._index_of(node, first), self._index_of(node, last))


def _tags(resource: Dict[str, Any]) -> Dict[str, str]:
    tags: Dict[str, str] = {}
    for key in ("PatientMainDicomTags", "MainDicomTags"):
        value = resource.get(key)
        if isinstance(value, dict):
            tags.update({str(k): str(v) for k, v in value.items() if isinstance(v, (str, int, float))})
    return tags


def _person(name: str) -> str:
    """DICOM person name ``Family^Given^Middle`` as ``Family Given Middle``."""
    return " ".join(part for part in name.split("^") if part).strip()


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
