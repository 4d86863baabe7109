"""Uploading local files (dropped on a pane) through the plain path.

pydicom decides what is DICOM (header only, pixels are not read); anything
else is reported back with the reason. The DICOM files travel in ZIP
buckets exactly like plain mode, and are verified by comparing the MD5
computed here with the one the target stores.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple

from gui.engine.events import TransferMode
from gui.engine.plain_mode import PlainTransport
from gui.engine.transport_base import TransferContext, TransferFailed
from gui.protocol.wire import InstanceInfo

# Files larger than this are not considered (no DICOM upload should be 4 GB).
MAX_FILE_SIZE = 4 * 1024 ** 3


@dataclass
class LocalFile:
    path: Path
    info: InstanceInfo


def orthanc_instance_id(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The Orthanc ID an instance will get: SHA-1 of its four identifiers,
    written as five dash-separated groups of eight hex digits."""
    digest = hashlib.sha1("|".join((patient_id, study_uid, series_uid, sop_uid)).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def walk(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root, name)
        else:
            yield path


def inspect_file(path: Path) -> Tuple[InstanceInfo | None, str]:
    """The instance info of a DICOM file, or None and why it is skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if not path.is_file():
        return None, "not a regular file"
    if size == 0:
        return None, "empty file"
    if size > MAX_FILE_SIZE:
        return None, "larger than 4 GB"
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        return None, "not a DICOM file"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on garbage
        return None, f"not a readable DICOM file ({type(exc).__name__})"
    uids = [str(getattr(ds, key, "") or "") for key in
            ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(uids[1:]):
        return None, "DICOM file without Study/Series/SOP Instance UID"
    if str(getattr(ds, "SOPClassUID", "")) == "1.2.840.10008.1.3.10":
        return None, "DICOMDIR index file (its referenced files are uploaded instead)"
    md5 = hashlib.md5()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                md5.update(block)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    return InstanceInfo(orthanc_instance_id(*uids), size, md5.hexdigest()), ""


def scan_files(paths: Iterable[Path]) -> Tuple[List[LocalFile], List[Tuple[Path, str]]]:
    """Walk files and folders: the DICOM instances found and the skipped files with reasons.
    Blocking (reads headers and hashes files): run it in a thread."""
    found: Dict[str, LocalFile] = {}
    skipped: List[Tuple[Path, str]] = []
    for path in walk(paths):
        info, reason = inspect_file(path)
        if info is None:
            skipped.append((path, reason))
        elif info.id in found:
            skipped.append((path, f"same instance as {found[info.id].path}"))
        else:
            found[info.id] = LocalFile(path, info)
    return sorted(found.values(), key=lambda f: f.info.id), skipped


class LocalUploadTransport(PlainTransport):
    """Plain transport whose source is the local disk."""

    mode = TransferMode.UPLOAD

    def __init__(self, files: Dict[str, Path]) -> None:
        super().__init__()
        self.files = files

    async def read_instance(self, ctx: TransferContext, info: InstanceInfo) -> Tuple[bytes, int]:
        import asyncio
        path = self.files.get(info.id)
        if path is None:
            raise TransferFailed(f"no local file for instance {info.id}")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise TransferFailed(f"cannot read {path}: {exc.strerror or exc}", {info.id: str(exc)}) from None
        return data, 0

    def source_label(self, ctx: TransferContext) -> str:
        return "the local disk"
