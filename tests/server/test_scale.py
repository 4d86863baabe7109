"""A 20,000-instance transfer plans and is accepted with a small bucket size."""

from __future__ import annotations

import hashlib

from gui.protocol import wire
from tests.server.push_helpers import FORM

COUNT = 20_000
BUCKET = 64 * 1024  # small: several hundred buckets


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
