"""Tells the user a job finished: a system tray message where there is a tray,
the main window's status bar otherwise (and always, so it stays visible)."""

from __future__ import annotations

from typing import List, Optional

from PySide6.QtWidgets import QApplication, QMainWindow, QStyle, QSystemTrayIcon

from gui.engine.events import CommitmentReport, JobState


def finished_message(report: CommitmentReport) -> tuple:
    """(title, text, ok) for a finished job."""
    where = f"{report.source} → {report.target}"
    if report.state == JobState.SUCCESS:
        return ("Transfer finished", f"{where}: {report.verified} of {report.planned} instances verified (MD5)", True)
    if report.state == JobState.CANCELED:
        return ("Transfer canceled", f"{where}: canceled, the target is unchanged", False)
    return ("Transfer failed", f"{where}: {report.error or 'see the storage commitment'}", False)


class Notifier:
    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        self.messages: List[str] = []   # what was said, newest last (tests, accessibility)
        self.tray: Optional[QSystemTrayIcon] = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            icon = window.windowIcon()
            if icon.isNull():
                icon = QApplication.style().standardIcon(QStyle.StandardPixmap.SP_ArrowUp)
            self.tray = QSystemTrayIcon(icon, window)
            self.tray.setToolTip("Orthanc Transfers")
            self.tray.show()

    def job_finished(self, report: CommitmentReport) -> None:
        title, text, ok = finished_message(report)
        self.say(title, text, ok)

    def say(self, title: str, text: str, ok: bool = True) -> None:
        self.messages.append(f"{title}: {text}")
        if self.tray is not None and self.tray.supportsMessages():
            icon = QSystemTrayIcon.MessageIcon.Information if ok else QSystemTrayIcon.MessageIcon.Warning
            self.tray.showMessage(title, text, icon, 8000)
        self.window.statusBar().showMessage(f"{title}: {text}", 15000)

    def close(self) -> None:
        if self.tray is not None:
            self.tray.hide()
            self.tray = None
