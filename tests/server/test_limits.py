"""Hostile and oversized requests, LRU discard of transactions, authentication."""

from __future__ import annotations

import json

from gui.protocol import wire
from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, assert_orthanc_error, plan_push

HUGE = str(100 * 1024 ** 3)  # 100 GB


def _info(n: int, size: str = "10") -> dict:
    return {"ID": "%08x-0000000a-0000000b-0000000c-0000000d" % n, "Size": size, "MD5": "0" * 32}


def test_malformed_push_requests_are_refused_with_the_problem_named(http, plugin_server):
    one = _info(1)
    good_bucket = [{"ID": one["ID"], "Offset": "0", "Size": "10"}]
    cases = [
        (b"{not json", 400, 28, "JSON"),
        ({"Instances": [one], "Buckets": [good_bucket]}, 400, 8, "Compression"),
        ({"Instances": [one], "Buckets": [good_bucket], "Compression": "zip"}, 400, 8, "zip"),
        ({"Instances": [dict(one, Size=10)], "Buckets": [good_bucket], "Compression": "none"}, 400, 8, "Size"),
        ({"Instances": [one], "Buckets": [[{"ID": one["ID"], "Offset": 0, "Size": "10"}]],
          "Compression": "none"}, 400, 8, "Offset"),
        ({"Instances": [one], "Buckets": [[{"ID": one["ID"], "Offset": "-1", "Size": "10"}]],
          "Compression": "none"}, 400, 8, "Offset"),
        ({"Instances": [dict(one, ID="../../etc/passwd")], "Buckets": [], "Compression": "none"}, 400, 8,
         "not an Orthanc ID"),
        ({"Instances": [one], "Buckets": [[{"ID": one["ID"], "Offset": "0", "Size": "5"}]],
          "Compression": "none"}, 400, 8, "cover"),
        ({"Instances": [one], "Buckets": [good_bucket, good_bucket], "Compression": "none"}, 400, 8, "cover"),
        ({"Instances": [one, one], "Buckets": [], "Compression": "none"}, 400, 8, "duplicate"),
        ({"Instances": "all", "Buckets": [], "Compression": "none"}, 400, 8, "arrays"),
        ([1, 2, 3], 400, 8, "object"),
        ({"Instances": [one], "Buckets": [good_bucket], "Compression": "none", "AsynchronousCommit": "yes"},
         400, 8, "AsynchronousCommit"),
    ]
    cases += [
        (b"[" * 100_000 + b"]" * 100_000, 400, 28, "nested"),  # crashed Orthanc before the depth check
        (b"[" * 100_000, 400, 28, "unbalanced"),
        (b'{"Instances": [' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"]}", 400, 28, "nested"),
        (b"\xff\xfe{}", 400, 28, "JSON"),
        (b"", 400, 28, "JSON"),
    ]
    for body, status, code, words in cases:
        assert_orthanc_error(http.post_json(wire.URI_PUSH, body), status, code, words)
    assert http.client.get(wire.URI_PUSH).status_code == 405


def test_a_declared_100_gb_push_is_refused_without_allocating(http, plugin_server):
    big = _info(2, HUGE)
    buckets = [[{"ID": big["ID"], "Offset": str(n * 8 * 1024 ** 2), "Size": str(8 * 1024 ** 2)}]
               for n in range(100 * 128)]
    body = {"Instances": [big], "Buckets": buckets, "Compression": "none"}
    error = assert_orthanc_error(http.post_json(wire.URI_PUSH, body), 507, 19, HUGE)
    assert "MaxStagedSize" in error["Details"]
    assert [p for p in (plugin_server.storage_dir / "transfers-staging").iterdir() if p.name != "jobs"] == []
    # One bucket holding 100 GB: refused on its own merits as well.
    body = {"Instances": [big], "Buckets": [[{"ID": big["ID"], "Offset": "0", "Size": HUGE}]],
            "Compression": "none"}
    assert_orthanc_error(http.post_json(wire.URI_PUSH, body), 413, 8, "MaxBucketSize")


def test_limits_from_the_configuration(orthanc_factory):
    server = orthanc_factory("limits", with_accelerator=True, extra_config={"Transfers": {
        "MaxInstancesPerTransaction": 3, "MaxRequestSize": 1, "MaxChunkIds": 2, "MaxStagedSize": 1,
        "MaxPushTransactions": 1}})
    http = PluginHttp(server)
    try:
        body = {"Instances": [_info(n) for n in range(4)], "Buckets": [], "Compression": "none"}
        assert_orthanc_error(http.post_json(wire.URI_PUSH, body), 413, 8, "at most 3 per transaction")
        assert_orthanc_error(http.post_json(wire.URI_LOOKUP, b"[" + b" " * (2 * 1024 * 1024) + b"]"), 413, 8,
                             "MaxRequestSize")
        ids = ".".join(_info(n)["ID"] for n in range(3))
        assert_orthanc_error(http.client.get(f"{wire.URI_CHUNKS}/{ids}"), 400, 8, "instance IDs")
        two_mb = {"Instances": [_info(1, str(2 * 1024 * 1024))],
                  "Buckets": [[{"ID": _info(1)["ID"], "Offset": "0", "Size": str(2 * 1024 * 1024)}]],
                  "Compression": "none"}
        assert_orthanc_error(http.post_json(wire.URI_PUSH, two_mb), 507, 19, "MaxStagedSize")
        # A refused request does not push the open transaction out (MaxPushTransactions is 1).
        small = plan_push(study(401, tiny=1), 64 * 1024)
        tid = http.create(small)
        assert_orthanc_error(http.post_json(wire.URI_PUSH, two_mb), 507, 19, "MaxStagedSize")
        assert http.put(tid, 0, small.bodies[0]).status_code == 200
        assert http.commit(tid).status_code == 200
    finally:
        http.close()


def test_least_recently_used_transaction_is_discarded(orthanc_factory):
    server = orthanc_factory("lru", with_accelerator=True, extra_config={"Transfers": {"MaxPushTransactions": 2}})
    http = PluginHttp(server)
    try:
        plans = [plan_push(study(400 + n, tiny=1), 64 * 1024) for n in range(3)]
        first, second = http.create(plans[0]), http.create(plans[1])
        assert http.put(first, 0, plans[0].bodies[0]).status_code == 200  # first is now the most recent
        third = http.create(plans[2])
        assert_orthanc_error(http.put(second, 0, plans[1].bodies[0]), 404, 17, second)
        staged = {p.name for p in (server.storage_dir / "transfers-staging").iterdir()} - {"jobs"}
        assert staged == {first, third}
        assert http.commit(first).status_code == 200
        assert http.put(third, 0, plans[2].bodies[0]).status_code == 200
        assert http.commit(third).status_code == 200
        assert len(server.request("GET", "/instances")) == 2
    finally:
        http.close()


def test_plugin_stays_behind_orthanc_authentication(orthanc_factory):
    server = orthanc_factory("auth", with_accelerator=True, username="alice", password="s3cret")
    http = PluginHttp(server)
    anonymous = PluginHttp(server)
    anonymous.client.auth = None
    try:
        assert http.post_json(wire.URI_LOOKUP, b"[]").status_code == 200
        for method, path in [("POST", wire.URI_LOOKUP), ("POST", wire.URI_PUSH), ("GET", wire.URI_PEERS),
                             ("GET", wire.URI_CHUNKS + "/" + _info(1)["ID"]),
                             ("PUT", wire.URI_PUSH + "/3f2504e0-4f89-41d3-9a0c-0305e82c3301/0")]:
            answer = anonymous.client.request(method, path, content=b"[]")
            assert answer.status_code == 401, (method, path, answer.status_code)
        wrong = PluginHttp(server)
        wrong.client.auth = ("alice", "guess")
        assert wrong.post_json(wire.URI_LOOKUP, b"[]").status_code == 401
        wrong.close()
    finally:
        http.close()
        anonymous.close()


def test_errors_are_json_with_ascii_details(http):
    answer = http.post_json(wire.URI_LOOKUP, json.dumps([{"Level": "Stüdy", "ID": "x"}]).encode())
    body = assert_orthanc_error(answer, 400, 8)
    assert answer.headers["content-type"] == "application/json"
    assert body["Method"] == "POST" and body["Uri"] == wire.URI_LOOKUP
