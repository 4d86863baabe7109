"""Building push transactions from DICOM files, as a sender would, for the tests.

The Orthanc ID of an instance is computed the way Orthanc does (SHA-1 of
PatientID|StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID), so a push can
be prepared without any server; the tests check that Orthanc agrees.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import httpx
import pydicom

from gui.protocol import wire

FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what the C++ sender sends


def orthanc_instance_id(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    key = "|".join([ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID])
    digest = hashlib.sha1(key.encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def info_of(data: bytes, instance_id: Optional[str] = None) -> wire.InstanceInfo:
    return wire.InstanceInfo(instance_id or orthanc_instance_id(data), len(data), hashlib.md5(data).hexdigest())


@dataclass
class PushPlan:
    """A push request and the bodies of its buckets, ready to send."""

    infos: List[wire.InstanceInfo]
    buckets: List[wire.Bucket]
    files: Dict[str, bytes]
    compression: str = "none"
    asynchronous: bool = False
    bodies: List[bytes] = field(default_factory=list)

    @property
    def request(self) -> dict:
        return wire.build_push_request(self.infos, self.buckets, self.compression, self.asynchronous)

    def raw_bucket(self, index: int) -> bytes:
        return b"".join(self.files[c.instance_id][c.offset:c.offset + c.size] for c in self.buckets[index].chunks)

    def ids(self) -> List[str]:
        return [i.id for i in self.infos]


def plan_push(files: Sequence[bytes], bucket_size: int, compression: str = "none",
              asynchronous: bool = False, overrides: Optional[Dict[str, bytes]] = None) -> PushPlan:
    """Plan buckets for ``files``; ``overrides`` maps an ID to bytes to announce
    under that ID (e.g. a non-DICOM file that sorts last)."""
    files_by_id = {orthanc_instance_id(f): f for f in files}
    files_by_id.update(overrides or {})
    infos = sorted((info_of(data, iid) for iid, data in files_by_id.items()), key=lambda i: i.id)
    buckets = wire.plan_buckets(infos, bucket_size)
    plan = PushPlan(infos, buckets, files_by_id, compression, asynchronous)
    for index in range(len(buckets)):
        raw = plan.raw_bucket(index)
        plan.bodies.append(gzip.compress(raw) if compression == "gzip" else raw)
    return plan


class PluginHttp:
    """A small synchronous client for one server; every call returns the httpx.Response."""

    def __init__(self, server, timeout: float = 60.0) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, auth=server.auth, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def post_json(self, path: str, body) -> httpx.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client.post(path, content=data, headers=FORM)

    def create(self, plan: PushPlan) -> str:
        answer = self.post_json(wire.URI_PUSH, plan.request)
        assert answer.status_code == 200, answer.text
        return answer.json()["ID"]

    def put(self, tid: str, index: int, body: bytes) -> httpx.Response:
        return self.client.put(f"{wire.URI_PUSH}/{tid}/{index}", content=body, headers=FORM)

    def commit(self, tid: str) -> httpx.Response:
        return self.client.post(wire.commit_uri(tid), content=b"", headers=FORM)

    def send_all(self, plan: PushPlan) -> str:
        tid = self.create(plan)
        for index, body in enumerate(plan.bodies):
            answer = self.put(tid, index, body)
            assert answer.status_code == 200, answer.text
        return tid

    def instance_ids(self) -> List[str]:
        return self.client.get("/instances").json()


def assert_orthanc_error(answer: httpx.Response, status: int, orthanc_status: Optional[int] = None,
                         details: Optional[str] = None) -> dict:
    """The answer is an Orthanc-style error with the given codes; returns its body."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    body = answer.json()
    for key, kind in [("HttpError", str), ("HttpStatus", int), ("Message", str), ("Method", str),
                      ("OrthancError", str), ("OrthancStatus", int), ("Uri", str), ("Details", str)]:
        assert isinstance(body.get(key), kind), (key, body)
    assert body["HttpStatus"] == status
    if orthanc_status is not None:
        assert body["OrthancStatus"] == orthanc_status, body
    if details is not None:
        assert details in body["Details"], body["Details"]
    return body
