"""The drag payload for Orthanc resources moved between panes.

Both sides of a drag use this module: the study tree model encodes the
selection, the transfers UI decodes it on drop. The payload is JSON::

    {"peer": "<peer name>",
     "resources": [{"Level": "Patient"|"Study"|"Series", "ID": "<orthanc id>"}, ...],
     "labels": ["<human readable label>", ...]}

``labels`` has one entry per resource, in the same order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from PySide6.QtCore import QMimeData

MIME_TYPE = "application/x-orthanc-transfers-resources"
LEVELS = ("Patient", "Study", "Series", "Instance")


@dataclass
class ResourceDrag:
    """Decoded payload: which peer the resources come from, and which ones."""

    peer: str
    resources: List[Dict[str, str]]
    labels: List[str] = field(default_factory=list)


def encode_payload(peer: str, resources: Sequence[Dict[str, str]],
                   labels: Optional[Sequence[str]] = None) -> bytes:
    items = [{"Level": r["Level"], "ID": r["ID"]} for r in resources]
    names = list(labels) if labels is not None else [f"{r['Level']} {r['ID']}" for r in items]
    return json.dumps({"peer": peer, "resources": items, "labels": names}).encode("utf-8")


def decode_payload(data: bytes) -> ResourceDrag:
    """Parse a payload; ValueError says what is wrong with it."""
    try:
        value: Any = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"drag payload is not JSON: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("peer"), str):
        raise ValueError("drag payload has no peer name")
    resources = value.get("resources")
    if not isinstance(resources, list) or not resources:
        raise ValueError("drag payload lists no resources")
    clean: List[Dict[str, str]] = []
    for item in resources:
        if not (isinstance(item, dict) and item.get("Level") in LEVELS
                and isinstance(item.get("ID"), str) and item["ID"]):
            raise ValueError(f"drag payload has a malformed resource: {item!r}")
        clean.append({"Level": item["Level"], "ID": item["ID"]})
    labels = value.get("labels")
    if not isinstance(labels, list) or len(labels) != len(clean):
        labels = [f"{r['Level']} {r['ID']}" for r in clean]
    return ResourceDrag(value["peer"], clean, [str(x) for x in labels])


def to_mime_data(peer: str, resources: Sequence[Dict[str, str]],
                 labels: Optional[Sequence[str]] = None) -> QMimeData:
    mime = QMimeData()
    mime.setData(MIME_TYPE, encode_payload(peer, resources, labels))
    # A text form too, so dropping on a text editor shows something sensible.
    names = list(labels) if labels is not None else [r["ID"] for r in resources]
    mime.setText("\n".join(names))
    return mime


def from_mime_data(mime: Optional[QMimeData]) -> Optional[ResourceDrag]:
    """The payload of a drag, or None when it carries no (valid) resources."""
    if mime is None or not mime.hasFormat(MIME_TYPE):
        return None
    try:
        return decode_payload(bytes(mime.data(MIME_TYPE).data()))
    except ValueError:
        return None
