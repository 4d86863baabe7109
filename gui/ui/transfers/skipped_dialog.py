"""Lists the dropped files that were not sent because they are not DICOM."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget


class SkippedFilesDialog(QDialog):
    def __init__(self, skipped: List[Tuple[Path, str]], imported: int, target: str,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("skippedFilesDialog")
        self.setWindowTitle("Some files were not sent")
        self.resize(640, 320)
        self.skipped = skipped
        sent = f"{imported} DICOM file{'s' if imported != 1 else ''} will be sent to {target}. " if imported else \
            f"Nothing was sent to {target}. "
        text = QLabel(f"{sent}These {len(skipped)} file{'s' if len(skipped) != 1 else ''} "
                      "were left out (never sent):")
        text.setWordWrap(True)
        self.list = QTreeWidget()
        self.list.setHeaderLabels(["File", "Why"])
        self.list.setRootIsDecorated(False)
        for path, reason in skipped:
            QTreeWidgetItem(self.list, [str(path), reason])
        self.list.resizeColumnToContents(0)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(self.list, 1)
        layout.addWidget(buttons)
