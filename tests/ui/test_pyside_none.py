"""Guard against the PySide6 release that over-releases None from data()."""

from __future__ import annotations

import sys

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt


class _NoneModel(QAbstractListModel):
    def rowCount(self, parent=QModelIndex()):  # noqa: N802 - Qt's naming
        return 1

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        return None


def test_models_returning_none_do_not_leak_references_to_none(qapp):
    """Every view asks data() for roles a model does not serve; with the broken
    binding each such call drops a reference to None and the process aborts."""
    model = _NoneModel()
    index = model.index(0, 0)
    before = sys.getrefcount(None)
    for _ in range(2000):
        index.data(Qt.ItemDataRole.ToolTipRole)
    assert sys.getrefcount(None) >= before - 50
