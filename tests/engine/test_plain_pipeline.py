"""Plain mode's pipeline between real stock Orthanc servers: compressed uploads,
the fallback when a server in front refuses them or concurrent uploads,
rollback while several uploads are in flight."""

from __future__ import annotations

import asyncio
import json
from typing import Callable, List, Optional, Tuple

import pytest

from gui.client.orthanc_client import OrthancClient
from gui.client.peer import Peer
from gui.engine import BucketState, JobState, TransferMode
from gui.sandbox import synthetic_studies as synth
from tests.devtools.netem import WanProxy
from tests.engine.helpers import make_engine, peer, run, small_options, study_resource, upload_files, wait_for


async def transfer(tmp_path, source, target: Peer, resources, options, **kwargs):
    engine = make_engine(tmp_path / "data", options)
    await engine.start()
    try:
        job = await engine.submit(peer(source), target, resources, **kwargs)
        return await job.wait()
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def small_ct_files() -> List[bytes]:
    """30 CT slices of 128x128: several per upload, so they travel as ZIPs."""
    spec = synth.make_study_spec(71, "CT SMALL")
    return list(synth.ct_series(spec, 30, rows=128, cols=128, seed=71))


def study_files(request, kind: str) -> List[bytes]:
    return request.getfixturevalue("small_ct_files" if kind == "zip" else "ct_study_files")


@pytest.fixture
def recorded_uploads(monkeypatch) -> List[Tuple[Optional[str], bytes]]:
    """(Content-Encoding, first bytes) of every upload body the engine sends."""
    seen: List[Tuple[Optional[str], bytes]] = []
    original = OrthancClient.upload

    async def upload(self, data, *, content_encoding=None, timeout=None):
        seen.append((content_encoding, bytes(data[:4])))
        return await original(self, data, content_encoding=content_encoding, timeout=timeout)

    monkeypatch.setattr(OrthancClient, "upload", upload)
    return seen


def is_deflated_zip(head: bytes, body: bytes) -> bool:
    # Local file header: "PK\x03\x04", then version (2 bytes), flags (2), method (2): 8 = deflate.
    return head == b"PK\x03\x04" and body[8:10] == b"\x08\x00"


@pytest.mark.parametrize("kind", ["zip", "single-files"])
def test_compressed_uploads_arrive_intact(stock_pair, tmp_path, request, recorded_uploads, kind):
    """Deflated ZIPs and gzip-encoded single files: Orthanc stores exactly the
    source's files (same MD5s), and fewer bytes crossed the link."""
    files = study_files(request, kind)
    source, target = stock_pair
    ids = upload_files(source, files)
    study = next(iter(ids.values()))

    async def go():
        async with WanProxy("127.0.0.1", target.http_port) as proxy:
            report = await transfer(tmp_path, source, Peer(target.name, proxy.url), study_resource(study),
                                    small_options(BucketSize=4096), compression="gzip")
            return report, proxy.stats.bytes_up

    report, bytes_up = run(go())
    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids) and report.compression == "gzip"
    assert target.instance_md5s() == source.instance_md5s()
    assert bytes_up < 0.8 * sum(len(f) for f in files)     # compressed on the wire
    if kind == "zip":
        assert len(recorded_uploads) < len(files)
        assert all(head == b"PK\x03\x04" and enc is None for enc, head in recorded_uploads)
    else:
        assert recorded_uploads and all(enc == "gzip" for enc, _ in recorded_uploads)


class Front:
    """A reverse proxy in front of a real Orthanc that refuses some uploads,
    as an older server or a strict proxy would: ``refuse(headers, body,
    uploads in flight)`` gives the status to answer instead, or None."""

    def __init__(self, upstream_port: int,
                 refuse: Callable[[dict, bytes, int], Optional[int]]) -> None:
        self.upstream_port = upstream_port
        self.refuse = refuse
        self.refused: List[int] = []
        self.in_flight = 0
        self.server: Optional[asyncio.AbstractServer] = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> "Front":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @staticmethod
    async def _message(reader: asyncio.StreamReader) -> Tuple[bytes, dict, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return head, headers, body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while True:
                try:
                    head, headers, body = await self._message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                upload = head.startswith(b"POST /instances ")
                status = self.refuse(headers, body, self.in_flight) if upload else None
                if status is not None:
                    self.refused.append(status)
                    answer = json.dumps({"Message": "refused by the front", "HttpStatus": status}).encode()
                    writer.write(b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (status, len(answer), answer))
                    await writer.drain()
                    continue
                self.in_flight += upload
                try:
                    up_writer.write(head + body)
                    await up_writer.drain()
                    answer_head, _, answer_body = await self._message(up_reader)
                finally:
                    self.in_flight -= upload
                writer.write(answer_head + answer_body)
                await writer.drain()
        finally:
            up_writer.close()
            writer.close()


def refuse_compressed(headers: dict, body: bytes, _in_flight: int) -> Optional[int]:
    if headers.get("content-encoding") == "gzip":
        return 415
    if is_deflated_zip(body[:4], body):
        return 400          # what an Orthanc without deflate support says: bad file format
    return None


@pytest.mark.parametrize("kind", ["zip", "single-files"])
def test_a_server_refusing_compressed_uploads_gets_them_uncompressed(stock_pair, tmp_path, request, kind):
    files = study_files(request, kind)
    source, target = stock_pair
    ids = upload_files(source, files)
    study = next(iter(ids.values()))

    async def go():
        async with Front(target.http_port, refuse_compressed) as front:
            report = await transfer(tmp_path, source, Peer(target.name, front.url), study_resource(study),
                                    small_options(BucketSize=4096), compression="gzip")
            return report, front.refused

    report, refused = run(go())
    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    assert target.instance_md5s() == source.instance_md5s()
    # Refused once per body already compressed when the first answer came
    # (uploads run concurrently), then no more compressed bodies.
    assert 1 <= len(refused) <= 8
    assert any("refused" in note and "uncompressed" in note for note in report.notes), report.notes
    assert report.to_json()["notes"] == report.notes


def test_a_server_refusing_concurrent_uploads_gets_them_one_by_one(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files)
    study = next(iter(ids.values()))

    def one_at_a_time(_headers, _body, in_flight: int) -> Optional[int]:
        return 503 if in_flight >= 1 else None

    async def go():
        async with Front(target.http_port, one_at_a_time) as front:
            report = await transfer(tmp_path, source, Peer(target.name, front.url), study_resource(study),
                                    small_options(BucketSize=1024, MaxHttpRetries=8))
            return report, front.refused

    report, refused = run(go())
    assert report.state is JobState.SUCCESS, report.error
    assert report.verified == len(ids)
    assert target.instance_md5s() == source.instance_md5s()
    assert refused and set(refused) == {503}
    assert any("503" in note and "at once" in note for note in report.notes), report.notes


def test_cancel_with_uploads_in_flight_leaves_the_target_as_before(stock_pair, tmp_path, long_study_files):
    """Several uploads are in flight when the user cancels: every instance
    the job created is deleted, the one the target held before stays."""
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    upload_files(target, long_study_files[:1])
    before = target.instance_md5s()

    async def go():
        # 20 ms each way: uploads overlap long enough to be caught in flight.
        async with WanProxy("127.0.0.1", target.http_port, latency_ms=20) as proxy:
            engine = make_engine(tmp_path / "data", small_options(BucketSize=1024))
            await engine.start()
            try:
                job = await engine.submit(peer(source), Peer(target.name, proxy.url), study_resource(study))
                await wait_for(lambda: sum(b.state is BucketState.SENDING for b in job.buckets) >= 2
                               and any(b.state is BucketState.DONE for b in job.buckets),
                               what="two uploads in flight after one done")
                await engine.cancel(job.id)
                return await job.wait()
            finally:
                await engine.close()

    report = run(go())
    assert report.state is JobState.CANCELED
    assert report.mode is TransferMode.PLAIN
    assert target.instance_md5s() == before
