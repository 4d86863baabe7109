"""Paints one bucket as a small cell: a state-coloured frame filled to its progress.

No widget per bucket: the view asks this delegate to paint the visible cells
only, so the cost does not grow with the number of buckets.
"""

from __future__ import annotations

from typing import Dict

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from gui.ui.transfers.bucket_model import BucketModel, FractionRole, GroupRole, StateGroup, bucket_fraction

CELL_SIZE = 18
_SELECTED = QStyle.StateFlag.State_Selected

#: (fill, background) per visible state; also used by the legend.
STATE_COLOURS: Dict[str, tuple] = {
    StateGroup.QUEUED: ("#9e9e9e", "#eeeeee"),
    StateGroup.TRANSFERRING: ("#1e88e5", "#d6e9fb"),
    StateGroup.RETRYING: ("#fb8c00", "#fdebd3"),
    StateGroup.DONE: ("#43a047", "#dcefdc"),
    StateGroup.FAILED: ("#e53935", "#fbd9d8"),
    StateGroup.STOPPED: ("#757575", "#fafafa"),
}


def state_colour(group: str) -> QColor:
    return QColor(STATE_COLOURS[group][0])


class BucketDelegate(QStyledItemDelegate):
    def __init__(self, parent=None, cell_size: int = CELL_SIZE) -> None:
        super().__init__(parent)
        self.cell_size = cell_size
        # QColor construction per paint adds up with thousands of cells.
        self._fill = {k: QColor(v[0]) for k, v in STATE_COLOURS.items()}
        self._back = {k: QColor(v[1]) for k, v in STATE_COLOURS.items()}

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(self.cell_size, self.cell_size)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        model = index.model()
        if isinstance(model, BucketModel):
            # Straight from the model: no round trip through QVariant for every cell.
            bucket = model.bucket(index.row())
            group = model.group(index.row())
            fraction = bucket_fraction(bucket) if bucket and group != StateGroup.STOPPED else 0.0
        else:
            group = index.data(GroupRole) or StateGroup.QUEUED
            fraction = float(index.data(FractionRole) or 0.0)
        cell = QRect(option.rect).adjusted(1, 1, -2, -2)
        painter.save()
        painter.fillRect(cell, self._back[group])
        if group in (StateGroup.DONE, StateGroup.FAILED):
            fraction = 1.0
        if fraction > 0:
            # Fill bottom-up, like a small progress bar standing on its end.
            height = max(1, round(cell.height() * fraction))
            painter.fillRect(QRect(cell.left(), cell.bottom() - height + 1, cell.width(), height), self._fill[group])
        pen = QPen(self._fill[group])
        if option.state & _SELECTED:
            pen = QPen(option.palette.highlight().color(), 2)
        painter.setPen(pen)
        painter.drawRect(cell)
        painter.restore()
