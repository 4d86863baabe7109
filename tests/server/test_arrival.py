"""Import as it arrives (extension): early imports, still undone on failure,
on DELETE and after an Orthanc restart in the middle of a transfer."""

from __future__ import annotations

import hashlib
import time

import pytest

from gui.protocol import wire
from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, assert_orthanc_error, plan_push

BUCKET = 64 * 1024


def _create_early(http, plan) -> str:
    body = wire.build_push_request(plan.infos, plan.buckets, plan.compression, import_as_it_arrives=True)
    answer = http.post_json(wire.URI_PUSH, body)
    assert answer.status_code == 200 and answer.json()["ImportAsItArrives"] is True
    return answer.json()["ID"]


def _wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def _complete_after(plan, count: int):
    """Instances whose every bucket is among the first ``count`` buckets."""
    sent = set(range(count))
    return {i.id for i in plan.infos
            if all(n in sent for n, b in enumerate(plan.buckets) if i.id in b.instance_ids())}


@pytest.fixture
def server(orthanc_factory):
    return orthanc_factory("early", with_accelerator=True, extra_config={"Transfers": {"CommitThreadsCount": 2}})


@pytest.fixture
def http(server):
    client = PluginHttp(server)
    yield client
    client.close()


def test_instances_are_imported_as_their_buckets_arrive_and_the_commit_completes(server, http):
    plan = plan_push(study(601, tiny=30, ct=2, ct_size=256), BUCKET)
    tid = _create_early(http, plan)
    half = len(plan.buckets) // 2
    for index in range(half):
        assert http.put(tid, index, plan.bodies[index]).status_code == 200
    early = _complete_after(plan, half)
    assert early
    _wait_for(lambda: early <= set(http.instance_ids()), "the early imports")
    for index in range(half, len(plan.buckets)):
        assert http.put(tid, index, plan.bodies[index]).status_code == 200
    assert http.commit(tid).status_code == 200
    assert server.instance_md5s() == {i.id: i.md5 for i in plan.infos}


def test_a_failed_commit_removes_what_was_imported_as_it_arrived(server, http):
    files = study(602, tiny=20)
    server.upload(files[0])  # there before: must survive
    plan = plan_push(files, BUCKET)
    last = plan.infos[-1]
    plan.infos[-1] = wire.InstanceInfo(last.id, last.size, hashlib.md5(b"other bytes").hexdigest())
    tid = _create_early(http, plan)
    for index, body in enumerate(plan.bodies):
        assert http.put(tid, index, body).status_code == 200
    good = {i.id for i in plan.infos[:-1]}
    _wait_for(lambda: good <= set(http.instance_ids()), "the early imports")
    assert last.id not in http.instance_ids()  # a corrupted instance is never imported
    assert_orthanc_error(http.commit(tid), 500, 20, last.id)
    older = next(i.id for i in plan.infos if plan.files[i.id] == files[0])
    assert http.instance_ids() == [older]


def test_deleting_the_transaction_removes_what_was_imported_as_it_arrived(server, http):
    plan = plan_push(study(603, tiny=40), BUCKET)
    assert len(plan.buckets) >= 2
    tid = _create_early(http, plan)
    for index, body in enumerate(plan.bodies[:-1]):
        assert http.put(tid, index, body).status_code == 200
    _wait_for(lambda: http.instance_ids(), "an early import")
    assert http.client.delete(f"{wire.URI_PUSH}/{tid}").status_code == 200
    assert http.instance_ids() == []


def test_a_restart_mid_transfer_removes_what_was_imported_as_it_arrived(server, http):
    plan = plan_push(study(604, tiny=40), BUCKET)
    assert len(plan.buckets) >= 2
    tid = _create_early(http, plan)
    for index, body in enumerate(plan.bodies[:-1]):
        assert http.put(tid, index, body).status_code == 200
    early = _complete_after(plan, len(plan.buckets) - 1)
    _wait_for(lambda: early <= set(http.instance_ids()), "the early imports")
    server.restart()  # SIGTERM mid-transfer; the storage (and the staging journal) stays
    restarted = PluginHttp(server)
    try:
        _wait_for(lambda: restarted.instance_ids() == [], "the rollback after the restart")
        staging = server.storage_dir / "transfers-staging"
        _wait_for(lambda: not (staging / tid).exists(), "the staging directory to go")
        assert restarted.put(tid, len(plan.buckets) - 1, plan.bodies[-1]).status_code == 404
    finally:
        restarted.close()


def test_without_the_option_nothing_is_imported_before_the_commit(server, http):
    plan = plan_push(study(605, tiny=8), BUCKET)
    answer = http.post_json(wire.URI_PUSH, plan.request)
    assert "ImportAsItArrives" not in answer.json()
    tid = answer.json()["ID"]
    for index, body in enumerate(plan.bodies):
        assert http.put(tid, index, body).status_code == 200
    assert http.instance_ids() == []
    assert http.commit(tid).status_code == 200
    assert sorted(http.instance_ids()) == sorted(plan.ids())
