"""The patient list of a server that is large or changing: pages, searches and their clearing.

Against real Orthanc servers, with small pages so that a handful of patients
takes several pages (the sizes of a large server are measured by
``tests/ui/large_server_stall.py``, not here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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
