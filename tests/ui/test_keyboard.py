"""The window driven from the keyboard (issue 15, "Keyboard"): Ctrl+Enter sends, Ctrl+Shift+Enter
retrieves, Ctrl+, opens the settings, F5 refreshes, and the tree that has the focus shows it."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from gui.engine.events import JobState
from tests.ui.test_truthful_window import ct_study, select_study
from tests.ui.transfers_harness import make_bed, until  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def shipped_look(qapp):
    """The app's own stylesheet, as ``orthanc-transfers-gui`` applies it."""
    from gui.app import _apply_look
    before = qapp.styleSheet()
    _apply_look(qapp)
    yield
    qapp.setStyleSheet(before)


def frame_colour(tree) -> QColor:
    """The colour of the tree's frame, half-way down its left edge."""
    image = tree.grab().toImage()
    return image.pixelColor(0, image.height() // 2)


def test_shortcuts_drive_the_window_and_the_focused_tree_shows_it(make_bed, shipped_look):
    bed = make_bed()
    study = ct_study(bed, 71, slices=2, size=64)
    window = bed.window
    ctrl = Qt.KeyboardModifier.ControlModifier

    async def scenario() -> None:
        window.activateWindow()
        await until(lambda: QApplication.activeWindow() is window, what="the window to be active")
        await select_study(bed, study)
        left, right = bed.left.tree, bed.right.tree
        left.setFocus()
        await until(lambda: left.hasFocus(), what="the focus in the left tree")
        highlight = left.palette().color(QPalette.ColorGroup.Active, QPalette.ColorRole.Highlight)
        assert frame_colour(left) == highlight           # the tree with the focus says so
        assert frame_colour(right) != highlight
        right.setFocus()
        await until(lambda: right.hasFocus(), what="the focus in the right tree")
        assert frame_colour(right) == highlight and frame_colour(left) != highlight

        left.setFocus()
        bed.qtbot.keyClick(left, Qt.Key.Key_Return, ctrl)                    # Ctrl+Enter: send
        job = await bed.wait_for_job()
        assert (job.source_name, job.target_name) == (bed.left.peer.name, bed.right.peer.name)
        assert (await bed.wait_for_report(job.id)).state == JobState.SUCCESS

        # Ctrl+Shift+Enter: the right pane's selection comes back (already there: nothing moves).
        from PySide6.QtCore import QItemSelectionModel
        index = await bed.study_index(bed.right, study)
        bed.right.tree.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                               | QItemSelectionModel.SelectionFlag.Rows)
        right.setFocus()
        bed.qtbot.keyClick(right, Qt.Key.Key_Return, ctrl | Qt.KeyboardModifier.ShiftModifier)
        back = await bed.wait_for_job(exclude={job.id})
        assert (back.source_name, back.target_name) == (bed.right.peer.name, bed.left.peer.name)
        assert (await bed.wait_for_report(back.id)).state == JobState.SUCCESS

        refreshes = bed.refresh_count(bed.right)
        bed.qtbot.keyClick(left, Qt.Key.Key_F5)                              # F5: both panes reload
        assert bed.refresh_count(bed.right) > refreshes

        opened = []
        window.open_settings = lambda: opened.append(True)
        window.settings_action.triggered.disconnect()
        window.settings_action.triggered.connect(window.open_settings)
        bed.qtbot.keyClick(left, Qt.Key.Key_Comma, ctrl)                     # Ctrl+,: the settings
        assert opened == [True]

    bed.run(scenario())
