"""Plain mode's zero-copy relay between real stock Orthanc servers: an
instance's download spliced into its upload (plain_mode_relay.py), a gzip
answer forwarded gzip-encoded, the copy path when the relay cannot be used,
and a byte corrupted on the way caught by the target's read-back and sent
again."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple

import pytest

from gui.client import fast_http
from gui.client.peer import Peer
from gui.engine import JobState, link_probe, plain_mode
from tests.devtools.faults.http_front import Forward, FrontRequest, FrontResponse, HttpFront
from tests.devtools.netem import WanProxy
from tests.engine.helpers import make_engine, peer, run, small_options, study_resource, upload_files

# The suite runs on Linux (Debian/Ubuntu), where the relay must work: these tests fail, never skip, without it.


async def transfer(tmp_path, source: Peer, target: Peer, resources, options, **kwargs):
    engine = make_engine(tmp_path / "data", options)
    await engine.start()
    try:
        job = await engine.submit(source, target, resources, **kwargs)
        return await job.wait()
    finally:
        await engine.close()


@pytest.fixture
def moves(monkeypatch) -> Dict[str, List]:
    """What plain mode did with each instance: relayed (instance id, gzip
    asked) or downloaded into the engine (instance id)."""
    seen: Dict[str, List] = {"relayed": [], "downloaded": []}
    relay, download = plain_mode.relay_instance, plain_mode.download_instance

    async def recording_relay(source, target, pools, instance_id, *, gzip, size):
        result = await relay(source, target, pools, instance_id, gzip=gzip, size=size)
        seen["relayed"].append((instance_id, gzip))
        return result

    async def recording_download(source, instance_id, policy):
        seen["downloaded"].append(instance_id)
        return await download(source, instance_id, policy)

    monkeypatch.setattr(plain_mode, "relay_instance", recording_relay)
    monkeypatch.setattr(plain_mode, "download_instance", recording_download)
    return seen


def sizes(files: List[bytes], ids: Dict[str, str], server) -> Dict[str, int]:
    by_md5 = {hashlib.md5(f).hexdigest(): len(f) for f in files}
    return {i: by_md5[m] for i, m in server.instance_md5s().items()}


def test_instances_travelling_alone_are_relayed_and_verified(stock_pair, tmp_path, mixed_study_files, moves):
    """CT slices and a multi-frame instance larger than a bucket go socket to
    socket (never read by the engine); the tiny ones still travel as ZIPs.
    The target holds exactly the source's files."""
    source, target = stock_pair
    ids = upload_files(source, mixed_study_files)
    study = next(iter(ids.values()))
    size_of = sizes(mixed_study_files, ids, source)

    # Compression "none": a loaded machine's loopback can look distant, and
    # the engine compresses uploads to a distant target itself (no relay).
    report = run(transfer(tmp_path, peer(source), peer(target), study_resource(study),
                          small_options(BucketSize=1024), compression="none"))

    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids) and not report.resent
    assert target.instance_md5s() == source.instance_md5s()
    alone = {i for i, size in size_of.items() if size >= plain_mode.ALONE}
    assert len(alone) == 5                                  # 4 CT slices and the 6 MB instance
    assert {i for i, _gzip in moves["relayed"]} == alone
    assert not alone & set(moves["downloaded"])             # the engine never held their bytes
    assert set(moves["downloaded"]) == set(ids) - alone     # the tiny ones, as before


def test_no_relay_where_splice_is_missing(stock_pair, tmp_path, ct_study_files, moves, monkeypatch):
    """Elsewhere than on Linux (no splice) every instance takes the copy path, verified."""
    monkeypatch.setattr(fast_http, "relay_supported", lambda: False)
    source, target = stock_pair
    report, ids = transfer_ct_study(tmp_path, source, target, ct_study_files)

    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    assert target.instance_md5s() == source.instance_md5s()
    assert not moves["relayed"] and sorted(moves["downloaded"]) == sorted(ids)


def test_a_speed_limited_job_is_not_relayed(stock_pair, tmp_path, ct_study_files, moves):
    """A relay's bytes would bypass the job's cap: a capped job copies them."""
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))

    report = run(transfer(tmp_path, peer(source), peer(target), study_resource(study),
                          small_options(BucketSize=1024, MaxRate=100_000)))

    assert report.state is JobState.SUCCESS, report.error
    assert target.instance_md5s() == source.instance_md5s()
    assert not moves["relayed"] and sorted(moves["downloaded"]) == sorted(ids)


class UploadRecorder:
    """Handler of a front before the target: the Content-Encoding of every
    upload; answers ``refuse_gzip`` (a status) to gzip-encoded ones if set."""

    def __init__(self, refuse_gzip: Optional[int] = None) -> None:
        self.refuse_gzip = refuse_gzip
        self.encodings: List[Optional[str]] = []
        self.refused = 0

    async def __call__(self, request: FrontRequest, forward: Forward) -> FrontResponse:
        if request.method == "POST" and request.path == "/instances":
            encoding = request.header("content-encoding")
            self.encodings.append(encoding)
            if encoding == "gzip" and self.refuse_gzip is not None:
                self.refused += 1
                return FrontResponse.of_json(self.refuse_gzip, {"Message": "no gzip here"})
        return await forward(request)


@pytest.fixture
def far_source_near_target(monkeypatch):
    """The link probe's verdict, fixed: the source behind the 20 ms proxy is
    distant, the target near (a loaded machine's loopback can look distant)."""
    async def confirmed_distant(client):
        return client.peer.name == "far source"
    monkeypatch.setattr(plain_mode, "confirmed_distant", confirmed_distant)


async def retrieve(tmp_path, source, target, study: str, recorder: UploadRecorder) -> Tuple[object, int]:
    """Plain mode from a distant source (20 ms round trip: downloads asked
    gzip-compressed) to a near target behind ``recorder``."""
    async with WanProxy("127.0.0.1", source.http_port, latency_ms=10) as far:
        front = await HttpFront(target.url, recorder).start()
        try:
            report = await transfer(tmp_path, Peer("far source", far.url), Peer(target.name, front.url),
                                    study_resource(study), small_options(BucketSize=1024))
        finally:
            await front.stop()
        return report, far.stats.bytes_down


def test_a_gzip_answer_is_forwarded_gzip_encoded(stock_pair, tmp_path, ct_study_files, moves,
                                                 far_source_near_target):
    """From a distant source the slices come gzip-compressed; the relay hands
    them to the target as they came (Content-Encoding: gzip), and the
    target stores the source's files."""
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    recorder = UploadRecorder()

    report, bytes_down = run(retrieve(tmp_path, source, target, study, recorder))

    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    assert target.instance_md5s() == source.instance_md5s()
    assert sorted(i for i, _ in moves["relayed"]) == sorted(ids) and not moves["downloaded"]
    assert any(gzip for _, gzip in moves["relayed"])
    assert "gzip" in recorder.encodings
    assert bytes_down < 0.9 * sum(len(f) for f in ct_study_files)


def test_a_target_refusing_gzip_bodies_gets_the_files_inflated(stock_pair, tmp_path, ct_study_files, moves,
                                                               far_source_near_target):
    """A target (or a proxy before it) that refuses a gzip-encoded body: the
    job says so, and the slices arrive uncompressed, verified."""
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    recorder = UploadRecorder(refuse_gzip=415)

    report, _ = run(retrieve(tmp_path, source, target, study, recorder))

    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    assert target.instance_md5s() == source.instance_md5s()
    assert recorder.refused >= 1
    # After the refusals of the relays already under way, none is gzip-encoded.
    last_refused = max(n for n, e in enumerate(recorder.encodings) if e == "gzip")
    assert last_refused < len(recorder.encodings) - 1
    assert any("refused a gzip-encoded file" in note for note in report.notes), report.notes


def flip(data: bytes) -> bytes:
    at = len(data) * 3 // 4          # inside the pixel data
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]


def transfer_ct_study(tmp_path, source, target, files: List[bytes]) -> Tuple[Any, Dict[str, str]]:
    """Upload the CT study to ``source`` and move it in plain mode; the report and the uploaded IDs."""
    ids = upload_files(source, files)
    study = next(iter(ids.values()))
    report = run(transfer(tmp_path, peer(source), peer(target), study_resource(study),
                          small_options(BucketSize=1024)))
    return report, ids


def transfer_with_first_file_corrupted(tmp_path, source, target, study: str, retries: int,
                                       uncompressed_only: bool) -> Tuple[Any, List[str]]:
    """Plain transfer of ``study`` with one byte flipped in the first file the
    source answers (between the source and the engine); returns the report and
    the corrupted instance."""
    hits: List[str] = []

    async def corrupt_first_file(request: FrontRequest, forward: Forward) -> FrontResponse:
        response = await forward(request)
        if not hits and request.path.endswith("/file") and response.status == 200 \
                and not (uncompressed_only and response.header("content-encoding")):
            hits.append(request.path.split("/")[2])
            response.body = flip(response.body)
        return response

    async def go():
        front = await HttpFront(source.url, corrupt_first_file).start()
        try:
            return await transfer(tmp_path, Peer(source.name, front.url), peer(target),
                                  study_resource(study), small_options(BucketSize=1024, MaxHttpRetries=retries),
                                  compression="none")
        finally:
            await front.stop()

    return run(go()), hits


def test_a_byte_corrupted_in_a_relay_is_caught_by_the_read_back_and_sent_again(stock_pair, tmp_path,
                                                                              ct_study_files, moves):
    """The engine does not hash a relayed file: a byte flipped on its way from
    the source reaches the target. The target's MD5, read back, differs from
    the source's: that copy is deleted and the instance sent again (by the
    copy path, which checks what it downloads); the job ends verified."""
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    report, hits = transfer_with_first_file_corrupted(tmp_path, source, target, study, 2,
                                                     uncompressed_only=True)

    assert hits, "no file was corrupted"
    assert hits[0] in {i for i, _ in moves["relayed"]}
    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    assert target.instance_md5s() == source.instance_md5s()
    resent = report.to_json()["resent"]
    assert [r["instance"] for r in resent] == hits
    assert "read back from the target" in resent[0]["reasons"][0] and "MD5" in resent[0]["reasons"][0]
    assert moves["downloaded"] == hits          # the second time, through the engine's own check


def test_without_a_re_send_budget_a_corrupted_relay_fails_and_rolls_back(stock_pair, tmp_path,
                                                                        ct_study_files, moves):
    """MaxHttpRetries 0: the bad copy is reported and the job rolled back."""
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))
    report, hits = transfer_with_first_file_corrupted(tmp_path, source, target, study, 0,
                                                     uncompressed_only=False)

    assert hits and report.state is JobState.FAILURE
    failure = report.to_json()["failures"][0]
    assert failure["instance"] == hits[0] and "MD5 mismatch" in failure["reason"]
    assert target.instance_md5s() == {}


def test_a_near_target_that_first_looked_distant_still_gets_relays(stock_pair, tmp_path, ct_study_files,
                                                                  moves, monkeypatch):
    """On a loaded machine a loopback server's first round trips can take
    10 ms or more: plain mode asks again before believing the target is
    distant (which would have the engine gzip every upload, no relay)."""
    async def looks_distant_at_first(client):
        client.fastest_small_request = 0.015     # the job's small requests so far, as on a loaded machine
        return await link_probe.confirmed_distant(client)
    monkeypatch.setattr(plain_mode, "confirmed_distant", looks_distant_at_first)
    source, target = stock_pair
    report, ids = transfer_ct_study(tmp_path, source, target, ct_study_files)

    assert report.state is JobState.SUCCESS, report.error
    assert target.instance_md5s() == source.instance_md5s()
    assert sorted(i for i, _ in moves["relayed"]) == sorted(ids) and report.compression == "none"


def test_a_near_source_is_never_asked_for_gzip_in_a_relay(stock_pair, tmp_path, ct_study_files, moves,
                                                          monkeypatch):
    """Between two near servers a relay's gzip could shorten no link (the
    engine does not compress towards a near target, so it relays), and each
    gzip answer costs the source a deflate. Even a compression policy that
    would try gzip on every download (as its probes did on the LAN) gets
    no relay asked compressed."""
    async def near(client):
        return False
    monkeypatch.setattr(plain_mode, "confirmed_distant", near)
    monkeypatch.setattr(plain_mode.PullCompressionPolicy, "choose", lambda self: "gzip")
    source, target = stock_pair
    report, ids = transfer_ct_study(tmp_path, source, target, ct_study_files)

    assert report.state is JobState.SUCCESS, report.error
    assert target.instance_md5s() == source.instance_md5s()
    assert sorted(i for i, _ in moves["relayed"]) == sorted(ids)
    assert not [i for i, gzip in moves["relayed"] if gzip]
