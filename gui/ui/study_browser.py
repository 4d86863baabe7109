"""What one pane knows about its peer's patients, studies and series — without Qt.

``StudyBrowser`` does the network work of the study tree: the top level in
pages (``GET /patients?expand&since&limit``), the search (``/tools/find``, one query
per field, merged, grouped under patients), children on demand and
``/statistics`` for the rows on screen, a few at a time. It tells a listener
(``BrowserListener``, the Qt model) what changed; the model only renders.

Rows are only ever appended under a parent (until a reset), so a node's row
never changes; nodes carry an integer ``uid`` for Qt's indexes.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import gc
import itertools
import logging
from dataclasses import dataclass
from typing import (Any, Awaitable, Callable, Deque, Dict, Iterable, List, Optional, Protocol, Set,
                    Tuple)

from gui.client import OrthancClient
from gui.client.errors import OrthancError
from gui.protocol.wire import check_orthanc_id

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 200
MAX_PAGE_GROWTH = 8    # pages grow up to 8 × page_size (1600 rows: a bigger answer takes too long to decode)
CHILD_LEVEL = {"Patient": "Study", "Study": "Series"}
MODALITIES = ("CT", "MR", "CR", "DX", "US", "PT", "NM", "MG", "XA", "RF", "OT", "SR", "SEG", "RTSTRUCT")

STATS_NONE, STATS_PENDING, STATS_DONE, STATS_FAILED = range(4)


class Node:
    """One row. ``tags`` are the resource's MainDicomTags (plus its patient's)."""

    __slots__ = ("uid", "level", "id", "parent", "row", "children", "tags", "fetched",
                 "loading", "error", "stats", "stats_state", "instances", "modalities",
                 "search_subset", "study_modalities", "hidden_child")

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
        self.stats_state = STATS_NONE
        self.instances: Optional[int] = None
        self.modalities: str = ""
        self.search_subset = False         # patient shown with only the matching studies
        # A patient's series listed (without expanding it): study ID → its modalities.
        self.study_modalities: Optional[Dict[str, Set[str]]] = None
        self.hidden_child = False          # the Qt model's: its row holds a hidden empty child

    @property
    def resource(self) -> Dict[str, str]:
        return {"Level": self.level, "ID": self.id}


@dataclass(frozen=True)
class Search:
    """Free text (patient name, patient ID or accession; wildcards allowed), a study-date
    range (``YYYYMMDD``, either end open) and a modality."""

    text: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""

    @property
    def empty(self) -> bool:
        return not (self.text or self.date_from or self.date_to or self.modality)


def date_range(first: datetime.date, last: datetime.date) -> Tuple[str, str]:
    """A study-date range as the query wants it (``YYYYMMDD``, both ends included), whichever
    way round the two dates come."""
    first, last = min(first, last), max(first, last)
    return first.strftime("%Y%m%d"), last.strftime("%Y%m%d")


def date_range_label(first: datetime.date, last: datetime.date) -> str:
    """How the filter shows a chosen range: ``2025-01-01 – 2025-03-31``."""
    first, last = min(first, last), max(first, last)
    return f"{first.isoformat()} \u2013 {last.isoformat()}"

class BrowserListener(Protocol):
    """What the browser tells its view (the Qt model turns these into its signals)."""

    def browser_reset(self, begin: bool) -> None: ...
    def browser_insert(self, parent: Node, first: int, last: int, begin: bool) -> None: ...
    # what: "stats" | "modalities" | "error" | "children" (loaded, none found)
    def browser_changed(self, node: Node, what: str) -> None: ...
    def browser_loading(self, loading: bool) -> None: ...
    def browser_failed(self, message: str) -> None: ...
    def browser_rows(self, count: int) -> None: ...


def user_text(exc: BaseException, what: str) -> str:
    reason = str(exc) if isinstance(exc, (OrthancError, OSError, ValueError)) and str(exc) \
        else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return f"{what}: {reason}"


class StudyBrowser:
    def __init__(self, listener: BrowserListener, *, page_size: int = DEFAULT_PAGE_SIZE,
                 stats_concurrency: int = 4) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.listener = listener
        self.page_size = page_size
        self.stats_concurrency = max(1, stats_concurrency)
        self._ids = itertools.count(1)
        self.root = Node(0, "Root", "", None)
        self.nodes: Dict[int, Node] = {}
        self._by_id: Dict[Tuple[str, str], Node] = {}
        self._client: Optional[OrthancClient] = None
        self._patients_by_find: Optional[OrthancClient] = None   # the client whose server refuses /patients
        self.peer_name = ""
        self._search = Search()
        self._generation = 0
        self._loading = False
        self._complete = False
        self._error: Optional[str] = None
        self._stats_queue: Deque[Node] = collections.deque()
        self._with_children: List[Node] = []   # rows below the top level's with children loaded
        self._stats_workers = 0
        self._tasks: Set["asyncio.Task[Any]"] = set()

    # --- state ---------------------------------------------------------------------

    @property
    def client(self) -> Optional[OrthancClient]:
        return self._client

    @property
    def search(self) -> Search:
        return self._search

    @property
    def is_loading(self) -> bool:
        return self._loading

    @property
    def is_complete(self) -> bool:
        return self._complete

    @property
    def error(self) -> Optional[str]:
        return self._error

    @property
    def top_level_count(self) -> int:
        return len(self.root.children)

    @property
    def with_children(self) -> List[Node]:
        """The rows that have children loaded (the only ones that can be expanded open)."""
        return self._with_children

    def find(self, level: str, resource_id: str) -> Optional[Node]:
        return self._by_id.get((level, resource_id))

    # --- commands ------------------------------------------------------------------

    def set_source(self, client: Optional[OrthancClient], peer_name: str) -> None:
        self._client = client
        self.peer_name = peer_name
        self._search = Search()
        self.reset()

    def load(self, search: Search) -> None:
        """Empty the tree and load the first page (then the next ones)."""
        self._search = Search(search.text.strip(), search.date_from, search.date_to, search.modality)
        self.reset()
        if self._client is None:
            return
        self._set_loading(True)
        generation = self._generation

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self._error = user_text(exc, "Loading the list")
                self._set_loading(False)
                self.listener.browser_failed(self._error)
        self._start(self._load_pages(generation), failed)

    def reset(self) -> None:
        self.listener.browser_reset(True)
        self.cancel_all()
        self._generation += 1
        # A row with children and its children point at each other: unlink them so that the
        # old rows are freed by reference counting (they are out of the cyclic collector's
        # reach), a slice at a time once the loop runs: freeing 50,000 rows at once takes
        # ~15 ms.
        for parent in self._with_children:
            for child in parent.children:
                child.parent = None
        self._with_children = []
        self.root.children = []
        old_ids, old_nodes = self._by_id, self.nodes
        self.nodes, self._by_id = {}, {}
        _release_in_slices(old_ids, old_nodes)
        self._stats_queue.clear()
        self._stats_workers = 0
        self._complete = False
        self._error = None
        self.listener.browser_reset(False)
        self._set_loading(False)
        self.listener.browser_rows(0)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def resources_for(self, nodes: Iterable[Node]) -> List[Node]:
        """The given nodes without those whose ancestor is also given, in tree order."""
        chosen = {node.uid: node for node in nodes}
        out: List[Node] = []
        for node in chosen.values():
            ancestor = node.parent
            while ancestor is not None and ancestor is not self.root and ancestor.uid not in chosen:
                ancestor = ancestor.parent
            if ancestor is None or ancestor is self.root:
                out.append(node)
        out.sort(key=_path_key)
        return out

    def fetch_children(self, node: Node) -> None:
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
            raw: Dict[str, Dict[str, Any]] = {}
            for child in children:
                if not isinstance(child, dict):
                    continue
                tags = _tags(child)
                for key in ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber"):
                    if node.tags.get(key):
                        tags.setdefault(key, node.tags[key])
                items.append((level, str(child.get("ID", "")), tags))
                raw[str(child.get("ID", ""))] = child
            for child_node in self._append(node, items):
                instances = raw[child_node.id].get("Instances")
                if isinstance(instances, list):
                    child_node.instances = len(instances)
                known = node.study_modalities
                if known is not None and child_node.id in known and not child_node.modalities:
                    child_node.modalities = "/".join(sorted(known[child_node.id] - {""}))
            if not node.children:
                self.listener.browser_changed(node, "children")
            if node.level == "Study":
                self._set_modalities(node, {c.tags.get("Modality", "") for c in node.children})

        def failed(exc: BaseException) -> None:
            if generation != self._generation:
                return
            # Marked fetched so the view does not retry in a loop; F5 retries.
            node.loading = False
            node.fetched = True
            node.error = user_text(exc, f"Loading the {CHILD_LEVEL[node.level].lower()} list")
            self.listener.browser_changed(node, "error")
            self.listener.browser_failed(node.error)

        self._start(fetch(), failed)

    def want_stats(self, node: Node) -> None:
        """Queue a /statistics request for a row the view paints."""
        if node.stats_state != STATS_NONE or self._client is None:
            return
        node.stats_state = STATS_PENDING
        self._stats_queue.append(node)
        while self._stats_workers < self.stats_concurrency and self._stats_workers < len(self._stats_queue):
            self._stats_workers += 1
            self._start(self._stats_worker(self._generation), lambda exc: None)

    # --- internals --------------------------------------------------------------------

    def _start(self, coro: Awaitable[Any], on_error: Callable[[BaseException], None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: "asyncio.Task[Any]") -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                if not isinstance(exc, OrthancError):
                    log.warning("study list: %s", exc, exc_info=exc)
                on_error(exc)
        task.add_done_callback(done)

    def _set_loading(self, loading: bool) -> None:
        if loading != self._loading:
            self._loading = loading
            self.listener.browser_loading(loading)

    async def _load_pages(self, generation: int) -> None:
        client = self._client
        assert client is not None
        for query in self._queries():
            since = 0
            limit = self.page_size
            while True:
                page = await query(client, limit, since)
                # The answer's last read and decoding, the rows' tags and their insertion each
                # get their own loop turn: one after the other, a page of 1,600 took ~30 ms.
                await asyncio.sleep(0)
                if generation != self._generation:
                    return
                if self._search.empty:
                    items = [("Patient", str(p.get("ID", "")), _tags(p)) for p in page if isinstance(p, dict)]
                    await asyncio.sleep(0)
                    if generation != self._generation:
                        return
                    self._append(self.root, items)
                else:
                    # A study makes two rows (it and its patient): a page of 1,600 matching
                    # studies took 35-55 ms in one turn; a slice of them per turn.
                    step = self.page_size * 2
                    for at in range(0, len(page), step):
                        if at:
                            await asyncio.sleep(0)
                            if generation != self._generation:
                                return
                        self._add_matching_studies(page[at:at + step])
                _settle_rows()
                since += len(page)
                if len(page) < limit:
                    break
                # Each insertion costs the view a pass over the rows it holds: growing
                # pages keep the total work linear while the first page comes quickly.
                limit = min(limit * 2, self.page_size * MAX_PAGE_GROWTH)
                await asyncio.sleep(0)   # let the view paint this page first
                if generation != self._generation:
                    return
        self._complete = True
        self._set_loading(False)

    def _queries(self) -> List[Callable[[OrthancClient, int, int], Awaitable[List[Dict[str, Any]]]]]:
        search = self._search
        if search.empty:
            return [self._all_patients]
        common = {"date_from": search.date_from, "date_to": search.date_to, "modality": search.modality}
        fields = ("patient_name", "patient_id", "accession") if search.text else ("",)
        # Orthanc's find is an AND of its fields: one query per text field, merged.
        return [lambda c, limit, since, field=field: c.search_studies(
                    **({field: search.text} if field else {}), **common, limit=limit, since=since)
                for field in fields]

    async def _all_patients(self, client: OrthancClient, limit: int, since: int) -> List[Dict[str, Any]]:
        """A page of the whole list. Not /tools/find: on Orthanc 1.10 its pages get slower
        with the offset (the last pages of 50,000 patients took seconds each); /patients
        pages stay flat. A server that refuses /patients (an authorization plugin that lets
        only /tools/find through, filtered by the user's labels) is paged with find."""
        if self._patients_by_find is not client:
            try:
                return await client.list_patients(limit=limit, since=since)
            except OrthancError as exc:
                if exc.status not in (400, 403, 404, 405):
                    raise
                log.info("%s refuses GET /patients (%s): the list pages with /tools/find", self.peer_name, exc)
                self._patients_by_find = client
        return await client.search_patients("", limit=limit, since=since)

    def _new_node(self, level: str, resource_id: str, parent: Node, tags: Dict[str, str]) -> Node:
        node = Node(next(self._ids), level, resource_id, parent, tags)
        node.row = len(parent.children)
        self.nodes[node.uid] = node
        self._by_id.setdefault((level, resource_id), node)
        return node

    def _append(self, parent: Node, items: List[Tuple[str, str, Dict[str, str]]], *,
                search_subset: bool = False,
                children: Optional[Dict[str, List[Tuple[str, str, Dict[str, str]]]]] = None) -> List[Node]:
        """Insert rows under ``parent`` (level, id, tags), skipping ones already loaded.
        ``search_subset``: patients that come with their matching studies (no fetch);
        ``children``: those studies by patient ID, inserted with their patient."""
        # A resource has one place in the tree: a page that overlaps the previous one
        # (the server changed meanwhile) must not duplicate rows.
        seen = set()
        fresh = []
        for level, resource_id, tags in items:
            if resource_id and (level, resource_id) not in self._by_id and resource_id not in seen:
                seen.add(resource_id)
                fresh.append((level, resource_id, tags))
        if not fresh:
            return []
        first = len(parent.children)
        if parent is not self.root and not first:
            self._with_children.append(parent)
        self.listener.browser_insert(parent, first, first + len(fresh) - 1, True)
        nodes = []
        for level, resource_id, tags in fresh:
            node = self._new_node(level, resource_id, parent, tags)
            if search_subset:
                node.fetched = True
                node.search_subset = True
            parent.children.append(node)
            nodes.append(node)
            for level_, child_id, child_tags in (children or {}).get(resource_id, ()):
                if child_id and (level_, child_id) not in self._by_id:
                    if not node.children:
                        self._with_children.append(node)
                    node.children.append(self._new_node(level_, child_id, node, child_tags))
        self.listener.browser_insert(parent, first, first + len(fresh) - 1, False)
        if parent is self.root:
            self.listener.browser_rows(len(self.root.children))
        return nodes

    def _add_matching_studies(self, page: List[Dict[str, Any]]) -> None:
        by_patient: Dict[str, List[Dict[str, Any]]] = collections.OrderedDict()
        for study in page:
            if isinstance(study, dict) and study.get("ID"):
                by_patient.setdefault(str(study.get("ParentPatient", "")), []).append(study)
        new_patients = [("Patient", pid, dict(studies[0].get("PatientMainDicomTags") or {}))
                        for pid, studies in by_patient.items() if ("Patient", pid) not in self._by_id]
        # New patients come with their studies: one insertion for the page (one per patient
        # took ~45 µs each, 70-80 ms for a page of 1,600 matching studies).
        self._append(self.root, new_patients, search_subset=True,
                     children={pid: [("Study", str(s["ID"]), _tags(s)) for s in studies]
                               for pid, studies in by_patient.items()})
        fresh = {pid for _level, pid, _tags_ in new_patients}
        for pid, studies in by_patient.items():
            patient = self._by_id.get(("Patient", pid))
            if patient is not None and pid not in fresh:
                self._append(patient, [("Study", str(s["ID"]), _tags(s)) for s in studies])
                if patient.study_modalities is not None:
                    self._update_patient_modalities(patient)

    def _set_modalities(self, study: Node, found: Iterable[str]) -> None:
        study.modalities = "/".join(sorted(set(found) - {""}))
        self.listener.browser_changed(study, "modalities")
        patient = study.parent
        if patient is not None and patient.level == "Patient":
            self._update_patient_modalities(patient)

    def _update_patient_modalities(self, patient: Node) -> None:
        # The patient's series list (asked for when its row is painted) gives them all;
        # a search result counts only the studies it shows. Without that list: the
        # studies whose series are loaded.
        known = {m for s in patient.children for m in s.modalities.split("/") if m}
        listed = patient.study_modalities
        if listed is not None:
            shown = {s.id for s in patient.children} if patient.search_subset else None
            for study_id, modalities in listed.items():
                if shown is None or study_id in shown:
                    known |= modalities
        text = "/".join(sorted(known - {""}))
        if text != patient.modalities:
            patient.modalities = text
            self.listener.browser_changed(patient, "modalities")

    async def _list_patient_series(self, client: OrthancClient, patient: Node, generation: int) -> None:
        """Modalities of a collapsed patient: one request for all its series (Orthanc 1.10
        gives no modalities with a patient or a study)."""
        try:
            series = await client.get_json(f"/patients/{check_orthanc_id(patient.id)}/series")
        except (OrthancError, OSError, ValueError) as exc:
            log.debug("series of patient %s: %s", patient.id, exc)
            return
        if generation != self._generation or not isinstance(series, list):
            return
        by_study: Dict[str, Set[str]] = {}
        for one in series:
            if isinstance(one, dict):
                tags = one.get("MainDicomTags")
                modality = str(tags.get("Modality", "")) if isinstance(tags, dict) else ""
                by_study.setdefault(str(one.get("ParentStudy", "")), set()).add(modality)
        patient.study_modalities = by_study
        for study in patient.children:
            if not study.modalities and study.id in by_study:
                study.modalities = "/".join(sorted(by_study[study.id] - {""}))
                self.listener.browser_changed(study, "modalities")
        self._update_patient_modalities(patient)

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
                    node.stats_state = STATS_FAILED
                    node.error = user_text(exc, "statistics")
                else:
                    if generation != self._generation:
                        return
                    node.stats = stats if isinstance(stats, dict) else {}
                    node.stats_state = STATS_DONE
                    if node.level == "Patient" and node.study_modalities is None:
                        await self._list_patient_series(client, node, generation)
                        if generation != self._generation:
                            return
                    if node.level == "Study":
                        # The series give the study's modalities (not in its tags on
                        # Orthanc 1.10) and make expanding it instant.
                        self.fetch_children(node)
                self.listener.browser_changed(node, "stats")
        finally:
            if generation == self._generation:
                self._stats_workers -= 1


def _release_in_slices(*tables: Dict[Any, Node], size: int = 5000) -> None:
    """Empty the tables of reset rows a slice at a time, one after the other (the rows go
    with the last table that holds them)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        for table in tables:
            table.clear()
        return
    pending = [t for t in tables if t]

    def release() -> None:
        table = pending[0]
        pop = table.popitem
        for _ in range(min(size, len(table))):
            pop()
        if not table:
            pending.pop(0)
        if pending:
            loop.call_soon(release)
    if pending:
        loop.call_soon(release)


def _settle_rows() -> None:
    """Put the rows loaded so far out of the cyclic collector's reach. They live as long as
    the list; a full collection walking 50,000 rows would stall the loop for ~30 ms, and
    one comes each time the heap has grown by a quarter. A reset unlinks the rows, so they
    are still freed (by reference counting). The young generations are collected first so
    that little garbage is frozen with them."""
    gc.collect(1)
    gc.freeze()


def _path_key(node: Node) -> Tuple[int, ...]:
    rows: List[int] = []
    while node.parent is not None:
        rows.append(node.row)
        node = node.parent
    return tuple(reversed(rows))


def _tags(resource: Dict[str, Any]) -> Dict[str, str]:
    tags: Dict[str, str] = {}
    for key in ("PatientMainDicomTags", "MainDicomTags"):
        value = resource.get(key)
        if isinstance(value, dict):
            tags.update({str(k): str(v) for k, v in value.items() if isinstance(v, (str, int, float))})
    return tags


__all__ = ["StudyBrowser", "BrowserListener", "Node", "Search", "DEFAULT_PAGE_SIZE", "CHILD_LEVEL",
           "MODALITIES", "STATS_NONE", "STATS_PENDING", "STATS_DONE", "STATS_FAILED"]
