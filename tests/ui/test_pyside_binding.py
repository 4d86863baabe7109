"""Guards against PySide6 6.12.0, whose bindings drop references to None and
True (the interpreter aborts after a few thousand calls); pyproject excludes it."""

from __future__ import annotations

import sys

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, Qt, Signal


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


class _Emitter(QObject):
    ping = Signal(str)


def test_emitting_many_signals_does_not_eat_references_to_true(qapp):
    emitter = _Emitter()
    received = []
    emitter.ping.connect(received.append)
    before = sys.getrefcount(True)
    for n in range(5000):
        emitter.ping.emit(str(n))
    assert len(received) == 5000
    assert sys.getrefcount(True) >= before - 50
