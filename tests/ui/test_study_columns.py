"""Studies identified the radiology way: columns, tooltips, sorting, date and modality filters."""

from __future__ import annotations

import dataclasses
import datetime

from PySide6.QtCore import QDate, Qt

from gui.client import Peer
from gui.config import AppConfig
from gui.sandbox import synthetic_studies as synth
from gui.ui.study_tree_model import (COL_ACCESSION, COL_BIRTH_DATE, COL_INSTANCES, COL_MODALITY, COL_NAME,
                                     COL_PATIENT_ID, COL_SERIES, COL_STUDY_DATE, COLUMNS)
from tests.conftest import upload_all
from tests.ui.conftest import wait_loaded

WAIT = 30000


def texts(pane, column: int):
    model = pane.model
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_study_and_series_rows_read_like_a_worklist(qtbot, make_window, orthanc_factory, tiny_studies,
                                                     tmp_path):
    server = orthanc_factory("worklist")
    for files in tiny_studies(2, first_seed=501):
        upload_all(server, files)
    today = datetime.date.today().strftime("%Y%m%d")
    spec = dataclasses.replace(synth.make_study_spec(510, "CT ABDOMEN WITH CONTRAST"), study_date=today)
    upload_all(server, list(synth.ct_series(spec, 2, rows=64, cols=64, seed=510)))
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Worklist", server.url, local=True)]
    window = make_window(config)
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    model = pane.model
    assert [model.headerData(c, Qt.Orientation.Horizontal) for c in range(len(COLUMNS))] == [
        "Patient / description", "Patient ID", "Birth date", "Study date", "Accession", "Modalities",
        "Series", "Instances", "Size"]

    # Sortable by a click on the header: patient ID, descending.
    pane.tree.header().setSortIndicator(COL_PATIENT_ID, Qt.SortOrder.DescendingOrder)
    assert texts(pane, COL_PATIENT_ID) == ["PAT00510", "PAT00502", "PAT00501"]
    patient = model.index(0, 0)
    assert model.index(0, COL_BIRTH_DATE).data() == "1960-01-01"
    pane.tree.expand(patient)
    qtbot.waitUntil(lambda: model.rowCount(patient) == 1, timeout=WAIT)
    study = model.index(0, 0, patient)
    row = {c: model.index(0, c, patient).data() for c in range(len(COLUMNS))}
    assert row[COL_NAME] == "CT ABDOMEN WITH CONTRAST"
    assert row[COL_PATIENT_ID] == "PAT00510" and row[COL_BIRTH_DATE] == "1960-01-01"
    assert row[COL_STUDY_DATE] == f"{today[:4]}-{today[4:6]}-{today[6:]}"
    assert row[COL_ACCESSION] == "ACC000510"
    qtbot.waitUntil(lambda: model.index(0, COL_SERIES, patient).data() == "1", timeout=WAIT)
    qtbot.waitUntil(lambda: model.index(0, COL_INSTANCES, patient).data() == "2", timeout=WAIT)
    qtbot.waitUntil(lambda: model.index(0, COL_MODALITY, patient).data() == "CT", timeout=WAIT)
    tip = model.index(0, COL_NAME, patient).data(Qt.ItemDataRole.ToolTipRole)
    assert "CT ABDOMEN WITH CONTRAST" in tip and "ACC000510" in tip
    pane.tree.expand(study)
    qtbot.waitUntil(lambda: model.rowCount(study) == 1, timeout=WAIT)
    series = model.index(0, COL_NAME, study)
    assert series.data().startswith("#1 ")
    series_tip = series.data(Qt.ItemDataRole.ToolTipRole)
    assert model.node(series).tags["SeriesDescription"] in series_tip
    assert model.node(series).id not in series_tip                 # no UUID for a tooltip
    assert model.index(0, COL_MODALITY, study).data() == "CT"
    assert pane.selected_labels() == [] and model.label(model.node(study)).count("ACC000510") == 1

    # Filters: modality, then study date.
    pane.search("", modality="CT")
    qtbot.waitUntil(lambda: model.is_complete and texts(pane, COL_PATIENT_ID) == ["PAT00510"], timeout=WAIT)
    pane.search("", days=-1, modality="OT")
    qtbot.waitUntil(lambda: model.is_complete and sorted(texts(pane, COL_PATIENT_ID)) == ["PAT00501", "PAT00502"],
                    timeout=WAIT)
    pane.search("", days=0, modality="")
    qtbot.waitUntil(lambda: model.is_complete and texts(pane, COL_PATIENT_ID) == ["PAT00510"], timeout=WAIT)
    assert pane.date_filter.currentText() == "Today"
    pane.search("PAT0050*", days=-1)
    qtbot.waitUntil(lambda: model.is_complete and sorted(texts(pane, COL_PATIENT_ID)) == ["PAT00501", "PAT00502"],
                    timeout=WAIT)


def test_a_collapsed_patient_shows_the_modalities_of_its_studies(qtbot, make_window, orthanc_factory, tmp_path):
    server = orthanc_factory("modalities")
    # One patient with a CT study and a study of key images (OT); another with key images only.
    upload_all(server, list(synth.ct_series(synth.make_study_spec(530, "CT CHEST"), 2, rows=32, cols=32,
                                            seed=530)))
    upload_all(server, list(synth.tiny_instances(synth.make_study_spec(530, "KEY IMAGES"), 1, size=1024,
                                                 seed=530)))
    upload_all(server, list(synth.tiny_instances(synth.make_study_spec(531, "TINY 531"), 1, size=1024,
                                                 seed=531)))
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Modalities", server.url, local=True)]
    window = make_window(config)
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    model = pane.model

    def modalities_of(patient_id: str) -> str:
        row = texts(pane, COL_PATIENT_ID).index(patient_id)
        return model.index(row, COL_MODALITY).data()

    qtbot.waitUntil(lambda: modalities_of("PAT00530") == "CT/OT", timeout=WAIT)
    qtbot.waitUntil(lambda: modalities_of("PAT00531") == "OT", timeout=WAIT)
    # Known without expanding the patient or listing its studies.
    patient = model.index(texts(pane, COL_PATIENT_ID).index("PAT00530"), 0)
    assert not pane.tree.isExpanded(patient)
    assert model.hasChildren(patient) and model.rowCount(patient) == 0

    # A search result names the modalities of the studies it shows, not of all the patient's.
    pane.search("", modality="CT")
    qtbot.waitUntil(lambda: model.is_complete and texts(pane, COL_PATIENT_ID) == ["PAT00530"], timeout=WAIT)
    qtbot.waitUntil(lambda: model.index(0, COL_MODALITY).data() == "CT", timeout=WAIT)
    assert not pane.tree.isExpanded(model.index(0, 0))


def test_sorting_keeps_what_is_open_and_selected(qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    server = orthanc_factory("sorting")
    for files in tiny_studies(3, first_seed=541):
        upload_all(server, files)
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Sorting", server.url, local=True)]
    window = make_window(config)
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    model = pane.model
    header = pane.tree.header()
    header.setSortIndicator(COL_PATIENT_ID, Qt.SortOrder.AscendingOrder)
    assert texts(pane, COL_PATIENT_ID) == ["PAT00541", "PAT00542", "PAT00543"]
    # The first patient, open with its study selected, goes to the end.
    pane.tree.expand(model.index(0, 0))
    qtbot.waitUntil(lambda: model.rowCount(model.index(0, 0)) == 1, timeout=WAIT)
    study = model.index(0, 0, model.index(0, 0))
    study_id = model.node(study).id
    selection = pane.tree.selectionModel()
    selection.select(study, selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    header.setSortIndicator(COL_PATIENT_ID, Qt.SortOrder.DescendingOrder)
    assert texts(pane, COL_PATIENT_ID) == ["PAT00543", "PAT00542", "PAT00541"]
    moved = model.index(2, 0)
    assert pane.tree.isExpanded(moved) and model.rowCount(moved) == 1
    assert model.index(0, 0, moved).data() == "TINY 541"
    assert pane.selected_resources() == [{"Level": "Study", "ID": study_id}]
    # The patient now first was never opened: its arrow, no rows yet; it still opens.
    first = model.index(0, 0)
    assert not pane.tree.isExpanded(first) and model.hasChildren(first) and model.rowCount(first) == 0
    pane.tree.expand(first)
    qtbot.waitUntil(lambda: model.rowCount(model.index(0, 0)) == 1, timeout=WAIT)
    assert model.index(0, 0, model.index(0, 0)).data() == "TINY 543"


def test_a_custom_date_range_hides_the_studies_outside_it(qtbot, make_window, orthanc_factory, tmp_path):
    server = orthanc_factory("daterange")
    # Two studies on the edges of the range (both ends included) and one the day after it.
    for seed, date in ((601, "20250101"), (602, "20250331"), (603, "20250401")):
        spec = dataclasses.replace(synth.make_study_spec(seed, f"TINY {seed}"), study_date=date)
        upload_all(server, list(synth.tiny_instances(spec, 1, size=2048, seed=seed)))
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Dates", server.url, local=True)]
    window = make_window(config)
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    everyone = ["PAT00601", "PAT00602", "PAT00603"]
    assert sorted(texts(pane, COL_PATIENT_ID)) == everyone
    assert not pane.date_from_edit.isVisible() and not pane.date_to_edit.isVisible()

    # Chosen as a user does: the filter's "Range…" item, then the two date fields.
    pane.date_filter.setCurrentIndex(pane.date_filter.findText("Range\u2026"))
    assert pane.date_from_edit.isVisible() and pane.date_to_edit.isVisible()
    assert pane.date_from_edit.calendarPopup() and pane.date_to_edit.calendarPopup()
    today = datetime.date.today()
    assert pane.date_to_edit.date().toPython() == today
    assert pane.date_from_edit.date().toPython() < today
    pane.date_from_edit.setDate(QDate(2025, 1, 1))
    pane.date_to_edit.setDate(QDate(2025, 3, 31))
    qtbot.waitUntil(lambda: model_done(pane) and sorted(texts(pane, COL_PATIENT_ID)) == ["PAT00601", "PAT00602"],
                    timeout=WAIT)
    assert pane.date_filter.currentText() == "2025-01-01 \u2013 2025-03-31"

    # "From" moved past "to" drags "to" along: the range stays from ≤ to, here 1 April only.
    pane.date_from_edit.setDate(QDate(2025, 4, 1))
    assert pane.date_to_edit.date() == QDate(2025, 4, 1)
    qtbot.waitUntil(lambda: model_done(pane) and texts(pane, COL_PATIENT_ID) == ["PAT00603"], timeout=WAIT)
    assert pane.date_filter.currentText() == "2025-04-01 \u2013 2025-04-01"

    # Back to any date: every study again, the fields gone.
    pane.date_filter.setCurrentIndex(pane.date_filter.findData(-1))
    qtbot.waitUntil(lambda: model_done(pane) and sorted(texts(pane, COL_PATIENT_ID)) == everyone, timeout=WAIT)
    assert not pane.date_from_edit.isVisible()
    assert pane.date_filter.findText("Range\u2026") >= 0

    # The same through search(): the range set programmatically, shown in the filter.
    pane.search("", dates=(datetime.date(2025, 3, 31), datetime.date(2025, 2, 1)))
    qtbot.waitUntil(lambda: model_done(pane) and texts(pane, COL_PATIENT_ID) == ["PAT00602"], timeout=WAIT)
    assert pane.date_filter.currentText() == "2025-02-01 \u2013 2025-03-31"


def model_done(pane) -> bool:
    return pane.state == "ok" and pane.model.is_complete
