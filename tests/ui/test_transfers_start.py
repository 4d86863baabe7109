"""Starting transfers without dragging: buttons, context menu, and the confirmation."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel
from PySide6.QtWidgets import QMenu

from gui.engine.events import JobState
from gui.sandbox import synthetic_studies as synth
from tests.ui.transfers_harness import TransfersBed, until

pytestmark = pytest.mark.timeout(240)


async def select_study(bed: TransfersBed, study_id: str) -> None:
    index = await bed.study_index(bed.left, study_id)
    bed.left.tree.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                          | QItemSelectionModel.SelectionFlag.Rows)


def clipped(dialog) -> list:
    """The confirmation's value labels that do not show all of their text."""
    from PySide6.QtWidgets import QApplication, QLabel
    QApplication.processEvents()
    out = []
    for label in dialog.findChildren(QLabel):
        if not label.isVisible() or not label.text():
            continue
        if label.wordWrap():
            if label.height() < label.heightForWidth(label.width()):
                out.append(label.text())
        elif label.width() < label.sizeHint().width():
            out.append(label.text())
    return out


def test_send_button_asks_first_then_transfers(make_bed):
    bed = make_bed()
    bed.config.ui["ConfirmTransfers"] = True
    study = bed.load_source(synth.ct_series(synth.make_study_spec(31, "CT BUTTON"), 5, rows=128, cols=128,
                                            seed=31))
    ui = bed.ui

    async def scenario() -> None:
        assert not ui.send_action.isEnabled()          # nothing selected yet
        await select_study(bed, study)
        assert ui.send_action.isEnabled() and not ui.retrieve_action.isEnabled()
        assert ui.send_button is not None and ui.send_button.isVisibleTo(bed.window)

        # First time: the user looks at the plan and declines.
        ui.send_button.click()
        await until(lambda: ui.controller.active_confirm is not None, what="the confirmation")
        dialog = ui.controller.active_confirm
        await until(lambda: dialog.plan is not None, what="the plan in the confirmation")
        assert dialog.instances.text() == "5"
        assert dialog.mode.text().startswith("plain")
        assert dialog.compression.text().startswith("HTTP gzip on downloads")   # plain mode
        # Every line is read in full: the dialog grew to the plan's texts (none clipped).
        await until(lambda: not clipped(dialog), what="the dialog to fit its plan")
        dialog.reject()
        await ui.controller.idle()
        assert bed.engine.jobs() == []

        # Second time: accepted, and "don't ask again" is remembered.
        ui.send_action.trigger()
        await until(lambda: ui.controller.active_confirm is not None, what="the confirmation")
        dialog = ui.controller.active_confirm
        dialog.dont_ask.setChecked(True)
        dialog.accept()
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS and report.verified == 5
        assert bed.config.ui["ConfirmTransfers"] is False

    bed.run(scenario())


def test_context_menu_send_to_peer(make_bed):
    bed = make_bed()
    study = bed.load_source(synth.ct_series(synth.make_study_spec(32, "CT MENU"), 3, rows=128, cols=128, seed=32))
    ui = bed.ui

    async def scenario() -> None:
        await select_study(bed, study)
        menu = QMenu()
        sub = ui.extend_context_menu(bed.left, menu)
        assert sub is not None and sub.title() == "Send to"
        actions = {a.text(): a for a in sub.actions()}
        assert list(actions) == ["Remote demo"]          # never the pane's own peer
        actions["Remote demo"].trigger()
        job = await bed.wait_for_job()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS and report.verified == 3
        assert report.target == "Remote demo"

    bed.run(scenario())
