"""Commit of a push transaction: all instances or none.

1. Verify: every instance must be complete (all its buckets received), of
   the announced size, with the announced MD5. Any problem: nothing is
   imported and the error lists every bad instance.
2. Import in ID order through Orthanc's own ``POST /instances`` so that
   Orthanc indexes, runs Lua/plugins and stores as usual.
3. If an import fails (Orthanc refuses a file, the disk fills up), delete
   again the instances this commit created, leaving the server as it was.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Tuple

from .errors import (BAD_FILE_FORMAT, BAD_SEQUENCE_OF_CALLS, CORRUPTED_FILE, PluginError,
                     orthanc_error_kind)

READ_BLOCK = 1 << 20


# POST /instances also accepts ZIP archives and imports every file inside:
# an "instance" that is a ZIP would slip instances past the checks.
ZIP_MAGIC = b"PK\x03\x04"


def _file_md5_size_head(path: str) -> Tuple[str, int, bytes]:
    digest = hashlib.md5()
    size = 0
    head = b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(READ_BLOCK)
            if not block:
                break
            if not size:
                head = block[:4]
            size += len(block)
            digest.update(block)
    return digest.hexdigest(), size, head


def verify(txn: Any) -> None:
    """Raise a PluginError naming every instance that is incomplete or corrupted."""
    problems: List[Dict[str, str]] = []
    corrupted = archive = False
    for info in txn.instances:
        missing = txn.missing_buckets(info.id)
        if missing:
            shown = ", ".join(str(b) for b in missing[:10]) + (" ..." if len(missing) > 10 else "")
            problems.append({"ID": info.id, "Problem": "bucket(s) %s not received" % shown})
            continue
        known = txn.digests.get(info.id)
        if info.size == 0:
            actual_md5, actual_size, head = hashlib.md5(b"").hexdigest(), 0, b""
        elif known is not None:
            actual_md5, actual_size, head = known  # hashed when its bucket was written
        else:
            try:
                actual_md5, actual_size, head = _file_md5_size_head(txn.staged_path(info.id))
            except OSError as exc:
                problems.append({"ID": info.id, "Problem": "staged file unreadable: %s" % exc.strerror})
                continue
        if actual_size != info.size:
            problems.append({"ID": info.id, "Problem": "%d bytes staged, %d announced" % (actual_size, info.size)})
            corrupted = True
        elif actual_md5 != info.md5:
            problems.append({"ID": info.id, "Problem": "MD5 %s, %s announced" % (actual_md5, info.md5)})
            corrupted = True
        elif head == ZIP_MAGIC:
            problems.append({"ID": info.id, "Problem": "a ZIP archive, not a DICOM file"})
            archive = True
    if not problems:
        return
    names = ", ".join(p["ID"] for p in problems[:5]) + (" ..." if len(problems) > 5 else "")
    if corrupted:
        raise PluginError(CORRUPTED_FILE, "commit refused, nothing imported: %d instance(s) do not match their"
                          " size or MD5: %s" % (len(problems), names), instances=problems)
    if archive:
        raise PluginError(BAD_FILE_FORMAT, "commit refused, nothing imported: %d instance(s) are not DICOM"
                          " files: %s" % (len(problems), names), instances=problems)
    raise PluginError(BAD_SEQUENCE_OF_CALLS, "commit refused, nothing imported: %d instance(s) incomplete: %s"
                      % (len(problems), names), instances=problems)


class Importer:
    """Imports staged files into Orthanc, undoing its own work on failure."""

    def __init__(self, api: Any, log_warning=None, overwrite_instances: bool = False) -> None:
        self.api = api
        self.log_warning = log_warning or (lambda text: None)
        # Without Orthanc's "OverwriteInstances", POST /instances answers
        # "AlreadyStored" for an instance that was there before, which is all
        # the rollback needs to know. With it, a replaced instance answers
        # "Success" too, so its presence must be asked first (one more
        # request per instance, about a third of the import's time).
        self.ask_existing = overwrite_instances

    def _exists(self, instance_id: str) -> bool:
        try:
            self.api.RestApiGet("/instances/%s" % instance_id)
            return True
        except self.api.OrthancException:
            return False

    def import_all(self, txn: Any) -> int:
        created: List[str] = []
        for info in txn.instances:
            existed = self.ask_existing and self._exists(info.id)
            try:
                if info.size == 0:
                    raise PluginError(CORRUPTED_FILE, "instance %s is empty, which is no DICOM file" % info.id)
                with open(txn.staged_path(info.id), "rb") as handle:
                    data = handle.read()
                answer = json.loads(self.api.RestApiPost("/instances", data))
                data = None
            except self.api.OrthancException as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
                text = exc.args[1] if len(exc.args) > 1 else str(exc)
                self._roll_back(created)
                raise PluginError(orthanc_error_kind(int(code)),
                                  "commit failed: Orthanc refused instance %s (%s); the %d instance(s) this commit"
                                  " had imported were removed again" % (info.id, text, len(created)),
                                  instances=[{"ID": info.id, "Problem": str(text)}])
            except (OSError, ValueError, PluginError) as exc:
                self._roll_back(created)
                detail = getattr(exc, "details", None) or str(exc)
                raise PluginError(orthanc_error_kind(-1),
                                  "commit failed at instance %s (%s); the %d instance(s) this commit had imported"
                                  " were removed again" % (info.id, detail, len(created)),
                                  instances=[{"ID": info.id, "Problem": detail}])
            if not isinstance(answer, dict):  # cannot happen once ZIPs are refused; never import blindly
                self._roll_back(created)
                raise PluginError(BAD_FILE_FORMAT, "commit failed: instance %s was not imported as one DICOM"
                                  " file" % info.id, instances=[{"ID": info.id, "Problem": "not one DICOM file"}])
            if not existed and answer.get("Status") != "AlreadyStored":
                created.append(answer.get("ID", info.id))
        return len(txn.instances)

    def _roll_back(self, created: List[str]) -> None:
        for instance_id in reversed(created):
            try:
                self.api.RestApiDelete("/instances/%s" % instance_id)
            except self.api.OrthancException as exc:
                self.log_warning("transfers: could not remove instance %s while undoing a failed commit: %s"
                                 % (instance_id, exc))


def commit(store: Any, importer: Importer, txn: Any) -> None:
    """Verify then import; the transaction is gone after success, kept after failure."""
    store.begin_commit(txn)
    finish_commit(store, importer, txn)


def finish_commit(store: Any, importer: Importer, txn: Any) -> None:
    """The work of a commit once :meth:`TransactionStore.begin_commit` was called."""
    success = False
    try:
        verify_and_import(importer, txn)
        success = True
    finally:
        store.end_commit(txn, success)


def verify_and_import(importer: Importer, txn: Any) -> None:
    verify(txn)
    importer.import_all(txn)
