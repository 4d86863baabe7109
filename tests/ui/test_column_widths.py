"""Column widths of the study trees are remembered per pane (issue 15: "widths remembered")."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from gui.client import Peer
from gui.config import AppConfig
from gui.ui.study_tree_model import COL_ACCESSION, COL_PATIENT_ID
from tests.conftest import upload_all
from tests.ui.conftest import wait_loaded


@pytest.fixture
def private_settings(tmp_path):
    """QSettings written under the test's directory, not the user's."""
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    QSettings().clear()
    yield
    QSettings().clear()


def test_column_widths_come_back_in_the_next_window(qtbot, make_window, orthanc_factory, tiny_studies, tmp_path,
                                                     private_settings):
    server = orthanc_factory("widths")
    for files in tiny_studies(1, first_seed=520):
        upload_all(server, files)
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("A", server.url, local=True), Peer("B", server.url)]
    first = make_window(config)
    left, right = first.panes
    wait_loaded(qtbot, left)
    header = left.tree.header()
    default_id, default_accession = header.sectionSize(COL_PATIENT_ID), header.sectionSize(COL_ACCESSION)
    header.resizeSection(COL_PATIENT_ID, default_id + 57)
    header.resizeSection(COL_ACCESSION, default_accession + 31)
    qtbot.waitUntil(lambda: QSettings().value(left._settings_key()) is not None, timeout=5000)
    first.close()

    second = make_window(config)
    again_left, again_right = second.panes
    wait_loaded(qtbot, again_left)
    header = again_left.tree.header()
    assert header.sectionSize(COL_PATIENT_ID) == default_id + 57
    assert header.sectionSize(COL_ACCESSION) == default_accession + 31
    # The other pane keeps its own widths.
    assert again_right.tree.header().sectionSize(COL_PATIENT_ID) == default_id
