"""The DICOM identity of a job's instances, for the storage commitment as an audit record.

An auditor names an instance by its SOP Instance UID and wants to see whose
study it was. Orthanc's listings already carry it: for a patient or a study,
one ``/{level}/{id}/series`` (the series and their tags), then one
``/series/{id}/instances`` per series (SOP Instance UID of every instance);
one ``/series/{id}`` for a series asked alone, and one ``/studies/{id}`` per
study. The count of requests grows with series, never with instances, no
answer lists a whole patient's instances at once, and the job runs them
beside the transfer, not before it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from gui.client.orthanc_client import LEVEL_PATHS, OrthancClient
from gui.engine.planner import check_resources, gather_bounded
from gui.protocol import wire

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
    series_objs: Dict[str, Dict[str, Any]] = {}
    parts: List[Dict[str, Any]] = []
    for resource in check_resources(resources):
        if resource["Level"] in ("Patient", "Study"):
            # Listed whole by the planning already (its instances' UIDs and
            # series): only the series' tags are asked. Listing them again cost
            # the source 50-90 ms of CPU per 300 instances, during the transfer.
            kept = source.take_listing(resource["Level"], resource["ID"])
            for instance_id, sop, series in kept or ():
                out.instances[instance_id] = (sop, series)
            # Else series by series: a 20,000-instance patient listed at once is a
            # 12 MB answer, ~40 MB once parsed, held beside the transfer's buffers.
            path = f"/{LEVEL_PATHS[resource['Level']]}/{wire.check_orthanc_id(resource['ID'])}/series"
            items = await source.get_json(path)
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("ID"), str):
                    series_objs[item["ID"]] = item   # carries the series' tags: no GET of its own
                    if kept is None:
                        parts.append({"Level": "Series", "ID": item["ID"]})
        else:
            parts.append(resource)

    async def listing(part: Dict[str, Any]) -> None:
        kept = source.take_listing(part["Level"], part["ID"])   # listed by the planning already
        if kept is not None:
            for instance_id, sop, series in kept:
                out.instances[instance_id] = (sop, series)
            return
        for item in await source.instances_of(part["Level"], part["ID"]):
            sop = _tags(item, "MainDicomTags").get("SOPInstanceUID", "")
            out.instances[str(item["ID"])] = (sop, str(item.get("ParentSeries", "")))

    await gather_bounded(parts, listing, concurrency)
    series_ids = sorted({s for _, s in out.instances.values() if s})
    missing = [s for s in series_ids if s not in series_objs]
    for sid, obj in zip(missing, await gather_bounded(missing, lambda s: source.resource("Series", s),
                                                      concurrency)):
        series_objs[sid] = obj
    study_of: Dict[str, str] = {}
    for sid in series_ids:
        obj = series_objs[sid]
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

