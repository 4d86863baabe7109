"""20,000 instances: the engine plans them with a small bucket size, and the servers take the plan.

The first test needs no data: it checks the bucket planner and the plugin's
push request on 20,000 made-up instances. The second stores a real patient
of 20,000 small instances (five studies) on a plugin server and runs the
engine's own planning on it, as a job does: the source's listing and
lookup, what the target holds, the bucket plan for push and for pull. The
target's plugin then accepts the push transaction of that plan, and the
source answers the pull plan's chunk URLs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Iterator, List, Tuple

import pydicom
import pytest

from gui.client.peer import Peer
from gui.config.settings import TransferOptions
from gui.engine import TransferEngine
from gui.engine.events import TransferMode
from gui.protocol import wire
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess
from tests.server.push_helpers import FORM

COUNT = 20_000
BUCKET = 64 * 1024  # small: several hundred buckets
STUDIES = 5
SMALL_BUCKET_KB = 16  # the smallest BucketSize the options accept


def _infos(count: int):
    out = []
    for n in range(count):
        digest = hashlib.sha1(b"instance %d" % n).hexdigest()
        iid = "-".join(digest[i:i + 8] for i in range(0, 40, 8))
        out.append(wire.InstanceInfo(iid, 6000 + n % 4000, hashlib.md5(b"%d" % n).hexdigest()))
    return sorted(out, key=lambda i: i.id)


def test_twenty_thousand_instances_plan_for_push_and_pull_and_the_plugin_accepts_them(http, plugin_server):
    infos = _infos(COUNT)
    buckets = wire.plan_buckets(infos, BUCKET)
    covered = sorted(c.instance_id for b in buckets for c in b.chunks)
    assert covered == [i.id for i in infos] and len(buckets) > 1000

    base = "http://orthanc.example:8042"
    pulled = wire.plan_buckets(infos, BUCKET, pull_base_url=base, compression=wire.CODEC_SPLIT16)
    assert sorted(c.instance_id for b in pulled for c in b.chunks) == covered
    assert max(len(base + wire.chunks_uri(b, wire.CODEC_SPLIT16)) for b in pulled) < 2000

    answer = http.post_json(wire.URI_PUSH, wire.build_push_request(infos, buckets, "gzip",
                                                                   codec=wire.CODEC_SPLIT16))
    assert answer.status_code == 200, answer.text
    tid = answer.json()["ID"]
    assert http.client.delete(f"{wire.URI_PUSH}/{tid}", headers=FORM).status_code == 200


def _patient_files() -> Iterator[bytes]:
    """One patient, STUDIES studies of four series, COUNT instances of about 700 bytes.

    One file per series is written by the generator; its instances are that
    file with another SOP Instance UID of the same length (in the file meta
    and the dataset), which is 20 times faster than writing each one."""
    spec = synth.make_study_spec(7204, "SCALE TEST")
    series = STUDIES * 4
    per_series = COUNT // series
    for n in range(series):
        study = n % STUDIES
        study_spec = spec if study == 0 else dataclasses.replace(
            synth.make_study_spec(7204 + 100 * study, f"SCALE TEST {study + 1}"),
            patient_id=spec.patient_id, patient_name=spec.patient_name)
        template = next(synth.tiny_instances(study_spec, 1, size=600, series_number=200 + n, seed=n))
        uid = pydicom.dcmread(io.BytesIO(template)).SOPInstanceUID.encode()
        assert template.count(uid) == 2
        stem = b"1.2.826.0.1.3680043.10.1234.7204.%d.1" % (n + 1)
        width = len(uid) - len(stem)   # same length: no group length changes
        for k in range(per_series):
            yield template.replace(uid, stem + b"%0*d" % (width, k))


@pytest.fixture(scope="module")
def big_patient() -> Iterator[Tuple[OrthancProcess, OrthancProcess, str]]:
    """(source with the patient, empty target), both with the plugin; the patient's Orthanc ID."""
    source = OrthancProcess(name="scale-source", with_accelerator=True).start()
    target = OrthancProcess(name="scale-target", with_accelerator=True).start()
    try:
        patients = set()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for answer in pool.map(lambda data: source.request("POST", "/instances", data), _patient_files()):
                patients.add(answer["ParentPatient"])
        assert len(patients) == 1
        yield source, target, patients.pop()
    finally:
        # Side by side: each takes a while to stop with its 20,000 files.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(OrthancProcess.stop, (source, target)))


def _plan(source: OrthancProcess, target: OrthancProcess, patient: str, mode: str, data_dir: Path):
    options = TransferOptions(BucketSize=SMALL_BUCKET_KB)

    async def plan():  # type: ignore[no-untyped-def]
        async with TransferEngine(options, data_dir=data_dir) as engine:
            return await engine.plan(Peer(name="source", url=source.url), Peer(name="target", url=target.url),
                                     [{"Level": "Patient", "ID": patient}], mode=mode)
    return asyncio.run(plan())


def test_the_engine_plans_a_patient_of_twenty_thousand_instances_and_both_servers_take_the_plan(
        big_patient, tmp_path: Path) -> None:
    source, target, patient = big_patient
    stored = sorted(i["ID"] for i in source.request("GET", f"/patients/{patient}/instances"))
    assert len(stored) == COUNT
    assert len(source.request("GET", f"/patients/{patient}/studies")) == STUDIES
    bucket_bytes = SMALL_BUCKET_KB * 1024

    push = _plan(source, target, patient, "push", tmp_path / "push")
    assert push.mode is TransferMode.PUSH
    plan = push.prepared.plan
    # Every instance of the patient, with the source's own MD5, and nothing is on the target yet.
    assert [i.id for i in plan.to_send] == stored and push.already_present == 0
    sample = plan.to_send[::4999]
    assert [i.md5 for i in sample] == [source.request("GET", f"/instances/{i.id}/attachments/dicom/md5",
                                                      raw=True).decode() for i in sample]
    buckets: List[wire.Bucket] = wire.plan_buckets(plan.to_send, bucket_bytes)
    assert push.buckets == len(buckets) > 500
    assert sorted(c.instance_id for b in buckets for c in b.chunks) == stored
    # The target's plugin takes the whole transaction (size and coverage checked), then lets it go.
    request = wire.build_push_request(plan.to_send, buckets, "gzip")
    created = target.request("POST", wire.URI_PUSH, json.dumps(request).encode())
    assert created["ID"]
    target.request("DELETE", f"{wire.URI_PUSH}/{created['ID']}")

    pull = _plan(source, target, patient, "pull", tmp_path / "pull")
    assert pull.mode is TransferMode.PULL and [i.id for i in pull.prepared.plan.to_send] == stored
    pulled = wire.plan_buckets(pull.prepared.plan.to_send, bucket_bytes, pull_base_url=source.url,
                               compression=wire.CODEC_SPLIT16)
    assert sorted(c.instance_id for b in pulled for c in b.chunks) == stored
    assert max(len(source.url + wire.chunks_uri(b, wire.CODEC_SPLIT16)) for b in pulled) < 2000
    for bucket in (pulled[0], pulled[len(pulled) // 2], pulled[-1]):
        # The source answers each of these URLs with exactly the bucket's bytes.
        body = source.request("GET", wire.chunks_uri(bucket, "none"), raw=True)
        expected = b"".join(source.request("GET", f"/instances/{c.instance_id}/file", raw=True)
                            [c.offset:c.offset + c.size] for c in bucket.chunks)
        assert body == expected
