"""The "split16-gzip" codec: announced by our plugin, used only when announced."""

from __future__ import annotations

import gzip
import json

import pytest

from gui.protocol import wire
from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, assert_orthanc_error, plan_push

BUCKET = 256 * 1024


def _request_with_codec(plan) -> dict:
    return wire.build_push_request(plan.infos, plan.buckets, "gzip", codec=wire.CODEC_SPLIT16)


@pytest.fixture
def gzip_only_server(orthanc_factory):
    """Our plugin configured not to announce any codec: it behaves as the C++ plugin does."""
    return orthanc_factory("gziponly", with_accelerator=True, extra_config={"Transfers": {"Codecs": []}})


def test_push_in_the_codec_is_confirmed_and_imports_byte_for_byte(plugin_server, http):
    plan = plan_push(study(501, ct=6, ct_size=256, tiny=5), BUCKET)
    answer = http.post_json(wire.URI_PUSH, _request_with_codec(plan))
    assert answer.status_code == 200 and answer.json()["Codec"] == wire.CODEC_SPLIT16
    tid = answer.json()["ID"]
    coded = plain = 0
    for index in range(len(plan.buckets)):
        raw = plan.raw_bucket(index)
        body = gzip.compress(wire.split16(raw), 1)
        coded, plain = coded + len(body), plain + len(gzip.compress(raw, 1))
        assert http.put(tid, index, body).status_code == 200
    assert coded < 0.95 * plain  # the point of the codec on 16-bit pixels
    assert http.commit(tid).status_code == 200
    for info in plan.infos:
        md5 = plugin_server.request("GET", f"/instances/{info.id}/attachments/dicom/md5", raw=True).decode()
        assert md5 == info.md5


def test_a_body_sent_as_plain_gzip_where_the_codec_was_agreed_fails_the_commit(plugin_server, http):
    plan = plan_push(study(502, ct=2, ct_size=256), BUCKET)
    tid = http.post_json(wire.URI_PUSH, _request_with_codec(plan)).json()["ID"]
    for index in range(len(plan.buckets)):
        assert http.put(tid, index, gzip.compress(plan.raw_bucket(index))).status_code == 200
    assert_orthanc_error(http.commit(tid), 500, 20)  # the bytes are scrambled: MD5 mismatch, nothing imported
    assert not set(plan.ids()) & set(http.instance_ids())


def test_a_server_that_does_not_announce_the_codec_gets_gzip(gzip_only_server):
    http = PluginHttp(gzip_only_server)
    try:
        plan = plan_push(study(503, ct=2, ct_size=256), BUCKET, "gzip")
        answer = http.post_json(wire.URI_PUSH, _request_with_codec(plan))
        assert answer.status_code == 200 and "Codec" not in answer.json()
        tid = answer.json()["ID"]
        for index, body in enumerate(plan.bodies):
            assert http.put(tid, index, body).status_code == 200
        assert http.commit(tid).status_code == 200
        assert sorted(http.instance_ids()) == sorted(plan.ids())
        ids = ".".join(plan.ids())
        got = http.client.get(f"{wire.URI_CHUNKS}/{ids}?compression=gzip&codec={wire.CODEC_SPLIT16}")
        assert got.headers["content-type"].startswith("application/gzip")
        assert gzip.decompress(got.content) == b"".join(plan.files[i] for i in plan.ids())
    finally:
        http.close()


def test_chunks_answer_in_the_codec_when_asked_and_it_pays(plugin_server, http):
    files = study(504, ct=3, ct_size=256)
    ids = sorted(plugin_server.upload(f)["ID"] for f in files)
    expected = b"".join(plugin_server.request("GET", f"/instances/{i}/file", raw=True) for i in ids)
    base = f"{wire.URI_CHUNKS}/{'.'.join(ids)}?compression=gzip"
    coded = http.client.get(base + f"&codec={wire.CODEC_SPLIT16}")
    assert coded.headers["content-type"] == wire.CODEC_CONTENT_TYPE[wire.CODEC_SPLIT16]
    assert bytes(wire.join16(gzip.decompress(coded.content))) == expected
    plain = http.client.get(base)  # no codec asked: gzip, as the protocol says
    assert plain.headers["content-type"].startswith("application/gzip")
    assert gzip.decompress(plain.content) == expected
    assert len(coded.content) < len(plain.content)


def test_unknown_codec_or_codec_without_gzip_is_refused(http):
    plan = plan_push(study(505, tiny=1), BUCKET)
    body = _request_with_codec(plan)
    body["Codec"] = "lz4"
    assert_orthanc_error(http.post_json(wire.URI_PUSH, json.dumps(body)), 400, details="Codec")
    body["Codec"], body["Compression"] = wire.CODEC_SPLIT16, "none"
    assert_orthanc_error(http.post_json(wire.URI_PUSH, json.dumps(body)), 400, details="Codec")

