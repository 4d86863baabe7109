"""Storage commitment of a finished job: a banner, the per-instance verdicts, exports."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QStandardPaths, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QMessageBox, QPushButton, QTableView, QVBoxLayout, QWidget)

from gui.engine.events import CommitmentReport, InstanceVerdict, JobState
from gui.ui.transfers.formatting import dicom_date, human_bytes, person_name

# The audit record's columns (CommitmentReport.audit_records): the instance by its
# SOP Instance UID, whose study it is, where it went, when, and the MD5 proof.
CSV_FIELDS = ("sop_instance_uid", "patient_name", "patient_id", "accession_number", "study_date",
              "study_description", "study_instance_uid", "series_number", "series_description", "modality",
              "series_instance_uid", "source", "target", "time", "orthanc_id", "size", "source_md5",
              "target_md5", "verified", "status", "reason")

BANNER_STYLES = {
    "ok": "background:#e3f4e4; color:#1b5e20; border:1px solid #66bb6a;",
    "bad": "background:#fde4e3; color:#b71c1c; border:1px solid #ef5350;",
    "neutral": "background:#fff3e0; color:#6d4c41; border:1px solid #ffb74d;",
    "waiting": "background:palette(base); color:palette(mid); border:1px dashed palette(mid);",
}


def banner_text(report: CommitmentReport) -> str:
    """The one line a user reads: '312 of 312 instances verified on Remote demo — MD5'."""
    counted = f"{report.verified} of {report.planned} instance{'s' if report.planned != 1 else ''} verified " \
              f"on {report.target} — MD5"
    if report.state == JobState.SUCCESS:
        extra = f" ({report.skipped} already there)" if report.skipped else ""
        return f"✔ {counted}{extra}"
    if report.state == JobState.CANCELED:
        return f"Canceled: nothing was kept on {report.target}" + (f" — {report.error}" if report.error else "")
    reason = f" Reason: {report.error}" if report.error else ""
    if not report.planned:
        return f"✖ Transfer failed before any instance was sent to {report.target}.{reason}"
    return f"✖ Transfer failed: {counted}." + reason


def banner_kind(report: CommitmentReport) -> str:
    if report.state == JobState.SUCCESS and report.verified == report.planned:
        return "ok"
    if report.state == JobState.CANCELED:
        return "neutral"
    return "bad"


def export_json(report: CommitmentReport, path: Path) -> None:
    data = report.to_json()
    data["records"] = report.audit_records()
    Path(path).write_text(json.dumps(data, indent=2), encoding="utf-8")


def export_csv(report: CommitmentReport, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for record in report.audit_records():
            record["verified"] = "yes" if record["verified"] else "no"
            writer.writerow(["" if record[k] is None else record[k] for k in CSV_FIELDS])


def utc_text(iso: str) -> str:
    """'2026-12-01T23:05:01+00:00' -> '2026-12-01 23:05:01' (the column says UTC)."""
    return iso.replace("T", " ")[:19] if iso else ""


class CommitmentModel(QAbstractTableModel):
    # The audit record's columns in the export's order: the instance, whose study it is,
    # where it went and when, then the MD5 proof.
    HEADERS = ("SOP Instance UID", "Patient", "Patient ID", "Accession", "Study date", "Study",
               "Series", "Modality", "Source", "Target", "Time (UTC)", "Size", "Source MD5", "Target MD5",
               "Verified", "Status", "Reason")
    SOURCE, TARGET, TIME = 8, 9, 10
    VERIFIED = 14
    REASON = 16

    def __init__(self, parent: Optional[Any] = None) -> None:
        super().__init__(parent)
        self._rows: List[InstanceVerdict] = []
        self._series: Dict[str, Dict[str, str]] = {}
        self._report: Optional[CommitmentReport] = None

    def set_report(self, report: Optional[CommitmentReport]) -> None:
        self.beginResetModel()
        # Problems first: they are what the user has to act on.
        self._rows = sorted(report.instances, key=lambda v: (v.verified, v.series_id, v.sop_instance_uid,
                                                             v.instance_id)) if report else []
        self._series = report.series if report else {}
        self._report = report
        self.endResetModel()

    def verdict(self, row: int) -> InstanceVerdict:
        return self._rows[row]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        v = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            t = self._series.get(v.series_id, {})
            series = " ".join(x for x in (t.get("SeriesNumber", ""), t.get("SeriesDescription", "")) if x)
            r = self._report
            # Names and dates as the panes show them; the export keeps the DICOM values.
            return (v.sop_instance_uid or v.instance_id, person_name(t.get("PatientName", "")),
                    t.get("PatientID", ""), t.get("AccessionNumber", ""), dicom_date(t.get("StudyDate", "")),
                    t.get("StudyDescription", ""),
                    series, t.get("Modality", ""), r.source if r else "", r.target if r else "",
                    utc_text(r.finished_at if r else ""), human_bytes(v.size), v.source_md5 or "–",
                    v.target_md5 or "–", "yes" if v.verified else "no", v.status, v.reason)[col]
        if role == Qt.ItemDataRole.ForegroundRole and col == self.VERIFIED:
            return QBrush(QColor("#2e7d32" if v.verified else "#c62828"))
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.REASON and v.reason:
                return v.reason
            if col == 0:
                return f"Orthanc ID {v.instance_id}"
            if col == self.TIME:
                return "When the storage commitment was made (the MD5s read back), in UTC"
        return None


class CommitmentView(QWidget):
    """Banner + verdict table + export buttons; hidden until a report exists."""

    exported = Signal(str)   # the path written

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.report: Optional[CommitmentReport] = None
        self.banner = QLabel()
        self.banner.setObjectName("commitmentBanner")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model = CommitmentModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setMinimumHeight(60)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for col, width in enumerate((280, 130, 90, 90, 80, 130, 140, 60, 100, 100, 150, 70, 262, 262, 60, 110)):
            self.table.setColumnWidth(col, width)
        #: What the report is about, for the export's file name (the job's description).
        self.subject = ""
        self.saved_label = QLabel()
        self.saved_label.setObjectName("exportSaved")
        self.saved_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.json_button = QPushButton("Export JSON…")
        self.csv_button = QPushButton("Export CSV…")
        self.json_button.clicked.connect(lambda: self._ask_export("json"))
        self.csv_button.clicked.connect(lambda: self._ask_export("csv"))

        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("Storage commitment: every instance's MD5 on the source and as stored "
                                 "on the target"))
        buttons.addStretch(1)
        buttons.addWidget(self.saved_label)
        buttons.addWidget(self.json_button)
        buttons.addWidget(self.csv_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        self.set_report(None)

    def set_report(self, report: Optional[CommitmentReport], subject: str = "") -> None:
        if report is not self.report:
            self.saved_label.setText("")
        self.report = report
        self.subject = subject
        self.model.set_report(report)
        if report is None:
            # Stays in place (empty) so the dock does not jump when a job ends.
            self.banner.setProperty("kind", "none")
            self.banner.setStyleSheet(f"QLabel {{ {BANNER_STYLES['waiting']} padding:8px; border-radius:4px; }}")
            self.banner.setText("The storage commitment (MD5 of every instance, read back from the target) "
                                "appears here when the selected transfer ends.")
            self.json_button.setEnabled(False)
            self.csv_button.setEnabled(False)
            return
        self.json_button.setEnabled(True)
        self.csv_button.setEnabled(True)
        kind = banner_kind(report)
        self.banner.setProperty("kind", kind)
        self.banner.setStyleSheet(f"QLabel {{ {BANNER_STYLES[kind]} padding:8px; font-weight:bold;"
                                  " font-size:14px; border-radius:4px; }")
        self.banner.setText(banner_text(report))

    @property
    def banner_kind(self) -> Optional[str]:
        return banner_kind(self.report) if self.report else None

    def export(self, path: Path, fmt: str) -> None:
        if self.report is None:
            raise ValueError("no storage commitment to export yet")
        (export_json if fmt == "json" else export_csv)(self.report, Path(path))
        self.saved_label.setText(f"Saved {Path(path).name}")
        self.saved_label.setToolTip(str(path))
        self.exported.emit(str(path))

    def default_export_path(self, fmt: str) -> Path:
        """Documents/<patient · accession · date>-commitment.<fmt>: a name that says which study."""
        folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation) \
            or str(Path.home())
        stem = re.sub(r"[^\w.-]+", "_", self.subject).strip("_.")[:120] if self.subject else ""
        if not stem and self.report is not None:
            stem = self.report.job_id[:8]
        return Path(folder) / f"{stem or 'transfer'}-commitment.{fmt}"

    def _ask_export(self, fmt: str) -> None:
        if self.report is None:
            return
        suggested = str(self.default_export_path(fmt))
        path, _ = QFileDialog.getSaveFileName(self, "Export storage commitment", suggested,
                                              "JSON (*.json)" if fmt == "json" else "CSV (*.csv)")
        if path:
            try:
                self.export(Path(path), fmt)
            except OSError as exc:
                QMessageBox.warning(self, "Export failed", f"Could not write {path}: {exc.strerror}")
