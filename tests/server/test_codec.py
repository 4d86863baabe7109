"""The codecs ("split16-gzip", "split16-rle"): announced by our plugin, used only when announced."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from gui.protocol import wire
from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, assert_orthanc_error, plan_push

BUCKET = 256 * 1024


def _request_with_codec(plan) -> dict:
    return wire.build_push_request(plan.infos, plan.buckets, "gzip", codec=wire.CODEC_SPLIT16)


def _put_every_bucket(http, tid, plan, encode, reference):
    """PUT every bucket of ``plan`` encoded by ``encode``; the bytes sent and
    what ``reference`` would have sent for the same buckets."""
    coded = compared = 0
    for index in range(len(plan.buckets)):
        raw = plan.raw_bucket(index)
        body = encode(raw)
        coded, compared = coded + len(body), compared + len(reference(raw))
        assert http.put(tid, index, body).status_code == 200
    return coded, compared


@pytest.fixture
def gzip_only_server(orthanc_factory):
    """Our plugin configured not to announce any codec: it behaves as the C++ plugin does."""
    return orthanc_factory("gziponly", with_accelerator=True, extra_config={"Transfers": {"Codecs": []}})


def test_push_in_the_codec_is_confirmed_and_imports_byte_for_byte(plugin_server, http):
    plan = plan_push(study(501, ct=6, ct_size=256, tiny=5), BUCKET)
    answer = http.post_json(wire.URI_PUSH, _request_with_codec(plan))
    assert answer.status_code == 200 and answer.json()["Codec"] == wire.CODEC_SPLIT16
    coded, plain = _put_every_bucket(http, answer.json()["ID"], plan,
                                     lambda raw: gzip.compress(wire.split16(raw), 1),
                                     lambda raw: gzip.compress(raw, 1))
    assert coded < 0.95 * plain  # the point of the codec on 16-bit pixels
    tid = answer.json()["ID"]
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



# --- split16-rle: the stronger codec, offered in "Codecs" ---------------------------------

def _rle_request(plan, codecs=(wire.CODEC_SPLIT16_RLE, wire.CODEC_SPLIT16)) -> dict:
    return wire.build_push_request(plan.infos, plan.buckets, "gzip", codecs=codecs)


@pytest.fixture
def split16_only_server(orthanc_factory):
    """Our plugin knowing split16-gzip only, as every plugin of ours before split16-rle."""
    return orthanc_factory("split16only", with_accelerator=True,
                           extra_config={"Transfers": {"Codecs": [wire.CODEC_SPLIT16]}})


def test_split16_rle_round_trips_any_size_and_parity(ct_study_files):
    """Odd and even sizes, and 16-bit data that starts on an odd byte (a
    bucket cut inside an instance at an odd offset): the bytes come back
    as they were, and the odd start compresses as well as the even one."""
    import os
    for size in (0, 1, 2, 3, 5, 1023, 65537):
        data = os.urandom(size)
        assert bytes(wire.decode_split16_rle(wire.encode_split16_rle(data), size)) == data
    pixels = b"".join(ct_study_files)[:2_000_001]
    even, odd = pixels[:-1], pixels[1:]
    coded = {name: wire.encode_split16_rle(data) for name, data in (("even", even), ("odd", odd))}
    assert bytes(wire.decode_split16_rle(coded["even"], len(even))) == even
    assert bytes(wire.decode_split16_rle(coded["odd"], len(odd))) == odd
    assert len(coded["odd"]) < 1.01 * len(coded["even"])
    assert len(coded["even"]) < 0.93 * len(gzip.compress(wire.split16(even), 1))  # stronger than split16-gzip


def test_push_request_names_only_known_codecs_in_codec():
    """"Codec" (which a plugin of ours before split16-rle parses strictly)
    only ever names split16-gzip; the newer codec goes in "Codecs"."""
    plan = plan_push(study(511, tiny=1), BUCKET)
    both = _rle_request(plan)
    assert both["Codec"] == wire.CODEC_SPLIT16 and both["Codecs"] == [wire.CODEC_SPLIT16_RLE, wire.CODEC_SPLIT16]
    assert both["Compression"] == "gzip"
    alone = _rle_request(plan, (wire.CODEC_SPLIT16_RLE,))
    assert "Codec" not in alone and alone["Codecs"] == [wire.CODEC_SPLIT16_RLE]
    legacy = wire.build_push_request(plan.infos, plan.buckets, "gzip", codec=wire.CODEC_SPLIT16)
    assert legacy["Codec"] == wire.CODEC_SPLIT16 and "Codecs" not in legacy


def test_push_in_split16_rle_is_chosen_and_imports_byte_for_byte(plugin_server, http):
    """CT slices cut over buckets, some at odd offsets: offered both codecs,
    our plugin chooses split16-rle, and the study is imported byte for byte."""
    plan = plan_push(study(512, ct=3, ct_size=256, tiny=4), 64 * 1024)
    assert any(b.chunks[0].offset % 2 for b in plan.buckets)
    answer = http.post_json(wire.URI_PUSH, _rle_request(plan))
    assert answer.status_code == 200 and answer.json()["Codec"] == wire.CODEC_SPLIT16_RLE
    coded, split = _put_every_bucket(http, answer.json()["ID"], plan, wire.encode_split16_rle,
                                     lambda raw: gzip.compress(wire.split16(raw), 1))
    assert coded < 0.97 * split
    tid = answer.json()["ID"]
    assert http.commit(tid).status_code == 200
    for info in plan.infos:
        md5 = plugin_server.request("GET", f"/instances/{info.id}/attachments/dicom/md5", raw=True).decode()
        assert md5 == info.md5


def test_a_plugin_that_knows_only_split16_gzip_gets_it_and_one_knowing_none_gets_gzip(
        split16_only_server, gzip_only_server):
    for server, expected in ((split16_only_server, wire.CODEC_SPLIT16), (gzip_only_server, None)):
        http = PluginHttp(server)
        try:
            plan = plan_push(study(513, ct=2, ct_size=256), BUCKET)
            answer = http.post_json(wire.URI_PUSH, _rle_request(plan)).json()
            assert answer.get("Codec") == expected
            for index in range(len(plan.buckets)):
                raw = plan.raw_bucket(index)
                body = gzip.compress(wire.split16(raw) if expected else raw, 1)
                assert http.put(answer["ID"], index, body).status_code == 200
            assert http.commit(answer["ID"]).status_code == 200
            assert sorted(http.instance_ids()) == sorted(plan.ids())
            # Offered split16-rle alone: neither honours it, so plain gzip.
            plan = plan_push(study(514, ct=1, ct_size=256), BUCKET)
            assert "Codec" not in http.post_json(wire.URI_PUSH, _rle_request(plan, (wire.CODEC_SPLIT16_RLE,))).json()
        finally:
            http.close()


def test_unknown_names_in_codecs_are_passed_over_and_a_bad_list_is_refused(http):
    plan = plan_push(study(515, tiny=1), BUCKET)
    body = _rle_request(plan)
    body["Codecs"] = ["zstd-of-the-future", wire.CODEC_SPLIT16_RLE]
    assert http.post_json(wire.URI_PUSH, json.dumps(body)).json()["Codec"] == wire.CODEC_SPLIT16_RLE
    body["Codecs"] = "not a list"
    assert http.post_json(wire.URI_PUSH, json.dumps(body)).json()["Codec"] == wire.CODEC_SPLIT16  # "Codec" left
    body["Codecs"] = [1, 2]
    assert_orthanc_error(http.post_json(wire.URI_PUSH, json.dumps(body)), 400, details="Codecs")
    body["Codecs"], body["Compression"] = [wire.CODEC_SPLIT16_RLE], "none"
    body.pop("Codec")
    assert_orthanc_error(http.post_json(wire.URI_PUSH, json.dumps(body)), 400, details="Codecs")


def test_corrupt_truncated_or_oversized_split16_rle_bodies_are_refused_and_nothing_imported(plugin_server, http):
    plan = plan_push(study(516, ct=2, ct_size=256, tiny=2), BUCKET)
    answer = http.post_json(wire.URI_PUSH, _rle_request(plan)).json()
    assert answer["Codec"] == wire.CODEC_SPLIT16_RLE
    tid, raw = answer["ID"], plan.raw_bucket(0)
    good = wire.encode_split16_rle(raw)
    assert_orthanc_error(http.put(tid, 0, good[:-9]), 400, 15, "truncated")
    assert_orthanc_error(http.put(tid, 0, good[:len(good) // 3]), 400, 15, "truncated")
    assert_orthanc_error(http.put(tid, 0, good[:40] + bytes(200) + good[240:]), 400, 15, "split16-rle")
    assert_orthanc_error(http.put(tid, 0, gzip.compress(raw)), 400, 15, "split16-rle")
    assert_orthanc_error(http.put(tid, 0, good + b"more"), 400, 15, "after the end")
    assert_orthanc_error(http.put(tid, 0, wire.encode_split16_rle(raw[:-2])), 500, 9, "bucket")
    assert_orthanc_error(http.put(tid, 0, wire.encode_split16_rle(raw + b"xy")), 500, 9, "more than")
    # A bomb in each half: 50 MB of zeros in a few KB inflates no further than the bucket's half.
    zeros = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    bomb = zeros.compress(bytes(50 * 1024 * 1024)) + zeros.flush()
    half = wire.encode_split16_rle(raw)
    assert_orthanc_error(http.put(tid, 0, bomb + half), 500, 9, "more than")
    first = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    even = first.compress(raw[0::2]) + first.flush()
    assert_orthanc_error(http.put(tid, 0, even + bomb), 500, 9, "more than")
    # Nothing staged counts: the commit refuses, nothing is imported.
    assert http.commit(tid).status_code != 200
    assert not set(plan.ids()) & set(http.instance_ids())


def test_chunks_answer_in_the_strongest_codec_asked_for_that_pays(plugin_server, split16_only_server):
    """16-bit CT in split16-rle; DICOM headers of small instances (where
    split16-rle does worse than gzip) in split16-gzip, the next one asked for;
    a source that knows only split16-gzip answers in it (the URL names it
    too); every answer decodes to the instances' bytes."""
    def fetch(server, files, codec):
        http = PluginHttp(server)
        try:
            ids = sorted(server.upload(f)["ID"] for f in files)
            expected = b"".join(server.request("GET", f"/instances/{i}/file", raw=True) for i in ids)
            infos = [wire.InstanceInfo(i, len(server.request("GET", f"/instances/{i}/file", raw=True)), "0" * 32)
                     for i in ids]
            bucket = wire.Bucket()
            for info in infos:
                bucket.add_chunk(info, 0, info.size)
            got = http.client.get(wire.chunks_uri(bucket, codec))
            used = wire.codec_of_content_type(got.headers["content-type"])
            size = len(expected)
            if used == wire.CODEC_SPLIT16_RLE:
                data = bytes(wire.decode_split16_rle(got.content, size))
            else:
                data = gzip.decompress(got.content)
                data = bytes(wire.join16(data)) if used == wire.CODEC_SPLIT16 else data
            assert data == expected
            return used
        finally:
            http.close()

    ct = study(517, ct=3, ct_size=256)
    assert fetch(plugin_server, ct, wire.CODEC_SPLIT16_RLE) == wire.CODEC_SPLIT16_RLE
    assert fetch(split16_only_server, ct, wire.CODEC_SPLIT16_RLE) == wire.CODEC_SPLIT16
    tiny = study(518, tiny=30)
    assert fetch(plugin_server, tiny, wire.CODEC_SPLIT16_RLE) in (wire.CODEC_SPLIT16, None)
