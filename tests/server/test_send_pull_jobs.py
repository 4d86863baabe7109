"""POST /transfers/send and /transfers/pull: jobs run by our plugin between real servers.

Three Orthanc servers per module: ``src`` and ``dst`` run the plugin and know
each other as peers (``dst`` also under a name with ``RemoteSelf``), ``stock``
has no plugin. Buckets are small (4 KB) and one worker sends them, so a job
of a few dozen instances has many steps to pause between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

from gui.protocol import wire
from gui.sandbox.orthanc_process import OrthancProcess, free_port
from tests.server.conftest import study

TERMINAL = ("Success", "Failure")
JOB_KEYS = {"ID", "Type", "State", "Progress", "Priority", "CreationTime", "EffectiveRuntime",
            "ErrorCode", "ErrorDescription", "Timestamp", "Content"}


@pytest.fixture(scope="module")
def servers() -> Iterator[Dict[str, OrthancProcess]]:
    ports = {name: free_port() for name in ("src", "dst", "stock")}
    url = {name: "http://127.0.0.1:%d" % port for name, port in ports.items()}
    transfers = {"BucketSize": 4, "Threads": 1}
    stock = OrthancProcess(name="stock", http_port=ports["stock"]).start()
    dst = OrthancProcess(name="dst", with_accelerator=True, http_port=ports["dst"], extra_config={
        "OrthancPeers": {"src": {"Url": url["src"]}}, "Transfers": transfers}).start()
    src = OrthancProcess(name="src", with_accelerator=True, http_port=ports["src"], keep_storage=True,
                         extra_config={"OrthancPeers": {
                             "dst": {"Url": url["dst"]},
                             "dst-pulls": {"Url": url["dst"], "RemoteSelf": "src"},
                             "stock": [url["stock"]],
                             "gone": ["http://127.0.0.1:%d" % free_port()],
                         }, "Transfers": transfers}).start()
    started = {"src": src, "dst": dst, "stock": stock}
    yield started
    for server in started.values():
        server.keep_storage = False
        server.stop()


@pytest.fixture
def clean(servers) -> Dict[str, OrthancProcess]:
    """Every test starts with empty servers."""
    for server in servers.values():
        for instance_id in server.request("GET", "/instances") or []:
            server.request("DELETE", "/instances/%s" % instance_id)
    return servers


def upload(server: OrthancProcess, files: List[bytes]) -> str:
    """Upload a study; its Orthanc ID."""
    answer = None
    for data in files:
        answer = server.upload(data)
    assert answer is not None
    return answer["ParentStudy"]


def post(server: OrthancProcess, path: str, body: Any) -> Any:
    return server.request("POST", path, json.dumps(body).encode())


def post_status(server: OrthancProcess, path: str, body: Any) -> tuple:
    """(status, JSON body) without raising on errors."""
    import urllib.error
    try:
        return 200, post(server, path, body)
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, json.loads(data) if data else None


def wait_job(server: OrthancProcess, job_id: str, states=TERMINAL, timeout: float = 60.0) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = server.request("GET", "/jobs/%s" % job_id)
        if job["State"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def job_after_restart(server: OrthancProcess, job_id: str, timeout: float = 30.0) -> Dict[str, Any]:
    """The job as the restarted server lists it. Once (in CI, under load) a
    job paused before the restart was not found right after it: this waits
    for it to be listed, and if it never is, the failure shows what the
    server logged."""
    import urllib.error
    deadline = time.monotonic() + timeout
    while True:
        try:
            return server.request("GET", "/jobs/%s" % job_id)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        if time.monotonic() >= deadline:
            log = server.log_path.read_text(errors="replace").splitlines()
            pytest.fail("job %s not listed %.0f s after the restart; the server's log ends with:\n%s"
                        % (job_id, timeout, "\n".join(log[-40:])))
        time.sleep(0.05)


def send(server: OrthancProcess, peer: str, resources: List[Dict[str, str]], compression: str = "none",
         **extra: Any) -> Dict[str, Any]:
    body = {"Resources": resources, "Compression": compression, "Peer": peer}
    body.update(extra)
    return post(server, "/transfers/send", body)


def study_ref(study_id: str) -> List[Dict[str, str]]:
    return [{"Level": "Study", "ID": study_id}]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_send_pushes_to_a_peer_with_the_plugin(clean, compression):
    src, dst = clean["src"], clean["dst"]
    study_id = upload(src, study(21, tiny=6, ct=3, ct_size=96))
    answer = send(src, "dst", study_ref(study_id), compression, SenderTransferID="my-transfer")
    assert set(answer) == {"ID", "Path"} and answer["Path"] == "/jobs/" + answer["ID"]
    job = wait_job(src, answer["ID"])
    assert job["State"] == "Success", job["ErrorDescription"]
    assert dst.instance_md5s() == src.instance_md5s()
    assert JOB_KEYS <= set(job) and job["Type"] == "PushTransfer" and job["Progress"] == 100
    content = job["Content"]
    assert content["Peer"] == "dst" and content["Compression"] == compression
    assert content["Resources"] == study_ref(study_id) and content["TotalInstances"] == 9
    assert content["Mode"] == "push" and content["SenderTransferID"] == "my-transfer"
    # gzip between two servers with this plugin: the split16-gzip codec, negotiated.
    assert content.get("Codec") == ("split16-gzip" if compression == "gzip" else None)
    assert content["Commitment"] == {"Verified": 9, "AlreadyOnPeer": 0, "Pending": 0, "Problems": []}
    for key in ("TotalSizeMB", "UploadedSizeMB", "CompletedHttpQueries", "NetworkSpeedKBs"):
        assert isinstance(content[key], int), key
    # Listed with Orthanc's own jobs, and alone under /transfers/jobs.
    assert answer["ID"] in src.request("GET", "/jobs")
    assert any(j["ID"] == answer["ID"] for j in src.request("GET", "/jobs?expand"))
    assert [j["ID"] for j in src.request("GET", "/transfers/jobs")][-1] == answer["ID"]


def test_send_skips_what_the_peer_already_has(clean):
    src, dst = clean["src"], clean["dst"]
    files = study(22, tiny=4)
    study_id = upload(src, files)
    upload(dst, files[:2])
    job = wait_job(src, send(src, "dst", study_ref(study_id))["ID"])
    assert job["State"] == "Success"
    assert job["Content"]["Commitment"]["AlreadyOnPeer"] == 2
    assert job["Content"]["Commitment"]["Verified"] == 2
    assert dst.instance_md5s() == src.instance_md5s()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_send_to_a_stock_peer_posts_instances_and_checks_md5s(clean, compression):
    src, stock = clean["src"], clean["stock"]
    study_id = upload(src, study(23, tiny=3, ct=2, ct_size=96))
    job = wait_job(src, send(src, "stock", study_ref(study_id), compression)["ID"])
    assert job["State"] == "Success", job["ErrorDescription"]
    assert job["Content"]["Mode"] == "plain"
    assert job["Content"]["Commitment"]["Verified"] == 5
    assert stock.instance_md5s() == src.instance_md5s()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_pull_fetches_chunks_checks_md5s_and_imports(clean, compression):
    src, dst = clean["src"], clean["dst"]
    study_id = upload(src, study(24, tiny=5, ct=2, ct_size=200))   # CT slices split over buckets
    answer = post(dst, "/transfers/pull", {"Resources": study_ref(study_id), "Compression": compression,
                                           "Peer": "src"})
    assert set(answer) == {"ID", "Path"}
    job = wait_job(dst, answer["ID"])
    assert job["State"] == "Success", job["ErrorDescription"]
    assert job["Type"] == "PullTransfer" and job["Content"]["Mode"] == "pull"
    # gzip between two servers with this plugin: a codec (the source's choice per answer), negotiated.
    codec = job["Content"].get("Codec")
    assert codec in wire.CODECS if compression == "gzip" else codec is None
    assert isinstance(job["Content"]["DownloadedSizeMB"], int)
    assert job["Content"]["Commitment"]["Verified"] == 7
    assert dst.instance_md5s() == src.instance_md5s()


def test_send_to_a_remote_self_peer_asks_it_to_pull(clean):
    src, dst = clean["src"], clean["dst"]
    study_id = upload(src, study(25, tiny=4))
    answer = send(src, "dst-pulls", study_ref(study_id), "gzip")
    assert set(answer) == {"Peer", "RemoteJob", "URL"} and answer["Peer"] == "dst-pulls"
    assert answer["URL"] == "%s/jobs/%s" % (dst.url, answer["RemoteJob"])
    job = wait_job(dst, answer["RemoteJob"])
    assert job["State"] == "Success", job["ErrorDescription"]
    assert job["Type"] == "PullTransfer" and job["Content"]["Peer"] == "src"
    assert job["Content"]["Originator"]   # src's plugin, checked against src's lookup
    assert dst.instance_md5s() == src.instance_md5s()


# --- bad input ----------------------------------------------------------------------

def test_unknown_peer_is_a_404_naming_it(clean):
    status, body = post_status(clean["src"], "/transfers/send", {
        "Resources": [{"Level": "Study", "ID": "0" * 8 + "-00000000" * 4}], "Compression": "none",
        "Peer": "nowhere"})
    assert status == 404 and "'nowhere'" in body["Details"] and "'dst'" in body["Details"]
    status, body = post_status(clean["src"], "/transfers/pull", {"Resources": [], "Peer": "dst"})
    assert status == 400 and "empty" in body["Details"]
    status, body = post_status(clean["src"], "/transfers/send", {"Resources": [], "Compression": "zip"})
    assert status == 400


def test_missing_resource_fails_the_job_in_words(clean):
    src = clean["src"]
    job = wait_job(src, send(src, "dst", study_ref("12345678-" + "abcdef01-" * 3 + "23456789"))["ID"])
    assert job["State"] == "Failure"
    assert "is not on this server" in job["ErrorDescription"] and "study" in job["ErrorDescription"]
    assert clean["dst"].instance_md5s() == {}


def test_peer_refusing_the_credentials_fails_the_job(orthanc_factory, clean):
    locked = orthanc_factory("locked", with_accelerator=True, username="alice", password="secret")
    src = clean["src"]
    src.request("PUT", "/peers/locked", json.dumps({"Url": locked.url}).encode())   # no credentials
    study_id = upload(src, study(26, tiny=2))
    job = wait_job(src, send(src, "locked", study_ref(study_id))["ID"])
    assert job["State"] == "Failure"
    assert "refused the credentials" in job["ErrorDescription"] and "401" in job["ErrorDescription"]
    assert job["ErrorCode"] == 29     # Orthanc's "Unauthorized"
    assert locked.instance_md5s() == {}


def test_pull_of_a_resource_the_peer_lacks_fails_in_words(clean):
    dst = clean["dst"]
    answer = post(dst, "/transfers/pull", {"Resources": study_ref("12345678-" + "abcdef01-" * 3 + "23456789"),
                                           "Compression": "none", "Peer": "src"})
    job = wait_job(dst, answer["ID"])
    assert job["State"] == "Failure" and "does not have" in job["ErrorDescription"]


def test_unreachable_peer_fails_the_job_in_words(clean):
    src = clean["src"]
    study_id = upload(src, study(27, tiny=2))
    job = wait_job(src, send(src, "gone", study_ref(study_id))["ID"])
    assert job["State"] == "Failure"
    assert "'gone'" in job["ErrorDescription"] and "cannot be reached" in job["ErrorDescription"]
    assert job["ErrorCode"] == 9      # Orthanc's "Error in the network protocol"


# --- control ------------------------------------------------------------------------

def pause_midway(server: OrthancProcess, job_id: str, done: str = "SentBuckets",
                 total: str = "TotalBuckets") -> Dict[str, Any]:
    """Pause a running job once it has sent at least one bucket (or, in plain mode,
    instance); its state once paused."""
    deadline = time.monotonic() + 60
    while True:
        job = server.request("GET", "/jobs/%s" % job_id)
        if job["Content"].get(done, 0) >= 1 or job["State"] in TERMINAL:
            break
        assert time.monotonic() < deadline, job
    post(server, "/jobs/%s/pause" % job_id, {})
    paused = wait_job(server, job_id, ("Paused",) + TERMINAL)
    assert paused["State"] == "Paused", paused
    assert 1 <= paused["Content"][done] < paused["Content"][total]
    return paused


def test_cancelled_plain_send_removes_what_it_had_added(clean):
    src, stock = clean["src"], clean["stock"]
    files = study(32, tiny=80)
    study_id = upload(src, files)
    upload(stock, files[:1])      # was there before: stays
    before = stock.instance_md5s()
    job_id = send(src, "stock", study_ref(study_id))["ID"]
    pause_midway(src, job_id, "PostedInstances", "TotalToPost")
    assert len(stock.instance_md5s()) > 1
    post(src, "/jobs/%s/cancel" % job_id, {})
    assert wait_job(src, job_id)["ErrorCode"] == 37
    assert stock.instance_md5s() == before


def test_pause_resume_cancel_and_resubmit(clean):
    src, dst = clean["src"], clean["dst"]
    study_id = upload(src, study(28, tiny=80))
    job_id = send(src, "dst", study_ref(study_id))["ID"]
    pause_midway(src, job_id)
    assert dst.instance_md5s() == {}     # nothing imported before the commit
    post(src, "/jobs/%s/cancel" % job_id, {})
    cancelled = wait_job(src, job_id)
    assert cancelled["State"] == "Failure" and cancelled["ErrorDescription"] == "Job was canceled"
    assert cancelled["ErrorCode"] == 37
    assert dst.instance_md5s() == {}
    status, body = post_status(src, "/jobs/%s/pause" % job_id, {})
    assert status == 400 and "Failure" in body["Details"]
    post(src, "/jobs/%s/resubmit" % job_id, {})
    done = wait_job(src, job_id)
    assert done["State"] == "Success", done["ErrorDescription"]
    assert dst.instance_md5s() == src.instance_md5s()
    status, body = post_status(src, "/jobs/%s/resubmit" % job_id, {})
    assert status == 400 and "only failed jobs" in body["Details"]


def test_unknown_job_is_404_and_orthanc_jobs_still_answer(clean):
    src = clean["src"]
    status, body = post_status(src, "/jobs/transfers-00000000-0000-0000-0000-000000000000/pause", {})
    assert status == 404 and "unknown job" in body["Details"]
    # Orthanc's own job routes are untouched: an archive job is created and listed.
    study_id = upload(src, study(29, tiny=1))
    orthanc_job = post(src, "/studies/%s/archive" % study_id, {"Asynchronous": True})["ID"]
    assert src.request("GET", "/jobs/%s" % orthanc_job)["Type"] == "Archive"
    assert orthanc_job in src.request("GET", "/jobs")


def test_peer_gone_mid_job_fails_and_imports_nothing(orthanc_factory, clean):
    src = clean["src"]
    victim = orthanc_factory("victim", with_accelerator=True)
    src.request("PUT", "/peers/victim", json.dumps({"Url": victim.url}).encode())
    study_id = upload(src, study(30, tiny=80))
    job_id = send(src, "victim", study_ref(study_id))["ID"]
    pause_midway(src, job_id)
    victim.stop()
    post(src, "/jobs/%s/resume" % job_id, {})
    job = wait_job(src, job_id)
    assert job["State"] == "Failure"
    assert "'victim'" in job["ErrorDescription"] and "cannot be reached" in job["ErrorDescription"]


def test_jobs_survive_a_restart_paused_and_resume_without_resending(clean):
    src, dst = clean["src"], clean["dst"]
    study_id = upload(src, study(31, tiny=80))
    job_id = send(src, "dst", study_ref(study_id))["ID"]
    paused = pause_midway(src, job_id)
    acknowledged = paused["Content"]["SentBuckets"]
    src.restart()
    back = job_after_restart(src, job_id)
    assert back["State"] == "Paused" and back["Content"]["SentBuckets"] == acknowledged
    post(src, "/jobs/%s/resume" % job_id, {})
    done = wait_job(src, job_id)
    assert done["State"] == "Success", done["ErrorDescription"]
    assert done["Content"]["ResumedFromBucket"] == acknowledged
    assert dst.instance_md5s() == src.instance_md5s()


def test_orthanc_explorer_gets_the_transfers_button(clean):
    script = clean["src"].request("GET", "/plugins/explorer.js", raw=True).decode()
    assert "Transfers accelerator" in script
    for uri in ("../transfers/peers", "../transfers/send", "../jobs/"):
        assert uri in script
    for page in ("patient", "study", "series"):
        assert "%s: '%s'" % (page, page.capitalize()) in script


def test_stopping_orthanc_pauses_a_running_job_at_once(clean):
    """Orthanc's shutdown does not wait for the job: it comes back paused, and goes on."""
    src, dst = clean["src"], clean["dst"]
    study_id = upload(src, study(33, tiny=600))
    job_id = send(src, "dst", study_ref(study_id))["ID"]
    deadline = time.monotonic() + 60
    while src.request("GET", "/jobs/%s" % job_id)["Content"].get("SentBuckets", 0) < 1:
        assert time.monotonic() < deadline
    src.restart()
    back = job_after_restart(src, job_id)
    assert back["State"] == "Paused", back
    assert 1 <= back["Content"]["SentBuckets"] < back["Content"]["TotalBuckets"]
    post(src, "/jobs/%s/resume" % job_id, {})
    done = wait_job(src, job_id)
    assert done["State"] == "Success", done["ErrorDescription"]
    assert done["Content"]["ResumedFromBucket"] == back["Content"]["SentBuckets"]
    assert dst.instance_md5s() == src.instance_md5s()


def test_pull_survives_its_staging_transaction_being_discarded(orthanc_factory, clean):
    """A paused pull's staging transaction may be discarded as least recently used
    (MaxPushTransactions): on resume the job stages everything again and succeeds."""
    src = clean["src"]
    puller = orthanc_factory("puller", with_accelerator=True, extra_config={
        "OrthancPeers": {"src": {"Url": src.url}}, "Transfers": {"BucketSize": 4, "Threads": 1,
                                                                    "MaxPushTransactions": 1}})
    study_id = upload(src, study(34, tiny=80))
    job_id = post(puller, "/transfers/pull", {"Resources": study_ref(study_id), "Compression": "none",
                                              "Peer": "src"})["ID"]
    pause_midway(puller, job_id, "ReceivedBuckets")
    other = post(puller, "/transfers/push", {"Instances": [], "Buckets": [], "Compression": "none"})
    assert other["ID"]                    # the only transaction allowed now: ours was discarded
    post(puller, "/jobs/%s/resume" % job_id, {})
    done = wait_job(puller, job_id)
    assert done["State"] == "Success", done["ErrorDescription"]
    assert done["Content"]["ResumedFromBucket"] == 0
    assert puller.instance_md5s() == src.instance_md5s()


# --- what travels: headers, cookies, retries (seen by a front before the peer) --------

@contextlib.contextmanager
def front_before(upstream: str, handler):
    """An HttpFront (tests/devtools/faults) on its own event loop thread."""
    from tests.devtools.faults.http_front import HttpFront
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: Dict[str, Any] = {}

    async def serve() -> None:
        front = HttpFront(upstream, handler)
        await front.start()
        holder["front"], holder["stop"] = front, asyncio.Event()
        started.set()
        await holder["stop"].wait()
        await front.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield holder["front"]
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
        loop.close()


def test_send_carries_the_transfer_id_replays_the_cookie_and_retries(orthanc_factory, clean):
    from tests.devtools.faults.http_front import FrontResponse
    dst = clean["dst"]
    seen: List[Any] = []
    failed: List[str] = []

    async def handler(request, forward):
        seen.append(request)
        if request.method == "PUT" and not failed:
            failed.append(request.path)
            return FrontResponse.of_json(503, {"Message": "busy"})   # retried (MaxHttpRetries 1)
        answer = await forward(request)
        if request.method == "POST" and request.path == "/transfers/push":
            answer.headers.append(("Set-Cookie", "route=node-2; Path=/; HttpOnly"))
        return answer

    with front_before(dst.url, handler) as front:
        src = orthanc_factory("sender", with_accelerator=True, extra_config={
            "OrthancPeers": {"lb": {"Url": front.url, "HttpHeaders": {"X-Site": "north"}}},
            "Transfers": {"BucketSize": 4, "Threads": 2, "MaxHttpRetries": 1}})
        study_id = upload(src, study(35, tiny=6))
        job = wait_job(src, send(src, "lb", study_ref(study_id), SenderTransferID="tid-35")["ID"])
    assert job["State"] == "Success", job["ErrorDescription"]
    assert dst.instance_md5s() == src.instance_md5s()
    assert failed and sum(1 for r in seen if r.path == failed[0]) == 2
    creation = next(n for n, r in enumerate(seen) if r.method == "POST" and r.path == "/transfers/push")
    for request in seen:
        assert request.header("X-Site") == "north"
    for request in seen[creation + 1:]:
        if request.path.startswith("/transfers/push/"):
            assert request.header("Cookie") == "route=node-2", (request.method, request.path)
    for request in seen:
        if request.path in ("/transfers/lookup", "/transfers/push") or request.path.startswith("/transfers/push/"):
            assert request.header("sender-transfer-id") == "tid-35", request.path


def test_gzip_send_to_a_peer_without_the_codec_sends_plain_gzip(orthanc_factory, clean):
    """A peer that does not honour the codec (the C++ plugin, or ours with "Codecs": [])
    gets gzip, as the protocol says."""
    src = clean["src"]
    plain_gzip = orthanc_factory("gzip-only", with_accelerator=True, extra_config={"Transfers": {"Codecs": []}})
    src.request("PUT", "/peers/gzip-only", json.dumps({"Url": plain_gzip.url}).encode())
    study_id = upload(src, study(36, tiny=2, ct=2, ct_size=200))
    job = wait_job(src, send(src, "gzip-only", study_ref(study_id), "gzip")["ID"])
    assert job["State"] == "Success", job["ErrorDescription"]
    assert job["Content"].get("Codec") is None
    assert plain_gzip.instance_md5s() == src.instance_md5s()
