"""The main window against real Orthanc servers: browsing, paging, search, bad peers."""

from __future__ import annotations

import warnings
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from gui.client import Peer
from gui.config import AppConfig
from gui.ui.resource_mime import MIME_TYPE, decode_payload, from_mime_data
from gui.ui.study_tree_model import COL_INSTANCES, COL_MODALITY, COL_NAME, COL_PATIENT_ID, COL_SIZE
from tests.conftest import upload_all
from tests.ui.conftest import wait_loaded

WAIT = 30000


def config_with(tmp_path: Path, *peers: Peer) -> AppConfig:
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = list(peers)
    return config


def drag_enter(point: QPoint, mime: QMimeData) -> QDragEnterEvent:
    # Qt 6 still builds drag-enter events from an integer point; PySide marks it deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return QDragEnterEvent(point, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                               Qt.KeyboardModifier.NoModifier)


def top_level_texts(pane, column: int = COL_NAME):
    model = pane.model
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_both_panes_list_their_studies_and_children_load_on_expand(
        qtbot, make_window, orthanc_factory, tiny_studies, ct_study_files, tmp_path):
    left, right = orthanc_factory("left"), orthanc_factory("right")
    for files in tiny_studies(2, first_seed=201):
        upload_all(left, files)
    upload_all(right, ct_study_files)
    window = make_window(config_with(tmp_path, Peer("Left", left.url, local=True), Peer("Right", right.url)))
    a, b = window.panes
    wait_loaded(qtbot, a)
    wait_loaded(qtbot, b)

    assert a.peer.name == "Left" and b.peer.name == "Right"
    assert "Orthanc 1.10.1" in a.status_text and "accelerator: no" in a.status_text
    assert sorted(top_level_texts(a, COL_PATIENT_ID)) == ["PAT00201", "PAT00202"]
    assert top_level_texts(b, COL_PATIENT_ID) == ["PAT00007"]

    # Children are not there before the user expands.
    model = b.model
    patient = model.index(0, 0)
    assert model.hasChildren(patient) and model.rowCount(patient) == 0
    b.tree.expand(patient)
    qtbot.waitUntil(lambda: model.rowCount(patient) == 1, timeout=WAIT)
    study = model.index(0, 0, patient)
    assert study.data() == "CT CHEST"
    b.tree.expand(study)
    qtbot.waitUntil(lambda: model.rowCount(study) == 1, timeout=WAIT)
    series = model.index(0, 0, study)
    assert model.index(0, COL_INSTANCES, study).data() == "6"
    assert model.index(0, COL_MODALITY, study).data() == "CT"
    # Sizes come from /statistics for the rows on screen.
    qtbot.waitUntil(lambda: model.index(series.row(), COL_SIZE, study).data() not in ("", "…"), timeout=WAIT)
    assert model.index(series.row(), COL_SIZE, study).data().endswith("MB")
    qtbot.waitUntil(lambda: model.index(0, COL_MODALITY, patient).data() == "CT", timeout=WAIT)
    qtbot.waitUntil(lambda: model.index(0, COL_INSTANCES, patient).data() == "6", timeout=WAIT)
    qtbot.waitUntil(lambda: model.index(0, COL_MODALITY).data() == "CT", timeout=WAIT)  # the patient row


def test_paging_loads_every_page_progressively(qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    server = orthanc_factory("big")
    for files in tiny_studies(12, first_seed=300):
        upload_all(server, files[:1])
    # 12 studies: a page of 5, then one of 10 (pages grow) that comes back with 7.
    window = make_window(config_with(tmp_path, Peer("Big", server.url)), page_size=5)
    pane = window.panes[0]
    counts = []
    pane.model.rowsLoaded.connect(counts.append)
    wait_loaded(qtbot, pane)
    assert sorted(top_level_texts(pane, COL_PATIENT_ID)) == [f"PAT{n:05d}" for n in range(300, 312)]
    # The rows arrived page by page (5, then a page twice as large), not in one block.
    assert [c for c in counts if c] == [5, 12]
    assert "12 patients" in pane.status_text

    # Searches page the same way; every match lands under its patient.
    pane.search("PAT003")
    wait_loaded(qtbot, pane)
    assert pane.model.rowCount() == 12
    assert all(pane.model.rowCount(pane.model.index(row, 0)) == 1 for row in range(12))


def test_search_filters_by_name_id_and_accession(qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    server = orthanc_factory("search")
    for files in tiny_studies(3, first_seed=401):
        upload_all(server, files)
    window = make_window(config_with(tmp_path, Peer("S", server.url)))
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    assert pane.model.rowCount() == 3

    pane.search("PAT00402")
    wait_loaded(qtbot, pane)
    assert top_level_texts(pane, COL_PATIENT_ID) == ["PAT00402"]
    patient = pane.model.index(0, 0)
    # Matching studies are already under their patient.
    assert pane.model.rowCount(patient) == 1
    assert pane.model.index(0, 0, patient).data() == "TINY 402"
    assert "matching" in pane.status_text

    pane.search("ACC000403")
    wait_loaded(qtbot, pane)
    assert top_level_texts(pane, COL_PATIENT_ID) == ["PAT00403"]

    # Typing in the box searches once typing pauses.
    pane.search_box.clear()
    qtbot.keyClicks(pane.search_box, "nobody-has-this-name")
    qtbot.waitUntil(lambda: pane.model.search_text == "nobody-has-this-name" and pane.model.is_complete,
                    timeout=WAIT)
    assert pane.model.rowCount() == 0

    pane.search("")
    wait_loaded(qtbot, pane)
    assert pane.model.rowCount() == 3


def test_f5_reloads_what_arrived(qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    server = orthanc_factory("refresh")
    studies = tiny_studies(2, first_seed=501)
    upload_all(server, studies[0])
    window = make_window(config_with(tmp_path, Peer("R", server.url)))
    pane = window.panes[0]
    wait_loaded(qtbot, pane)
    assert pane.model.rowCount() == 1
    upload_all(server, studies[1])
    window.activateWindow()
    window.refresh_action.trigger()   # the F5 action
    assert window.refresh_action.shortcut().toString() == "F5"
    qtbot.waitUntil(lambda: pane.model.rowCount() == 2 and pane.model.is_complete, timeout=WAIT)


def test_a_silent_or_dead_peer_never_blocks_the_other_pane(
        qtbot, make_window, orthanc_factory, tiny_studies, silent_server, closed_port_url, tmp_path):
    good = orthanc_factory("good")
    upload_all(good, tiny_studies(1, first_seed=601)[0])
    config = config_with(tmp_path, Peer("Silent", silent_server, timeout=8),
                         Peer("Good", good.url), Peer("Dead", closed_port_url))
    window = make_window(config)
    slow, fast = window.panes
    assert slow.peer.name == "Silent" and fast.peer.name == "Good"
    assert slow.state == "connecting" and "Connecting" in slow.status_text

    # The other pane loads while this one still waits for an answer.
    wait_loaded(qtbot, fast)
    assert slow.state == "connecting"
    fast.tree.expand(fast.model.index(0, 0))
    qtbot.waitUntil(lambda: fast.model.rowCount(fast.model.index(0, 0)) == 1, timeout=WAIT)

    qtbot.waitUntil(lambda: slow.state == "error", timeout=WAIT)
    assert "Cannot reach Silent" in slow.status_text and "no answer within 8 s" in slow.status_text
    assert slow.model.rowCount() == 0

    slow.select_peer("Dead")
    qtbot.waitUntil(lambda: slow.state == "error", timeout=WAIT)
    assert "connection refused" in slow.status_text

    # F5 on an unreachable peer tries again, and switching back to a good one works.
    slow.refresh()
    assert slow.state == "connecting"
    qtbot.waitUntil(lambda: slow.state == "error", timeout=WAIT)
    slow.select_peer("Good")
    wait_loaded(qtbot, slow)
    assert slow.model.rowCount() == 1


def test_wrong_password_is_a_clear_message(qtbot, make_window, orthanc_factory, tmp_path):
    server = orthanc_factory("locked", username="alice", password="right")
    config = config_with(tmp_path, Peer("Wrong", server.url, username="alice", password="wrong"),
                         Peer("Right", server.url, username="alice", password="right"))
    window = make_window(config)
    wrong, right = window.panes
    qtbot.waitUntil(lambda: wrong.state == "error", timeout=WAIT)
    assert "wrong username or password" in wrong.status_text
    assert "wrong" not in wrong.status_text.replace("wrong username", "")  # no password shown
    wait_loaded(qtbot, right)


def test_a_web_server_that_is_not_orthanc_is_named_as_such(qtbot, make_window, html_server, tmp_path):
    window = make_window(config_with(tmp_path, Peer("Web", html_server)))
    pane = window.panes[0]
    qtbot.waitUntil(lambda: pane.state == "error", timeout=WAIT)
    assert "not an Orthanc server" in pane.status_text


def test_drag_payload_and_drop_routing(qtbot, make_window, orthanc_factory, tiny_studies, tmp_path):
    left, right = orthanc_factory("dragsrc"), orthanc_factory("dragdst")
    for files in tiny_studies(2, first_seed=701):
        upload_all(left, files)
    window = make_window(config_with(tmp_path, Peer("Src", left.url, local=True), Peer("Dst", right.url)))
    source, target = window.panes
    wait_loaded(qtbot, source)
    wait_loaded(qtbot, target)
    model = source.model
    assert source.tree.dragEnabled()
    assert MIME_TYPE in model.mimeTypes()

    first, second = model.index(0, 0), model.index(1, 0)
    source.tree.expand(first)
    qtbot.waitUntil(lambda: model.rowCount(first) == 1, timeout=WAIT)
    study = model.index(0, 0, first)
    selection = source.tree.selectionModel()
    for index in (first, study, second):
        selection.select(index, selection.SelectionFlag.Select | selection.SelectionFlag.Rows)
    # The study is inside the selected patient: it is not listed twice.
    resources = source.selected_resources()
    assert [r["Level"] for r in resources] == ["Patient", "Patient"]
    assert {r["ID"] for r in resources} == {model.node(first).id, model.node(second).id}

    mime = model.mimeData(selection.selectedIndexes())
    payload = decode_payload(bytes(mime.data(MIME_TYPE).data()))
    assert payload.peer == "Src"
    assert payload.resources == resources
    assert len(payload.labels) == 2 and "PAT0070" in payload.labels[0]

    # Without a handler the pane refuses drops; with one, Qt's drop events reach it.
    target.set_drop_handler(None)
    target.set_drag_enter_handler(None)
    assert not target.accepts_drag(mime) and not target.handle_drop(mime)
    received = []
    target.set_drag_enter_handler(lambda pane, data: from_mime_data(data) is not None)
    target.set_drop_handler(lambda pane, data: received.append((pane, from_mime_data(data))) or True)
    viewport = target.tree.viewport()
    point = QPoint(10, 10)
    enter = drag_enter(point, mime)
    QApplication.sendEvent(viewport, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(point), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, drop)
    assert drop.isAccepted()
    assert received and received[0][0] is target and received[0][1].resources == resources

    other = QMimeData()
    other.setText("just text")
    refuse = drag_enter(point, other)
    QApplication.sendEvent(viewport, refuse)
    assert not refuse.isAccepted()


def test_window_api_menus_docks_and_close_hook(qtbot, make_window, tmp_path):
    from PySide6.QtWidgets import QLabel
    window = make_window(config_with(tmp_path))
    assert len(window.panes) == 2 and window.engine is None
    assert all(p.peer is None for p in window.panes)
    assert "Settings" in window.panes[0].status_text
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles[:2] == ["&File", "&View"] and titles[-1] == "&Help"
    dock = window.add_dock(QLabel("hello"), "Extra")
    assert dock.toggleViewAction() in window.view_menu.actions()
    window.add_menu("&Tools")
    assert [a.text() for a in window.menuBar().actions()][-2:] == ["&Tools", "&Help"]

    answer = [False]
    window.add_close_veto(lambda: answer[0])
    window.add_close_veto(lambda: 1 / 0)      # a broken veto does not trap the user
    window.close()
    assert window.isVisible()
    answer[0] = True
    with qtbot.waitSignal(window.closed, timeout=5000):
        window.close()
