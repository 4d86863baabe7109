"""The server's storage limits: announced to senders, and checked before a commit.

Orthanc 1.10's ``MaximumStorageSize`` / ``MaximumPatientCount`` have no
"refuse" mode: when a new instance would pass a limit, Orthanc deletes
(recycles) the oldest unprotected patients to make room. Measured against
Orthanc 1.10.1 (tests/reliability/test_full_target.py):

- a transfer that fits once older patients are recycled succeeds, and the
  recycled patients are gone: the sender cannot undo that;
- a transfer that cannot fit even then recycles older patients while its
  first instances are stored, then fails with FullStorage ("Cannot recycle
  more patients") midway; rolling back the imported instances does not
  bring the recycled patients back. (The patient deleted in the very store
  that fails is restored by Orthanc's own database transaction; the ones
  deleted for earlier instances are not.)

So this module (a) answers ``GET /transfers/storage`` (this project's
extension, asked only of servers running this plugin) with the limits and
the current use, which lets the desktop warn before a transfer that would
recycle, and (b) refuses, before importing anything, a commit whose new
instances alone exceed ``MaximumStorageSize``: such a commit could only
delete other patients and then fail. A push request that asks to import as
it arrives is checked the same way when it is created, since its first
instances are imported long before the commit.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from .errors import FULL_STORAGE, PluginError

MB = 1024 * 1024


def _limit(configuration: Dict[str, Any], key: str) -> int:
    try:
        value = int(configuration.get(key, 0) or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, value)


class Capacity:
    def __init__(self, api: Any, configuration: Dict[str, Any]) -> None:
        self.api = api
        self.max_storage = _limit(configuration, "MaximumStorageSize") * MB   # 0: no limit
        self.max_patients = _limit(configuration, "MaximumPatientCount")       # 0: no limit
        # With compression Orthanc counts compressed bytes: our uncompressed
        # sizes would overstate what a transaction takes.
        self.compressed = bool(configuration.get("StorageCompression", False))

    def _statistics(self) -> Dict[str, Any]:
        try:
            answer = json.loads(self.api.RestApiGet("/statistics"))
        except (self.api.OrthancException, ValueError):
            return {}
        return answer if isinstance(answer, dict) else {}

    def status(self) -> Dict[str, Any]:
        """The answer to ``GET /transfers/storage`` (sizes as decimal strings, as in the protocol)."""
        stats = self._statistics()
        return {
            "MaximumStorageSize": str(self.max_storage),
            "MaximumPatientCount": self.max_patients,
            "StorageSize": str(int(stats.get("TotalDiskSize", 0) or 0)),
            "CountPatients": int(stats.get("CountPatients", 0) or 0),
            "StorageCompression": self.compressed,
            "Recycles": bool(self.max_storage or self.max_patients),
        }

    def check_commit(self, txn: Any, existing: Optional[Any] = None) -> None:
        """Refuse a transaction whose new instances alone exceed MaximumStorageSize.

        ``existing(instance_id) -> bool`` says whether an instance is already
        stored (it takes no room again)."""
        if not self.max_storage or self.compressed:
            return
        needed = 0
        for info in txn.instances:
            if existing is not None and existing(info.id):
                continue
            needed += info.size
        if needed > self.max_storage:
            raise PluginError(
                FULL_STORAGE,
                "the target is full: this transaction adds %.1f MB, more than the server's "
                "MaximumStorageSize of %d MB even with every other patient recycled; nothing was "
                "imported and no patient was deleted" % (needed / MB, self.max_storage // MB),
                http_status=507)
