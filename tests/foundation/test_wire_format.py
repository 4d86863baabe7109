"""Strict parsing of the accelerator's JSON shapes (gui/protocol/wire.py)."""

from __future__ import annotations

import pytest

from gui.protocol import wire

A = "0a1b2c3d-00000000-11111111-22222222-33333333"
B = "0a1b2c3d-00000000-11111111-22222222-44444444"
MD5 = "0123456789abcdef0123456789abcdef"


def test_instance_info_requires_decimal_strings_and_real_ids():
    assert wire.parse_instance_info({"ID": A, "Size": "12", "MD5": MD5}) == wire.InstanceInfo(A, 12, MD5)
    for bad in ({"ID": A, "Size": 12, "MD5": MD5}, {"ID": "../../etc/passwd", "Size": "1", "MD5": MD5},
                {"ID": A, "Size": "-1", "MD5": MD5}, {"ID": A, "Size": "1", "MD5": "xyz"},
                {"ID": A, "Size": "1"}, [A]):
        with pytest.raises(wire.WireFormatError):
            wire.parse_instance_info(bad)


def test_sizes_beyond_the_limit_are_refused_before_allocation():
    with pytest.raises(wire.WireFormatError, match="exceeds"):
        wire.parse_decimal(str(10 ** 15), "Size")


def test_push_request_round_trip_and_chunk_rules():
    infos = [wire.InstanceInfo(A, 10, MD5), wire.InstanceInfo(B, 30, MD5)]
    buckets = wire.plan_buckets(infos, bucket_size=8)
    body = wire.build_push_request(infos, buckets, "gzip")
    parsed = wire.parse_push_request(body)
    assert parsed.instances == infos and parsed.compression == "gzip"
    assert [b.to_json() for b in parsed.buckets] == [b.to_json() for b in buckets]
    # A chunk after a partial instance breaks the rules.
    bad = dict(body, Buckets=[[{"ID": A, "Offset": "0", "Size": "5"}, {"ID": B, "Offset": "0", "Size": "30"}]])
    with pytest.raises(wire.WireFormatError):
        wire.parse_push_request(bad)
    with pytest.raises(wire.WireFormatError, match="compression"):
        wire.parse_push_request(dict(body, Compression="zip"))


def test_lookup_answer_shape():
    answer = wire.build_lookup_answer([wire.InstanceInfo(B, 3, MD5), wire.InstanceInfo(A, 2, MD5)], "uuid")
    assert [i["ID"] for i in answer["Instances"]] == [A, B]
    assert answer["TotalSize"] == "5" and answer["CountInstances"] == 2
    assert wire.parse_lookup_answer(answer)[0].size == 2


def test_chunks_uri_and_ids():
    bucket = wire.Bucket()
    bucket.add_chunk(wire.InstanceInfo(A, 10, MD5), 4, 6)
    assert wire.chunks_uri(bucket, "gzip") == f"/transfers/chunks/{A}?offset=4&size=6&compression=gzip"
    assert wire.parse_chunk_ids(f"{A}.{B}") == [A, B]
    with pytest.raises(wire.WireFormatError):
        wire.parse_chunk_ids(f"{A}..{B}")
    with pytest.raises(wire.WireFormatError):
        wire.parse_resources([{"Level": "Galaxy", "ID": A}])
    assert wire.parse_resources([{"Level": "study", "ID": A}]) == [{"Level": "Study", "ID": A}]
