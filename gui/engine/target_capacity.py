"""Will a transfer make the target recycle (delete) other patients?

Orthanc's ``MaximumStorageSize`` / ``MaximumPatientCount`` have no "refuse"
mode: a full server deletes its oldest patients to make room, and no rollback
brings them back (docs/reliability.md, "A full target"). A stock Orthanc does
not tell its limits over REST, so nothing can be said about it. This
project's plugin answers ``GET /transfers/storage`` (limits and current use);
only a target detected as running it (flavour ``python``) is asked, and an
older version of it (404) means "unknown" as well.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient

log = logging.getLogger(__name__)

MB = 1024 * 1024
_PLURAL = {"Patient": "patients", "Study": "studies", "Series": "series", "Instance": "instances"}


@dataclass
class StorageStatus:
    max_storage: int          # bytes, 0 = no limit
    max_patients: int         # 0 = no limit
    storage_size: int         # bytes in use
    patients: int
    compressed: bool

    @classmethod
    def from_json(cls, data: object) -> Optional["StorageStatus"]:
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["MaximumStorageSize"]), int(data["MaximumPatientCount"]),
                       int(data["StorageSize"]), int(data["CountPatients"]),
                       bool(data.get("StorageCompression", False)))
        except (KeyError, TypeError, ValueError):
            return None


async def storage_status(target: OrthancClient) -> Optional[StorageStatus]:
    """The target's limits and use, or None when it cannot say (stock server,
    C++ plugin, older plugin, unreachable)."""
    try:
        if (await target.accelerator(cached=True)).flavour != "python":
            return None
        return StorageStatus.from_json(await target.transfers.storage())
    except OrthancError as exc:
        log.info("%s does not tell its storage limits (%s)", target.peer.name, exc)
        return None


async def _patients_of(source: OrthancClient, resources: Sequence[Dict[str, Any]]) -> List[str]:
    ids = set()
    for resource in resources:
        level, rid = resource.get("Level"), resource.get("ID")
        if level == "Patient":
            ids.add(rid)
        elif level in _PLURAL:
            answer = await source.get_json(f"/{_PLURAL[level]}/{rid}/patient")
            if isinstance(answer, dict) and answer.get("ID"):
                ids.add(answer["ID"])
    return sorted(i for i in ids if isinstance(i, str))


async def _absent(target: OrthancClient, patient_ids: Sequence[str]) -> List[str]:
    absent = []
    for pid in patient_ids:
        try:
            await target.get_json(f"/patients/{pid}")
        except OrthancError as exc:
            if exc.status != 404:
                raise
            absent.append(pid)
    return absent


async def recycling_warning(source: OrthancClient, target: OrthancClient, resources: Sequence[Dict[str, Any]],
                            bytes_to_send: int) -> Optional[str]:
    """A sentence to show before the transfer starts, or None (no limit, it
    fits, or the target cannot tell: then nothing is claimed)."""
    status = await storage_status(target)
    if status is None or not (status.max_storage or status.max_patients):
        return None
    name = target.peer.name
    try:
        # With StorageCompression Orthanc counts compressed bytes, which the
        # sizes here overstate: say nothing about size rather than guess.
        sized = bool(status.max_storage) and not status.compressed
        if sized and bytes_to_send > status.max_storage:
            return (f"{name} cannot hold this transfer: {bytes_to_send / MB:.1f} MB to send, its "
                    f"MaximumStorageSize is {status.max_storage // MB} MB. The commit will be refused "
                    "(the target is full).")
        problems = []
        if sized and status.storage_size + bytes_to_send > status.max_storage:
            problems.append(f"{status.storage_size / MB:.1f} MB used + {bytes_to_send / MB:.1f} MB "
                            f"to send > MaximumStorageSize {status.max_storage // MB} MB")
        if status.max_patients:
            new = await _absent(target, await _patients_of(source, resources)) if resources else []
            if new and status.patients + len(new) > status.max_patients:
                problems.append(f"{status.patients} patient(s) + {len(new)} new > MaximumPatientCount "
                                f"{status.max_patients}")
    except OrthancError as exc:
        log.info("cannot tell whether %s would recycle patients (%s)", name, exc)
        return None
    if not problems:
        return None
    return (f"{name} is nearly full ({'; '.join(problems)}): Orthanc will delete its oldest "
            "patients to make room, and they cannot be brought back even if the transfer fails.")
