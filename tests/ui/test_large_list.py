"""The patient list of a server that is large or changing: pages, searches and their clearing.

Against real Orthanc servers, with small pages so that a handful of patients
takes several pages (the sizes of a large server are measured by
``tests/ui/large_server_stall.py``, not here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import Qt

from gui.client import Peer
from gui.config import AppConfig
from gui.ui.study_tree_model import COL_BIRTH_DATE, COL_NAME, COL_PATIENT_ID
from tests.conftest import upload_all
from tests.ui.conftest import wait_loaded

WAIT = 30000


def orthanc_patient_id(patient_id: str) -> str:
    """The Orthanc ID of a patient: the SHA-1 of its PatientID, in five groups."""
    digest = hashlib.sha1(patient_id.encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def config_with(tmp_path: Path, *peers: Peer) -> AppConfig:
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = list(peers)
    return config


def column(pane, col: int):
    model = pane.model
    return [model.index(row, col).data() for row in range(model.rowCount())]


def test_patients_arriving_while_the_list_loads_are_all_listed_once(
        qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    # Eight patients whose Orthanc IDs sort late, then three that sort first arrive after
    # the first page. Paging an ID-sorted answer by offset (/tools/find with Since) would
    # list two of the old ones twice and lose two of the new ones; the list pages
    # /patients, in the order the server stored them, so newcomers come at the end.
    early = [700, 702, 704, 706, 707, 708, 710, 712]
    late = [733, 759, 785]
    assert all(orthanc_patient_id(f"PAT{s:05d}") > "8" for s in early)
    assert all(orthanc_patient_id(f"PAT{s:05d}") < "1" for s in late)
    server = orthanc_factory("growing")
    for seed in early:
        upload_all(server, tiny_studies(1, seed)[0][:1])
    window = make_window(config_with(tmp_path, Peer("Growing", server.url)), page_size=2)
    pane = window.panes[0]
    counts = []

    def arrived(count: int) -> None:
        counts.append(count)
        if count == 2 and len([c for c in counts if c == 2]) == 1:   # the first page is in
            for seed in late:
                upload_all(server, tiny_studies(1, seed)[0][:1])
    pane.model.rowsLoaded.connect(arrived)
    wait_loaded(qtbot, pane)

    expected = sorted(f"PAT{s:05d}" for s in early + late)
    assert sorted(column(pane, COL_PATIENT_ID)) == expected            # each one, once
    assert pane.model.top_level_count == len(expected)
    assert len([c for c in counts if c]) >= 3                          # it took pages
    assert "11 patients" in pane.status_text
    # The rows come with what a patient row shows.
    tags = server.request("GET", f"/patients/{orthanc_patient_id('PAT00733')}")["MainDicomTags"]
    row = column(pane, COL_PATIENT_ID).index("PAT00733")
    birth = tags["PatientBirthDate"]
    assert pane.model.index(row, COL_BIRTH_DATE).data() == f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    assert pane.model.index(row, COL_NAME).data() == " ".join(tags["PatientName"].split("^")).strip()


def shown(pane):
    """What the view shows, top to bottom, expanded children included: (level, patient ID)."""
    tree, model = pane.tree, pane.model
    tree.doItemsLayout()
    out = []
    index = model.index(0, 0)
    while index.isValid():
        node = model.node(index)
        out.append((node.level, node.tags.get("PatientID")) if node is not None else None)
        index = tree.indexBelow(index)
    return out


def test_rows_a_search_replaces_go_a_slice_at_a_time_and_never_show(
        qtbot, make_window, orthanc_factory, tiny_studies, tmp_path, monkeypatch):
    # A search (or F5) replaces the list; Qt's old rows are freed a slice per loop turn
    # afterwards (at 50,000 rows, at once, they took one long turn). Held back here, then
    # freed one row per turn: whatever is left of them, the view shows exactly the new list.
    from gui.ui import study_tree_model
    from gui.ui.study_tree_model import StudyTreeModel
    server = orthanc_factory("replaced")
    for files in tiny_studies(6, first_seed=760):
        upload_all(server, files)
    window = make_window(config_with(tmp_path, Peer("Replaced", server.url)), page_size=2)
    pane = window.panes[0]
    model = pane.model
    wait_loaded(qtbot, pane)
    everyone = [f"PAT{s:05d}" for s in range(760, 766)]
    assert sorted(column(pane, COL_PATIENT_ID)) == everyone

    # Open PAT00762 and select its study.
    patient = model.index(column(pane, COL_PATIENT_ID).index("PAT00762"), 0)
    pane.tree.expand(patient)
    qtbot.waitUntil(lambda: model.rowCount(patient) == 1, timeout=WAIT)
    study_id = model.node(model.index(0, 0, patient)).id
    selection = pane.tree.selectionModel()
    rows_flag = selection.SelectionFlag.Select | selection.SelectionFlag.Rows
    selection.select(model.index(0, 0, patient), rows_flag)

    release = StudyTreeModel._schedule_release
    monkeypatch.setattr(StudyTreeModel, "_schedule_release", lambda self: None)   # held back
    pane.search("PAT00762")
    wait_loaded(qtbot, pane)
    assert model.stale_rows == 6                        # the old rows are all still in Qt
    assert model.rowCount() == 1
    assert shown(pane) == [("Patient", "PAT00762"), ("Study", "PAT00762")]   # open again, only it
    assert pane.selected_resources() == [{"Level": "Study", "ID": study_id}]

    pane.search("")                                     # cleared: every row back
    wait_loaded(qtbot, pane)
    assert model.stale_rows == 7
    qtbot.waitUntil(lambda: len(shown(pane)) == 7, timeout=WAIT)   # the open patient's study loads
    rows = shown(pane)
    assert sorted(p for level, p in rows if level == "Patient") == everyone
    assert rows[rows.index(("Patient", "PAT00762")) + 1] == ("Study", "PAT00762")
    assert len(rows) == 7
    assert pane.selected_resources() == [{"Level": "Study", "ID": study_id}]
    # And the patient PAT00765 too.
    row_765 = model.index(column(pane, COL_PATIENT_ID).index("PAT00765"), 0)
    selection.select(row_765, rows_flag)
    chosen = sorted([{"Level": "Study", "ID": study_id}, {"Level": "Patient", "ID": model.node(row_765).id}],
                    key=lambda r: r["Level"])

    # Sorting while old rows are left: the new ones are sorted, the old ones stay unseen.
    pane.tree.header().setSortIndicator(COL_PATIENT_ID, Qt.SortOrder.DescendingOrder)
    rows = shown(pane)
    assert [p for level, p in rows if level == "Patient"] == everyone[::-1]
    assert len(rows) == 7 and rows[rows.index(("Patient", "PAT00762")) + 1] == ("Study", "PAT00762")
    assert sorted(pane.selected_resources(), key=lambda r: r["Level"]) == chosen

    # Freed one row per turn, the list untouched.
    monkeypatch.setattr(study_tree_model, "RELEASE_SLICE", 1)
    monkeypatch.setattr(StudyTreeModel, "_schedule_release", release)
    slices = []
    monkeypatch.setattr(StudyTreeModel, "_release_slice",
                        lambda self, free=StudyTreeModel._release_slice: (slices.append(1), free(self)))
    model._schedule_release()
    qtbot.waitUntil(lambda: model.stale_rows == 0, timeout=WAIT)
    assert len(slices) >= 7
    assert shown(pane) == rows
    assert sorted(pane.selected_resources(), key=lambda r: r["Level"]) == chosen
    selection.clearSelection()
    pane.tree.selectAll()                               # Ctrl+A: only what is shown
    assert len(selection.selectedRows(0)) == 7


REFUSE_PATIENT_LIST = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  -- as an authorization plugin does for a user limited to some labels
  return not (method == 'GET' and uri == '/patients')
end
"""


def test_a_server_that_refuses_the_patient_listing_is_paged_with_find(
        qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    script = tmp_path / "refuse.lua"
    script.write_text(REFUSE_PATIENT_LIST)
    server = orthanc_factory("guarded", extra_config={"LuaScripts": [str(script)]})
    for files in tiny_studies(5, first_seed=790):
        upload_all(server, files[:1])
    window = make_window(config_with(tmp_path, Peer("Guarded", server.url)), page_size=2)
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    assert sorted(column(pane, COL_PATIENT_ID)) == [f"PAT{s:05d}" for s in range(790, 795)]
    assert "5 patients" in pane.status_text


def test_a_broad_search_lands_every_study_under_its_patient_slice_by_slice(
        qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    # Pages of 2, 4, then 8 studies, each handled 4 at a time (twice the page size): every
    # patient arrives with its study in the same insertion, and what was open and
    # selected before the search is open and selected in its result.
    server = orthanc_factory("broad")
    for files in tiny_studies(9, first_seed=800):
        upload_all(server, files[:1])
    window = make_window(config_with(tmp_path, Peer("Broad", server.url)), page_size=2)
    pane = window.panes[0]
    model = pane.model
    wait_loaded(qtbot, pane)
    patient = model.index(column(pane, COL_PATIENT_ID).index("PAT00806"), 0)
    pane.tree.expand(patient)
    qtbot.waitUntil(lambda: model.rowCount(patient) == 1, timeout=WAIT)
    study_id = model.node(model.index(0, 0, patient)).id
    selection = pane.tree.selectionModel()
    selection.select(model.index(0, 0, patient), selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    pane.search("PAT008*")
    wait_loaded(qtbot, pane)
    everyone = [f"PAT{s:05d}" for s in range(800, 809)]
    assert sorted(column(pane, COL_PATIENT_ID)) == everyone
    for row in range(model.rowCount()):
        index = model.index(row, 0)
        assert model.rowCount(index) == 1
        assert model.node(model.index(0, 0, index)).tags["PatientID"] == model.index(row, COL_PATIENT_ID).data()
        assert model.index(0, 0, index).data() == "TINY " + model.index(row, COL_PATIENT_ID).data()[3:].lstrip("0")
    rows = shown(pane)
    assert rows[rows.index(("Patient", "PAT00806")) + 1] == ("Study", "PAT00806") and len(rows) == 10
    assert pane.selected_resources() == [{"Level": "Study", "ID": study_id}]

    pane.search("")
    wait_loaded(qtbot, pane)
    qtbot.waitUntil(lambda: len(shown(pane)) == 10, timeout=WAIT)
    assert sorted(column(pane, COL_PATIENT_ID)) == everyone
    assert pane.selected_resources() == [{"Level": "Study", "ID": study_id}]
