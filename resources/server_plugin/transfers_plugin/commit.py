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

from .errors import (BAD_SEQUENCE_OF_CALLS, CORRUPTED_FILE, PluginError,
                     orthanc_error_kind)

READ_BLOCK = 1 << 20


def _file_md5_and_size(path: str) -> Tuple[str, int]:
    digest = hashlib.md5()
    size = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(READ_BLOCK)
            if not block:
                break
            size += len(block)
            digest.update(block)
    return digest.hexdigest(), size


def verify(txn: Any) -> None:
    """Raise a PluginError naming every instance that is incomplete or corrupted."""
    problems: List[Dict[str, str]] = []
    corrupted = False
    for info in txn.instances:
        missing = txn.missing_buckets(info.id)
        if missing:
            shown = ", ".join(str(b) for b in missing[:10]) + (" ..." if len(missing) > 10 else "")
            problems.append({"ID": info.id, "Problem": "bucket(s) %s not received" % shown})
            continue
        if info.size == 0:
            actual_md5, actual_size = hashlib.md5(b"").hexdigest(), 0
        else:
            try:
                actual_md5, actual_size = _file_md5_and_size(txn.staged_path(info.id))
            except OSError as exc:
                problems.append({"ID": info.id, "Problem": "staged file unreadable: %s" % exc.strerror})
                continue
        if actual_size != info.size:
            problems.append({"ID": info.id, "Problem": "%d bytes staged, %d announced" % (actual_size, info.size)})
            corrupted = True
        elif actual_md5 != info.md5:
            problems.append({"ID": info.id, "Problem": "MD5 %s, %s announced" % (actual_md5, info.md5)})
            corrupted = True
    if not problems:
        return
    names = ", ".join(p["ID"] for p in problems[:5]) + (" ..." if len(problems) > 5 else "")
    if corrupted:
        raise PluginError(CORRUPTED_FILE, "commit refused, nothing imported: %d instance(s) do not match their"
                          " size or MD5: %s" % (len(problems), names), instances=problems)
    raise PluginError(BAD_SEQUENCE_OF_CALLS, "commit refused, nothing imported: %d instance(s) incomplete: %s"
                      % (len(problems), names), instances=problems)


class Importer:
    """Imports staged files into Orthanc, undoing its own work on failure."""

    def __init__(self, api: Any, log_warning=None) -> None:
        self.api = api
        self.log_warning = log_warning or (lambda text: None)

    def _exists(self, instance_id: str) -> bool:
        try:
            self.api.RestApiGet("/instances/%s" % instance_id)
            return True
        except self.api.OrthancException:
            return False

    def import_all(self, txn: Any) -> int:
        created: List[str] = []
        for info in txn.instances:
            existed = self._exists(info.id)
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
            real_id = answer.get("ID", info.id) if isinstance(answer, dict) else info.id
            if not existed and answer.get("Status") != "AlreadyStored":
                created.append(real_id)
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
