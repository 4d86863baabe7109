"""The confirmation says which way the bytes go."""

from __future__ import annotations

import pytest

from gui.engine.events import TransferMode
from gui.engine.transfer_engine import PlanSummary
from gui.ui.transfers.confirm_dialog import ConfirmDialog


@pytest.mark.parametrize("mode, path", [
    (TransferMode.DELEGATE, "source → target directly, nothing passes through this computer"),
    (TransferMode.PUSH, "source → this computer → target"),
    (TransferMode.PULL, "source → this computer → target"),
    (TransferMode.PLAIN, "source → this computer → target"),
])
def test_the_mode_line_names_the_path(qtbot, mode, path):
    dialog = ConfirmDialog("Hospital", "Archive", ["CT CHEST"])
    qtbot.addWidget(dialog)
    dialog.set_plan(PlanSummary(mode, "gzip", 3, 3000, 0, 1))
    assert path in dialog.mode.text()
    if mode is TransferMode.DELEGATE:
        assert "server to server" in dialog.mode.text()
