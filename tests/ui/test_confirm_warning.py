"""The confirmation shows the plan's warnings (e.g. a target that would
recycle patients, docs/reliability.md "A full target"), and none otherwise."""

from __future__ import annotations

from gui.engine.events import TransferMode
from gui.engine.transfer_engine import PlanSummary
from gui.ui.transfers.confirm_dialog import ConfirmDialog


def test_a_recycling_warning_is_shown_before_the_transfer(qtbot):
    dialog = ConfirmDialog("Hospital", "Archive", ["CT CHEST"])
    qtbot.addWidget(dialog)
    text = "Archive is nearly full (1 patient(s) + 1 new > MaximumPatientCount 1): Orthanc will delete"
    dialog.set_plan(PlanSummary(TransferMode.PUSH, "gzip", 3, 3000, 0, 1, [text]))
    assert not dialog.warning.isHidden()
    assert "MaximumPatientCount 1" in dialog.warning.text()


def test_no_warning_no_label(qtbot):
    dialog = ConfirmDialog("Hospital", "Archive", ["CT CHEST"])
    qtbot.addWidget(dialog)
    dialog.set_plan(PlanSummary(TransferMode.PLAIN, "none", 3, 3000, 0, 1))
    assert dialog.warning.isHidden()
