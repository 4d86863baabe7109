"""The DICOM identity of a job's instances, for the storage commitment as an audit record.

An auditor names an instance by its SOP Instance UID and wants to see whose
study it was. Orthanc's listings already carry it: one ``/{level}/{id}/instances``
per resource of the job (SOP Instance UID and parent series of every instance),
then one ``/series/{id}`` per series and one ``/studies/{id}`` per study. The
count of requests grows with series, never with instances, and the job runs
them beside the transfer, not before it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

from gui.client.orthanc_client import OrthancClient
from gui.engine.planner import check_resources, gather_bounded

# What the audit record shows of each series (all of its study and patient too).
SERIES_FIELDS = ("PatientName", "PatientID", "AccessionNumber", "StudyDate", "StudyDescription",
                 "StudyInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "SeriesInstanceUID")


@dataclass
class Identity:
    # Orthanc instance ID -> (SOP Instance UID, Orthanc series ID)
    instances: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    # Orthanc series ID -> SERIES_FIELDS
    series: Dict[str, Dict[str, str]] = field(default_factory=dict)


def _tags(obj: Any, key: str) -> Dict[str, str]:
    tags = obj.get(key) if isinstance(obj, dict) else None
    return {k: str(v) for k, v in tags.items() if isinstance(v, (str, int))} if isinstance(tags, dict) else {}


async def identify(source: OrthancClient, resources: Sequence[Dict[str, Any]], *,
                   concurrency: int = 4) -> Identity:
    """Identity of every instance below ``resources`` on ``source``."""
    out = Identity()
    listings = await gather_bounded(check_resources(resources),
                                    lambda r: source.instances_of(r["Level"], r["ID"]), concurrency)
    for items in listings:
        for item in items:
            sop = _tags(item, "MainDicomTags").get("SOPInstanceUID", "")
            out.instances[str(item["ID"])] = (sop, str(item.get("ParentSeries", "")))
    series_ids = sorted({s for _, s in out.instances.values() if s})
    series_objs = await gather_bounded(series_ids, lambda s: source.resource("Series", s), concurrency)
    study_of: Dict[str, str] = {}
    for sid, obj in zip(series_ids, series_objs):
        out.series[sid] = _tags(obj, "MainDicomTags")
        study_of[sid] = str(obj.get("ParentStudy", ""))
    study_ids = sorted({s for s in study_of.values() if s})
    study_objs = await gather_bounded(study_ids, lambda s: source.resource("Study", s), concurrency)
    studies = {stid: {**_tags(obj, "PatientMainDicomTags"), **_tags(obj, "MainDicomTags")}
               for stid, obj in zip(study_ids, study_objs)}
    for sid, tags in out.series.items():
        merged = {**studies.get(study_of[sid], {}), **tags}
        out.series[sid] = {k: merged.get(k, "") for k in SERIES_FIELDS}
    return out


async def identify_quietly(source: OrthancClient, resources: Sequence[Dict[str, Any]],
                           concurrency: int = 4) -> Identity:
    """As ``identify``; a source that cannot answer leaves the record without names
    (the MD5 proof stands without them) instead of failing the job."""
    try:
        return await identify(source, resources, concurrency=concurrency)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - identification is best effort
        return Identity()

