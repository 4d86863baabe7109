"""GET /transfers/chunks/{ids}: byte ranges of concatenated instance files."""

from __future__ import annotations

import gzip
import hashlib
import threading

import pytest

from gui.protocol import wire
from gui.sandbox import synthetic_studies as synth
from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, assert_orthanc_error


@pytest.fixture(scope="module")
def stored(plugin_server):
    """Four instances on the server, sorted by ID, with their exact stored bytes."""
    files = study(201, tiny=2, ct=2, ct_size=96)
    ids = sorted(plugin_server.upload(f)["ID"] for f in files)
    data = {i: plugin_server.request("GET", f"/instances/{i}/file", raw=True) for i in ids}
    return ids, data


def _get(http, ids, **query):
    return http.client.get(f"{wire.URI_CHUNKS}/{'.'.join(ids)}", params=query)


@pytest.mark.parametrize("offset,size", [(0, 0), (0, 10), (100, 5000), (3000, 0), (1, 1)])
def test_ranges_across_instance_boundaries(http, stored, offset, size):
    ids, data = stored
    whole = b"".join(data[i] for i in ids)
    answer = _get(http, ids, offset=str(offset), size=str(size))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    expected = whole[offset:] if size == 0 else whole[offset:offset + size]
    assert answer.content == expected


def test_range_spanning_three_instances(http, stored):
    ids, data = stored
    whole = b"".join(data[i] for i in ids)
    start = len(data[ids[0]]) - 7
    size = len(data[ids[1]]) + 20
    answer = _get(http, ids[:3], offset=str(start), size=str(size), unknown="ignored")
    assert answer.content == whole[start:start + size]


def test_gzip_round_trip(http, stored):
    ids, data = stored
    answer = http.client.get(f"{wire.URI_CHUNKS}/{'.'.join(ids)}",
                             params={"offset": "0", "size": "0", "compression": "gzip"},
                             headers={"Accept-Encoding": "identity"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/gzip"
    assert gzip.decompress(answer.content) == b"".join(data[i] for i in ids)


def test_offset_past_the_end_is_an_empty_answer(http, stored):
    ids, data = stored
    answer = _get(http, ids[:1], offset=str(len(data[ids[0]]) + 10), size="10")
    assert answer.status_code == 200 and answer.content == b""


def _metrics(server) -> dict:
    text = server.request("GET", "/tools/metrics-prometheus", raw=True).decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("transfers_")}


def test_concurrent_requests_for_one_instance_read_it_from_storage_once(http, plugin_server):
    fresh = study(202, ct=1, ct_size=512)[0]  # about 0.5 MB, not in the cache yet
    instance_id = plugin_server.upload(fresh)["ID"]
    expected = plugin_server.request("GET", f"/instances/{instance_id}/file", raw=True)
    before = _metrics(plugin_server)
    results = []
    barrier = threading.Barrier(6)

    def fetch():
        barrier.wait(10)
        results.append(_get(http, [instance_id]).content)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [expected] * 6
    after = _metrics(plugin_server)
    assert after["transfers_storage_reads"] - before["transfers_storage_reads"] == 1
    assert after["transfers_cache_bytes"] >= len(expected)


def test_chunk_errors(http, stored):
    ids, _ = stored
    unknown = "f" * 8 + "-" + "-".join(["e" * 8] * 4)
    assert_orthanc_error(_get(http, [unknown]), 404, 17, unknown)
    assert_orthanc_error(_get(http, [ids[0]], compression="bzip2"), 400, details="bzip2")
    assert_orthanc_error(_get(http, [ids[0]], offset="-5"), 400, details="offset")
    assert_orthanc_error(_get(http, [ids[0]], size="1e3"), 400, details="size")
    assert_orthanc_error(_get(http, [ids[0].upper()]), 400, details="not an Orthanc ID")
    assert_orthanc_error(_get(http, [ids[0]] * 101), 400, details="instance IDs")
    assert http.client.get(wire.URI_CHUNKS + "/").status_code == 404  # no IDs: no such resource
    wrong = http.client.post(f"{wire.URI_CHUNKS}/{ids[0]}", content=b"")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"


def test_any_range_matches_the_concatenated_files(http, stored):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ids, data = stored
    whole = b"".join(data[i] for i in ids)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(first=st.integers(0, len(ids) - 1), count=st.integers(1, len(ids)),
           offset=st.integers(0, len(whole) + 10), size=st.integers(0, len(whole)),
           compression=st.sampled_from(["none", "gzip"]))
    def check(first, count, offset, size, compression):
        chosen = ids[first:first + count]
        joined = b"".join(data[i] for i in chosen)
        answer = _get(http, chosen, offset=str(offset), size=str(size), compression=compression)
        assert answer.status_code == 200
        body = gzip.decompress(answer.content) if compression == "gzip" else answer.content
        assert body == (joined[offset:] if size == 0 else joined[offset:offset + size])

    assert whole  # the stored files are the reference
    check()


def test_pieces_of_a_large_instance_come_from_the_stored_file(http, plugin_server):
    """A piece of a large instance is read from Orthanc's stored file, not
    through the cache (which would read the whole file first): the pieces
    are the file's exact bytes, and no storage read goes through the API."""
    spec = synth.make_study_spec(203, "CT LARGE PIECES")
    instance_id = plugin_server.upload(synth.multiframe_instance(spec, 9, seed=203))["ID"]
    expected = plugin_server.request("GET", f"/instances/{instance_id}/file", raw=True)
    assert len(expected) >= 4 * 1024 * 1024  # chunks.DIRECT_MIN_SIZE
    before = _metrics(plugin_server)
    step = len(expected) // 3
    pieces = [_get(http, [instance_id], offset=str(n * step),
                   size=str(step if n < 2 else 0)).content for n in range(3)]
    assert hashlib.md5(b"".join(pieces)).hexdigest() == hashlib.md5(expected).hexdigest()
    after = _metrics(plugin_server)
    # (a counter shows in Orthanc's metrics once it was first set)
    assert after["transfers_direct_reads"] - before.get("transfers_direct_reads", 0) == 3
    assert after.get("transfers_storage_reads", 0) == before.get("transfers_storage_reads", 0)


def test_pieces_of_a_compressed_storage_go_through_orthanc(orthanc_factory):
    """With StorageCompression the stored file is not the instance's bytes:
    pieces are served from the file as Orthanc gives it, exactly."""
    server = orthanc_factory("compressed", with_accelerator=True, extra_config={"StorageCompression": True})
    spec = synth.make_study_spec(204, "CT LARGE COMPRESSED")
    instance_id = server.upload(synth.multiframe_instance(spec, 5, seed=204))["ID"]
    expected = server.request("GET", f"/instances/{instance_id}/file", raw=True)
    client = PluginHttp(server)
    try:
        half = len(expected) // 2
        first = _get(client, [instance_id], offset="0", size=str(half)).content
        second = _get(client, [instance_id], offset=str(half), size="0").content
    finally:
        client.close()
    assert first + second == expected
    metrics = _metrics(server)
    assert metrics.get("transfers_direct_reads", 0) == 0 and metrics["transfers_storage_reads"] == 1
