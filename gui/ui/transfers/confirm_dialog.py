"""Asks before a transfer starts: what will move, how, and how much."""

from __future__ import annotations

from typing import List, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QVBoxLayout,
                               QWidget)

from gui.ui.transfers.formatting import compression_summary, human_bytes

# Each says which way the bytes go: through this computer, or server to server.
MODE_TEXT = {
    "push": "accelerated push (the target has the accelerator): source → this computer → target",
    "pull": "accelerated pull (the source has the accelerator): source → this computer → target",
    "plain": "plain REST (stock Orthanc on both sides): source → this computer → target",
    "delegate": "server to server (the source's transfers plugin sends): source → target directly, "
                "nothing passes through this computer",
    "upload": "upload of local files: this computer → target",
}

_MAX_LISTED = 8


class ConfirmDialog(QDialog):
    """Shown at once with the items; counts, size and mode fill in when the plan is known."""

    def __init__(self, source: str, target: str, labels: List[str], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("confirmTransferDialog")
        self.setWindowTitle("Start transfer")
        self.setMinimumWidth(560)
        self.plan = None
        shown = labels[:_MAX_LISTED]
        more = f"<br>… and {len(labels) - _MAX_LISTED} more" if len(labels) > _MAX_LISTED else ""
        heading = QLabel(f"<b>Send {len(labels)} item{'s' if len(labels) != 1 else ''} "
                         f"from {_esc(source)} to {_esc(target)}?</b>")
        items = QLabel("<br>".join(_esc(x) for x in shown) + more)
        items.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        items.setWordWrap(True)
        self.instances = QLabel("counting…")
        self.size = QLabel("counting…")
        self.mode = QLabel("deciding…")
        self.compression = QLabel("–")
        self.present = QLabel("–")
        # The plan's sentences are longer than "counting…": they wrap, and the dialog grows
        # to them once known (_fit).
        for label in (self.mode, self.compression):
            label.setWordWrap(True)
        # A failed plan says why in full, on as many lines as it needs.
        self.error = QLabel()
        self.error.setObjectName("planError")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.setStyleSheet("color:#c62828;")
        self.error.hide()
        form = QFormLayout()
        form.addRow("Items:", items)
        form.addRow("Instances:", self.instances)
        form.addRow("Size:", self.size)
        form.addRow("Already on the target:", self.present)
        form.addRow("Mode:", self.mode)
        form.addRow("Compression:", self.compression)
        self.dont_ask = QCheckBox("Don't ask again (can be turned back on in Settings)")
        self.buttons = QDialogButtonBox()
        self.start_button = self.buttons.addButton("Start transfer", QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addLayout(form)
        # Filled in when the plan warns (e.g. the target would recycle patients).
        self.warning = QLabel("")
        self.warning.setObjectName("confirmWarning")
        self.warning.setWordWrap(True)
        self.warning.setVisible(False)
        layout.addWidget(self.warning)
        layout.addWidget(self.error)
        layout.addWidget(self.dont_ask)
        layout.addWidget(self.buttons)

    def set_plan(self, plan: object) -> None:
        """Fill in a ``PlanSummary`` from the engine."""
        self.plan = plan
        self.instances.setText(f"{plan.instances}")                          # type: ignore[attr-defined]
        self.size.setText(f"{human_bytes(plan.bytes)} in {plan.buckets} bucket"  # type: ignore[attr-defined]
                          f"{'s' if plan.buckets != 1 else ''}")              # type: ignore[attr-defined]
        self.present.setText(f"{plan.already_present} instance"              # type: ignore[attr-defined]
                             f"{'s' if plan.already_present != 1 else ''} (skipped)")  # type: ignore[attr-defined]
        mode = getattr(plan.mode, "value", str(plan.mode))                    # type: ignore[attr-defined]
        self.mode.setText(MODE_TEXT.get(mode, mode))
        self.compression.setText(compression_summary(mode, str(plan.compression)))  # type: ignore[attr-defined]
        warnings = list(getattr(plan, "warnings", None) or [])
        if warnings:
            self.warning.setText("<span style='color:#c62828'><b>Warning:</b> "
                                 + "<br>".join(_esc(w) for w in warnings) + "</span>")
            self.warning.setVisible(True)
        self._fit()

    def _fit(self) -> None:
        """Grow to the texts now shown: a dialog already open keeps its size otherwise, and the
        wrapped lines are cut (a top-level layout does not ask for its height at its width)."""
        layout = self.layout()
        layout.activate()
        width = max(self.width(), self.minimumWidth())
        height = layout.totalHeightForWidth(width) if layout.hasHeightForWidth() else layout.sizeHint().height()
        if height > self.height():
            self.resize(width, height)

    def accept(self) -> None:
        # Enter or a stray accept cannot start what could not be planned.
        if self.start_button.isEnabled():
            super().accept()

    def set_plan_error(self, message: str) -> None:
        """The plan failed (a dead peer...): nothing can start; say why in full."""
        for label in (self.instances, self.size, self.present, self.mode, self.compression):
            label.setText("unknown")
        self.error.setText(message)
        self.error.show()
        self.start_button.setEnabled(False)
        self.start_button.setDefault(False)
        self.cancel_button.setDefault(True)
        self.cancel_button.setFocus()
        self._fit()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
