"""Push transactions: staging, all-or-nothing commit, errors as docs/protocol.md says."""

from __future__ import annotations

import gzip
import hashlib
import threading

import pytest

from gui.protocol import wire
from tests.server.conftest import study
from tests.server.push_helpers import assert_orthanc_error, plan_push

BUCKET = 64 * 1024  # CT slices of 256² (≈131 KB) are split in two, 4 KB instances grouped


def _staging(server):
    return server.storage_dir / "transfers-staging"


def _stored_md5s(server, ids):
    out = {}
    for iid in ids:
        try:
            out[iid] = server.request("GET", f"/instances/{iid}/attachments/dicom/md5", raw=True).decode().strip()
        except Exception:
            pass
    return out


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_push_commit_imports_every_instance_byte_for_byte(plugin_server, http, compression):
    files = study(300 if compression == "none" else 301, tiny=5, ct=3, ct_size=256)
    plan = plan_push(files, BUCKET, compression)
    assert any(len(b.chunks) > 1 for b in plan.buckets) and len(plan.buckets) > len(plan.infos) // 2
    created = http.post_json(wire.URI_PUSH, plan.request)
    assert created.status_code == 200
    tid = created.json()["ID"]
    assert created.json() == {"ID": tid, "Path": f"/transfers/push/{tid}"}
    for index, body in enumerate(plan.bodies):
        answer = http.put(tid, index, body)
        assert (answer.status_code, answer.json()) == (200, {})
        # Extension: how long the plugin took to store it, for the sender's link measurement.
        assert 0 <= float(answer.headers["Transfers-Handling-Seconds"]) < 60
    assert not _stored_md5s(plugin_server, plan.ids()), "nothing may be imported before the commit"
    committed = http.commit(tid)
    assert (committed.status_code, committed.json()) == (200, {})
    assert _stored_md5s(plugin_server, plan.ids()) == {i.id: i.md5 for i in plan.infos}
    for info in plan.infos:
        assert plugin_server.request("GET", f"/instances/{info.id}/file", raw=True) == plan.files[info.id]
    # The transaction and its staged files are gone.
    assert_orthanc_error(http.put(tid, 0, plan.bodies[0]), 404, 17)
    # Transaction directories only: the plugin's job registry lives beside them.
    assert [p for p in _staging(plugin_server).iterdir() if p.name != "jobs"] == []


def test_corrupted_bucket_commits_nothing_and_names_the_instance(plugin_server, http):
    plan = plan_push(study(302, tiny=4, ct=2, ct_size=256), BUCKET)
    tid = http.create(plan)
    bad_index = len(plan.bodies) - 1
    for index, body in enumerate(plan.bodies):
        if index == bad_index:
            body = bytearray(body)
            body[len(body) // 2] ^= 0xFF  # same length, wrong bytes: accepted until the commit
            body = bytes(body)
        assert http.put(tid, index, body).status_code == 200
    error = assert_orthanc_error(http.commit(tid), 500, 20)
    assert error["Message"].startswith("Corrupted file")
    position, damaged = 0, set()
    for chunk in plan.buckets[bad_index].chunks:  # the chunk holding the flipped byte
        if position <= len(plan.bodies[bad_index]) // 2 < position + chunk.size:
            damaged.add(chunk.instance_id)
        position += chunk.size
    assert {i["ID"] for i in error["Instances"]} == damaged
    assert any(iid in error["Details"] for iid in damaged)
    assert _stored_md5s(plugin_server, plan.ids()) == {}


def test_a_bucket_sent_again_with_other_bytes_is_checked_as_written(plugin_server, http):
    """Instances are hashed as their bucket is written; a second PUT of the
    same bucket (a retry) with damaged bytes must not be vouched for by the
    first PUT's digest: the commit checks what is on disk."""
    plan = plan_push(study(308, tiny=6), BUCKET)
    tid = http.send_all(plan)
    damaged = bytearray(plan.bodies[0])
    damaged[len(damaged) // 2] ^= 0xFF
    assert http.put(tid, 0, bytes(damaged)).status_code == 200
    error = assert_orthanc_error(http.commit(tid), 500, 20)
    assert error["Instances"]
    assert _stored_md5s(plugin_server, plan.ids()) == {}
    # The right bytes again, and the commit goes through.
    assert http.put(tid, 0, plan.bodies[0]).status_code == 200
    assert http.commit(tid).status_code == 200
    assert len(_stored_md5s(plugin_server, plan.ids())) == len(plan.infos)


def test_bad_md5_of_the_last_instance_leaves_nothing_imported(plugin_server, http):
    plan = plan_push(study(303, tiny=6), BUCKET)
    last = plan.infos[-1]
    plan.infos[-1] = wire.InstanceInfo(last.id, last.size, hashlib.md5(b"something else").hexdigest())
    tid = http.send_all(plan)
    error = assert_orthanc_error(http.commit(tid), 500, 20, last.id)
    assert [i["ID"] for i in error["Instances"]] == [last.id]
    assert _stored_md5s(plugin_server, plan.ids()) == {}


def test_incomplete_transaction_is_refused_then_can_be_completed(plugin_server, http):
    plan = plan_push(study(304, tiny=2, ct=1, ct_size=256), BUCKET)
    tid = http.create(plan)
    for index, body in enumerate(plan.bodies[1:], start=1):
        assert http.put(tid, index, body).status_code == 200
    error = assert_orthanc_error(http.commit(tid), 400, details="incomplete")
    assert error["Instances"][0]["ID"] == plan.buckets[0].chunks[0].instance_id
    assert "0" in error["Instances"][0]["Problem"]
    assert _stored_md5s(plugin_server, plan.ids()) == {}
    assert http.put(tid, 0, plan.bodies[0]).status_code == 200
    assert http.commit(tid).status_code == 200
    assert len(_stored_md5s(plugin_server, plan.ids())) == len(plan.infos)


@pytest.fixture
def overwriting_server(orthanc_factory):
    """A plugin server with Orthanc's "OverwriteInstances": a re-stored
    instance then answers "Success" as if it were new."""
    return orthanc_factory("overwriting", with_accelerator=True, extra_config={"OverwriteInstances": True})


@pytest.mark.parametrize("server_kind", ["default", "overwrite"])
def test_failed_import_removes_what_the_commit_imported_but_keeps_older_instances(server_kind, request):
    if server_kind == "default":
        plugin_server = request.getfixturevalue("plugin_server")
        http = request.getfixturevalue("http")
    else:
        from tests.server.push_helpers import PluginHttp
        plugin_server = request.getfixturevalue("overwriting_server")
        http = PluginHttp(plugin_server)
        request.addfinalizer(http.close)
    files = study(305, tiny=4)
    plugin_server.upload(files[0])  # already on the server before the push: must survive
    not_dicom = b"this is not a DICOM file" * 10
    last_id = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"
    plan = plan_push(files, BUCKET, overrides={last_id: not_dicom})
    assert plan.infos[-1].id == last_id
    tid = http.send_all(plan)
    error = assert_orthanc_error(http.commit(tid), 400, 15, last_id)
    assert "removed again" in error["Details"]
    older = next(i.id for i in plan.infos if plan.files[i.id] == files[0])
    assert set(_stored_md5s(plugin_server, plan.ids())) == {older}


def test_bucket_errors(plugin_server, http):
    plan = plan_push(study(306, tiny=3, ct=1, ct_size=256), BUCKET, "gzip")
    tid = http.create(plan)
    raw = plan.raw_bucket(0)
    assert_orthanc_error(http.put(tid, 0, gzip.compress(raw + b"x")), 500, 9, "bytes")
    assert_orthanc_error(http.put(tid, 0, gzip.compress(raw[:-1])), 500, 9)
    assert_orthanc_error(http.put(tid, 0, plan.bodies[0][:-9]), 400, 15, "truncated")
    assert_orthanc_error(http.put(tid, 0, raw), 400, 15, "gzip")
    assert_orthanc_error(http.put(tid, 0, plan.bodies[0] + plan.bodies[0]), 400, 15, "one gzip member")
    bomb = gzip.compress(bytes(50 * 1024 * 1024))  # 50 MB of zeros in ~50 KB
    assert_orthanc_error(http.put(tid, 0, bomb), 500, 9, "more than")
    assert_orthanc_error(http.put(tid, len(plan.bodies), plan.bodies[0]), 400, 3, "out of range")
    assert_orthanc_error(http.put(tid, "-1", plan.bodies[0]), 400, 8)
    assert_orthanc_error(http.put("0" * 36, 0, plan.bodies[0]), 404, 17)
    assert_orthanc_error(http.put("3f2504e0-4f89-41d3-9a0c-0305e82c3301", 0, plan.bodies[0]), 404, 17)
    wrong = http.client.get(f"{wire.URI_PUSH}/{tid}/0")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "PUT"
    wrong = http.client.put(wire.commit_uri(tid), content=b"")
    assert wrong.status_code == 405 and set(wrong.headers["allow"].split(",")) == {"GET", "POST"}
    # Still usable after all that abuse.
    for index, body in enumerate(plan.bodies):
        assert http.put(tid, index, body).status_code == 200
    assert http.commit(tid).status_code == 200


def test_delete_discards_the_transaction_and_its_files(plugin_server, http):
    plan = plan_push(study(307, tiny=2), BUCKET)
    tid = http.send_all(plan)
    assert (_staging(plugin_server) / tid).is_dir()
    answer = http.client.delete(f"{wire.URI_PUSH}/{tid}")
    assert (answer.status_code, answer.json()) == (200, {})
    assert not (_staging(plugin_server) / tid).exists()
    assert_orthanc_error(http.commit(tid), 404, 17)
    assert_orthanc_error(http.client.delete(f"{wire.URI_PUSH}/{tid}"), 404, 17)
    assert _stored_md5s(plugin_server, plan.ids()) == {}


def test_concurrent_puts_to_two_transactions(plugin_server, http):
    plans = [plan_push(study(308 + n, tiny=6, ct=2, ct_size=256), 16 * 1024, "gzip") for n in range(2)]
    tids = [http.create(p) for p in plans]
    jobs = [(tid, index, body) for tid, plan in zip(tids, plans) for index, body in enumerate(plan.bodies)]
    failures = []

    def worker(part):
        for tid, index, body in part:
            answer = http.put(tid, index, body)
            if answer.status_code != 200:
                failures.append(answer.text)

    threads = [threading.Thread(target=worker, args=(jobs[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    for tid, plan in zip(tids, plans):
        assert http.commit(tid).status_code == 200
        assert _stored_md5s(plugin_server, plan.ids()) == {i.id: i.md5 for i in plan.infos}


def test_asynchronous_commit_reports_success(plugin_server, http):
    plan = plan_push(study(311, tiny=3, ct=1, ct_size=256), BUCKET, asynchronous=True)
    assert plan.request["AsynchronousCommit"] is True
    created = http.post_json(wire.URI_PUSH, plan.request).json()
    assert created == {"ID": created["ID"], "Path": f"/transfers/push/{created['ID']}", "AsynchronousCommit": True}
    tid = http.send_all(plan)
    staging = http.client.get(wire.commit_uri(tid)).json()
    assert wire.parse_commit_status(staging).status == wire.COMMIT_STAGING
    answer = http.commit(tid)
    assert answer.status_code == 202
    assert answer.json() == {"Status": "Pending", "Path": wire.commit_uri(tid), "LongPoll": True}
    status = _wait_for_commit(http, tid)
    assert status.status == wire.COMMIT_SUCCESS and status.error is None
    assert _stored_md5s(plugin_server, plan.ids()) == {i.id: i.md5 for i in plan.infos}


def test_asynchronous_commit_reports_failure_with_the_instances(plugin_server, http):
    plan = plan_push(study(312, tiny=3), BUCKET, asynchronous=True)
    first = plan.infos[0]
    plan.infos[0] = wire.InstanceInfo(first.id, first.size, "0" * 32)
    tid = http.send_all(plan)
    assert http.commit(tid).status_code == 202
    status = _wait_for_commit(http, tid)
    assert status.status == wire.COMMIT_FAILURE
    assert status.error["OrthancStatus"] == 20 and status.error["HttpStatus"] == 500
    assert [i["ID"] for i in status.error["Instances"]] == [first.id]
    assert _stored_md5s(plugin_server, plan.ids()) == {}


def test_a_long_poll_of_the_commit_answers_once_the_outcome_is_known(plugin_server, http):
    plan = plan_push(study(319, tiny=20, ct=2, ct_size=256), BUCKET, asynchronous=True)
    tid = http.send_all(plan)
    assert http.commit(tid).json()["LongPoll"] is True
    answer = http.client.get(wire.commit_uri(tid) + "?wait=10")  # one request, no polling
    assert answer.status_code == 200
    assert wire.parse_commit_status(answer.json()).status == wire.COMMIT_SUCCESS
    assert _stored_md5s(plugin_server, plan.ids()) == {i.id: i.md5 for i in plan.infos}


def _wait_for_commit(http, tid, timeout=60.0):
    import time
    deadline = time.monotonic() + timeout
    while True:
        answer = http.client.get(wire.commit_uri(tid))
        assert answer.status_code == 200, answer.text
        status = wire.parse_commit_status(answer.json())
        if status.finished or time.monotonic() > deadline:
            return status
        time.sleep(0.05)  # polling interval of a condition wait, not a fixed delay


def test_a_zip_archive_posing_as_an_instance_is_refused(plugin_server, http):
    import io
    import zipfile

    files = study(313, tiny=3)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for n, data in enumerate(files[1:]):
            zipped.writestr(f"{n}.dcm", data)
    fake_id = "eeeeeeee-eeeeeeee-eeeeeeee-eeeeeeee-eeeeeeee"
    plan = plan_push(files[:1], BUCKET, overrides={fake_id: archive.getvalue()})
    tid = http.send_all(plan)
    error = assert_orthanc_error(http.commit(tid), 400, 15, fake_id)
    assert error["Instances"] == [{"ID": fake_id, "Problem": "a ZIP archive, not a DICOM file"}]
    zipped_ids = plan_push(files, BUCKET).ids()
    assert _stored_md5s(plugin_server, zipped_ids) == {}


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_split_instance_put_out_of_order_is_verified_at_the_commit(plugin_server, http, corrupt):
    """The pieces of a split instance hashed in the background, arriving last
    piece first: a commit sent right after the last PUT checks the whole file
    (imported when right; with one flipped byte, refused and nothing imported)."""
    from gui.sandbox import synthetic_studies as synth

    files = [synth.multiframe_instance(synth.make_study_spec(321 + corrupt, "MF OUT OF ORDER"), 3, seed=321)]
    plan = plan_push(files, BUCKET)
    assert len(plan.bodies) >= 8 and all(len(b.chunks) == 1 for b in plan.buckets)
    tid = http.create(plan)
    for index in reversed(range(len(plan.bodies))):
        body = plan.bodies[index]
        if corrupt and index == 1:
            body = bytes(body[:10]) + bytes([body[10] ^ 0x01]) + bytes(body[11:])
        assert http.put(tid, index, body).status_code == 200
    answer = http.commit(tid)
    if corrupt:
        error = assert_orthanc_error(answer, 500, 20)
        assert {i["ID"] for i in error["Instances"]} == set(plan.ids())
        assert _stored_md5s(plugin_server, plan.ids()) == {}
    else:
        assert answer.status_code == 200
        assert _stored_md5s(plugin_server, plan.ids()) == {i.id: i.md5 for i in plan.infos}
