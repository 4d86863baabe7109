"""The parallel commit: CommitThreadsCount imports at once, still all or nothing."""

from __future__ import annotations

import time

import pytest

from gui.resources.server_plugin.transfers_plugin import commit as plugin_commit
from gui.sandbox.orthanc_process import OrthancProcess

from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, assert_orthanc_error, plan_push

BUCKET = 64 * 1024


def _metrics(server) -> dict:
    text = server.request("GET", "/tools/metrics-prometheus", raw=True).decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("transfers_")}


@pytest.fixture
def parallel_server(orthanc_factory):
    # With users declared, the loopback imports must carry the plugin's own token.
    return orthanc_factory("parallel", with_accelerator=True, username="alice", password="s3cret",
                           extra_config={"Transfers": {"CommitThreadsCount": 4}})


@pytest.fixture
def http(parallel_server):
    client = PluginHttp(parallel_server)
    yield client
    client.close()


def test_parallel_commit_imports_every_instance_several_at_once(parallel_server, http):
    plan = plan_push(study(401, tiny=60, ct=4, ct_size=256), BUCKET, "gzip")
    assert http.commit(http.send_all(plan)).status_code == 200
    stored = {i: parallel_server.request("GET", f"/instances/{i}/attachments/dicom/md5", raw=True).decode()
              for i in http.instance_ids()}
    assert stored == {i.id: i.md5 for i in plan.infos}
    assert _metrics(parallel_server)["transfers_commit_imports_at_once"] >= 2


def test_staging_high_water_marks_outlive_a_short_push(parallel_server, http):
    # A push shorter than any polling interval still leaves its peak behind:
    # what an admin sizes MaxStagedSize from, and what the benchmark reads.
    plan = plan_push(study(403, tiny=30), BUCKET)
    total = sum(i.size for i in plan.infos)
    assert http.commit(http.send_all(plan)).status_code == 200
    metrics = _metrics(parallel_server)
    assert metrics["transfers_staged_bytes_reserved"] == 0
    assert metrics["transfers_staged_bytes_reserved_peak"] == total
    assert metrics["transfers_staged_bytes_peak"] == total
    smaller = plan_push(study(404, tiny=3), BUCKET)
    assert http.commit(http.send_all(smaller)).status_code == 200
    assert _metrics(parallel_server)["transfers_staged_bytes_peak"] == total   # a mark only rises


def test_parallel_commit_failing_midway_removes_everything_it_imported(parallel_server, http):
    files = study(402, tiny=80)
    parallel_server.upload(files[0])  # on the server before the push: must survive the rollback
    # A file Orthanc refuses, sorting in the middle of the transaction: the
    # imports before it and those running beside it must all be undone.
    middle_id = "80000000-00000000-00000000-00000000-00000000"
    plan = plan_push(files, BUCKET, overrides={middle_id: b"not a DICOM file" * 20})
    position = plan.ids().index(middle_id)
    assert 20 < position < len(plan.infos) - 20
    error = assert_orthanc_error(http.commit(http.send_all(plan)), 400, 15, middle_id)
    assert "removed again" in error["Details"]
    assert [i["ID"] for i in error["Instances"]] == [middle_id]
    older = next(i.id for i in plan.infos if plan.files[i.id] == files[0])
    assert http.instance_ids() == [older]
    assert _metrics(parallel_server)["transfers_commit_imports_at_once"] >= 2
    # The transaction stays: without the bad file it cannot be completed, but
    # a new, correct push of the same study goes through.
    good = plan_push(files, BUCKET)
    assert http.commit(http.send_all(good)).status_code == 200
    assert sorted(http.instance_ids()) == sorted(good.ids())


def test_parallel_commit_streams_large_staged_files_intact(parallel_server, http):
    """Instances above the size sent in one write go from the staged file to
    Orthanc's port with sendfile: stored byte for byte, several at once."""
    plan = plan_push(study(404, ct=4, ct_size=512), 256 * 1024)   # 525 KB slices, split in 3 buckets
    assert min(i.size for i in plan.infos) > 256 * 1024
    assert http.commit(http.send_all(plan)).status_code == 200
    stored = {i: parallel_server.request("GET", f"/instances/{i}/attachments/dicom/md5", raw=True).decode()
              for i in http.instance_ids()}
    assert stored == {i.id: i.md5 for i in plan.infos}
    assert _metrics(parallel_server)["transfers_commit_imports_at_once"] >= 2   # not fallen back in process
    assert "in process from now on" not in parallel_server.log_path.read_text(errors="replace")


def test_split_instances_sent_out_of_order_or_again_are_checked_as_written(parallel_server, http):
    """Split instances are hashed while their pieces arrive (in any order);
    a piece sent again with other bytes is still caught at the commit."""
    files = study(403, ct=3, ct_size=512)  # 525 KB slices, split in several buckets of 64 KB
    plan = plan_push(files, BUCKET)
    assert max(sum(1 for b in plan.buckets if i.id in b.instance_ids()) for i in plan.infos) >= 4
    tid = http.create(plan)
    for index in reversed(range(len(plan.buckets))):  # last piece first
        assert http.put(tid, index, plan.bodies[index]).status_code == 200
    assert http.commit(tid).status_code == 200
    assert sorted(http.instance_ids()) == sorted(plan.ids())
    for iid in plan.ids():
        parallel_server.request("DELETE", f"/instances/{iid}")

    tid = http.send_all(plan)
    victim = next(n for n, b in enumerate(plan.buckets) if b.chunks[0].offset > 0)
    bad = bytearray(plan.bodies[victim])
    bad[10] ^= 0xFF
    assert http.put(tid, victim, bytes(bad)).status_code == 200  # a retry with other bytes
    assert_orthanc_error(http.commit(tid), 500, 20, plan.buckets[victim].chunks[0].instance_id)
    assert http.instance_ids() == []
    assert http.put(tid, victim, plan.bodies[victim]).status_code == 200
    assert http.commit(tid).status_code == 200
    assert sorted(http.instance_ids()) == sorted(plan.ids())


def test_loopback_poster_replaces_a_connection_orthanc_closed_while_idle(tmp_path):
    """A commit thread that imports again after Orthanc's KeepAliveTimeout
    must open a new connection, not take the closed one for an unreachable
    port (which made every later commit of the server import in process)."""
    files = study(405, tiny=2)
    with OrthancProcess(name="keepalive", workdir=tmp_path, extra_config={"KeepAliveTimeout": 1}) as server:
        poster = plugin_commit.LoopbackPoster(server.http_port, "Bearer unused")  # no users: no token needed
        assert poster.post(files[0])["Status"] == "Success"
        sock = poster.local.connection.sock
        deadline = time.monotonic() + 30
        while not plugin_commit._closed_by_server(sock):   # Orthanc closes the idle connection
            assert time.monotonic() < deadline, "Orthanc kept the idle connection open"
            time.sleep(0.05)
        assert poster.post(files[1])["Status"] == "Success"
        assert poster.local.connection.sock is not sock
