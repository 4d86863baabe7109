"""The async Orthanc client against real Orthanc servers."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import io
import socket
import threading
import zipfile

import pytest

from gui.client import OrthancClient, OrthancError, Peer, PeerConfigError
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import free_port


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def loaded_server(orthanc_factory):
    """A stock Orthanc with three studies of different patients, dates and modalities."""
    server = orthanc_factory("browse")
    for seed, desc in ((11, "CT CHEST"), (12, "CT HEAD"), (13, "CT ABDOMEN")):
        spec = synth.make_study_spec(seed, desc)
        for data in synth.ct_series(spec, 2, rows=64, cols=64, seed=seed):
            server.upload(data)
        for data in synth.tiny_instances(spec, 2, seed=seed):
            server.upload(data)
    return server


def client_for(server, **kwargs) -> OrthancClient:
    return OrthancClient(Peer(server.name, server.url, username=server.username,
                              password=server.password), **kwargs)


def test_server_info_and_no_accelerator_on_stock_orthanc(loaded_server):
    async def scenario():
        async with client_for(loaded_server) as client:
            info = await client.system()
            accel = await client.accelerator()
            return info, accel
    info, accel = run(scenario())
    assert info.version.startswith("1.")
    assert info.name == "browse"
    assert accel.available is False and accel.flavour == ""


def test_search_studies_by_tags_and_paging(loaded_server):
    spec = synth.make_study_spec(12, "CT HEAD")

    async def scenario():
        async with client_for(loaded_server) as client:
            everything = await client.search_studies()
            by_accession = await client.search_studies(accession=spec.accession)
            by_name = await client.search_studies(patient_name=spec.patient_name.split("^")[0].lower())
            by_date = await client.search_studies(date_from=spec.study_date, date_to=spec.study_date)
            by_modality = await client.search_studies(modality="CT")
            first = await client.search_studies(limit=2)
            rest = await client.search_studies(limit=2, since=2)
            return everything, by_accession, by_name, by_date, by_modality, first, rest

    everything, by_accession, by_name, by_date, by_modality, first, rest = run(scenario())
    assert len(everything) == 3
    assert [s["MainDicomTags"]["AccessionNumber"] for s in by_accession] == [spec.accession]
    assert spec.study_uid in {s["MainDicomTags"]["StudyInstanceUID"] for s in by_name}
    assert spec.study_uid in {s["MainDicomTags"]["StudyInstanceUID"] for s in by_date}
    assert len(by_modality) == 3
    assert len(first) == 2 and len(rest) == 1
    assert {s["ID"] for s in first + rest} == {s["ID"] for s in everything}


def test_children_instances_md5_and_download(loaded_server):
    async def scenario():
        async with client_for(loaded_server) as client:
            study = (await client.search_studies(accession="ACC000011"))[0]
            series = await client.children("Study", study["ID"])
            instances = await client.instances_of("Study", study["ID"])
            one = instances[0]["ID"]
            md5 = await client.instance_md5(one)
            data = await client.download_instance(one)
            missing = await client.instance_md5_or_none("00000000-00000000-00000000-00000000-00000000")
            return series, instances, md5, data, missing

    series, instances, md5, data, missing = run(scenario())
    assert len(series) == 2  # the CT series and the key-image series
    assert len(instances) == 4 and all(i["FileSize"] > 0 for i in instances)
    assert hashlib.md5(data).hexdigest() == md5
    assert len(data) == instances[0]["FileSize"]
    assert missing is None


def test_upload_zip_then_delete(orthanc_factory):
    server = orthanc_factory("upload")
    files = list(synth.tiny_instances(synth.make_study_spec(21), 3, seed=21))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for n, data in enumerate(files):
            zf.writestr(f"{n}.dcm", data)

    async def scenario():
        async with client_for(server) as client:
            answers = await client.upload(archive.getvalue())
            ids = await client.all_instance_ids()
            await client.delete("Instance", ids[0])
            return answers, ids, await client.all_instance_ids()

    answers, before, after = run(scenario())
    assert [a["Status"] for a in answers] == ["Success"] * 3
    assert len(before) == 3 and len(after) == 2


def test_orthanc_error_fields_from_a_real_error(loaded_server):
    async def scenario():
        async with client_for(loaded_server) as client:
            await client.post_json("/tools/find", {"Level": "Nonsense", "Query": {}})
    with pytest.raises(OrthancError) as info:
        run(scenario())
    err = info.value
    assert err.method == "POST" and err.url.endswith("/tools/find")
    assert err.status == 400
    assert err.orthanc_error or err.message  # Orthanc's error JSON is carried
    assert "POST" in str(err) and "400" in str(err)


def test_wrong_password_is_a_clear_error_without_the_password(orthanc_factory):
    server = orthanc_factory("secured", username="alice", password="right-secret")

    async def scenario():
        async with OrthancClient(Peer("secured", server.url, username="alice", password="wrong-secret")) as c:
            await c.system()
    with pytest.raises(OrthancError) as info:
        run(scenario())
    assert info.value.status == 401
    assert "wrong username or password" in str(info.value)
    assert "secret" not in str(info.value) and "secret" not in repr(info.value.__dict__)


def test_server_down_gives_connection_refused():
    port = free_port()

    async def scenario():
        async with OrthancClient(Peer("down", f"http://127.0.0.1:{port}"), timeout=3) as c:
            await c.system()
    with pytest.raises(OrthancError) as info:
        run(scenario())
    assert info.value.status is None and info.value.is_retryable
    assert "refused" in str(info.value)


def test_silent_server_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections but never answers
    try:
        async def scenario():
            async with OrthancClient(Peer("silent", f"http://127.0.0.1:{listener.getsockname()[1]}"),
                                     timeout=1) as c:
                await c.system()
        with pytest.raises(OrthancError) as info:
            run(scenario())
        assert "timeout" in str(info.value)
    finally:
        listener.close()


class _HtmlHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"<html><body>Welcome to nginx</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_http_server_that_is_not_orthanc():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async def scenario():
            async with OrthancClient(Peer("web", f"http://127.0.0.1:{server.server_port}")) as c:
                await c.system()
        with pytest.raises(OrthancError) as info:
            run(scenario())
        assert "HTML" in str(info.value)
    finally:
        server.shutdown()


@pytest.mark.parametrize("url", ["", "ftp://host/", "http://", "http://host:notaport/", "not a url"])
def test_malformed_urls_are_refused(url):
    with pytest.raises(PeerConfigError):
        Peer("bad", url)


def test_credentials_in_url_are_moved_out_of_it():
    peer = Peer.from_url("p", "https://bob:s3cret@pacs.example.org:8043/orthanc/")
    assert peer.url == "https://pacs.example.org:8043/orthanc"
    assert (peer.username, peer.password) == ("bob", "s3cret")
    assert "s3cret" not in repr(peer)
    assert Peer("lan", "http://10.1.2.3:8042").is_plain_http_to_remote
    assert not Peer("loop", "http://127.0.0.1:8042").is_plain_http_to_remote


def test_upload_slower_than_the_timeout_succeeds_while_bytes_keep_flowing(orthanc_factory):
    """A large instance over a slow link takes longer than HttpTimeout in all,
    but no single write waits that long: the upload must not time out."""
    from tests.devtools.netem import ThreadedWanProxy

    server = orthanc_factory("slowlink")
    spec = synth.make_study_spec(41, "MF")
    data = synth.multiframe_instance(spec, 16, rows=256, cols=256)
    with ThreadedWanProxy("127.0.0.1", server.http_port, bandwidth_mbit=16) as proxy:
        # about 8 s on the wire, against a 2 s timeout per operation; the
        # kernel and the proxy still hold more than 2 s of the body when the
        # last write has been handed over, and that must not count as silence
        peer = Peer("slowlink", proxy.url)

        async def scenario():
            async with OrthancClient(peer, timeout=2.0) as client:
                return await client.upload(data)
        answer = run(scenario())
    assert answer[0]["Status"] == "Success"
    assert server.request("GET", f"/instances/{answer[0]['ID']}/attachments/dicom/md5", raw=True).decode() \
        == hashlib.md5(data).hexdigest()


def test_first_request_imports_nothing_on_the_event_loop():
    """httpx loads its transport stack on the first request; importing it on
    the loop froze the window for about 60 ms. The client module loads it
    up front, so the first request of a fresh process imports nothing."""
    import subprocess
    import sys
    script = (
        "import asyncio, sys\n"
        "from gui.client import OrthancClient, Peer\n"
        "before = set(sys.modules)\n"
        "async def main():\n"
        f"    async with OrthancClient(Peer('closed', 'http://127.0.0.1:{free_port()}')) as c:\n"
        "        try:\n"
        "            await c.system()\n"
        "        except Exception:\n"
        "            pass\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('encodings')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_link_probe_reuses_the_round_trips_a_job_already_made(orthanc_factory):
    """A server already asked a few small questions (a job's probe and
    look-ups) is judged near or far from those answers: no GET /system."""
    from gui.engine.link_probe import is_distant
    from tests.devtools.netem import ThreadedWanProxy
    server = orthanc_factory("rtt")
    seen = []

    async def go(port):
        peer = Peer("rtt", f"http://127.0.0.1:{port}", username=server.username, password=server.password)
        async with OrthancClient(peer) as client:
            original = client.request

            async def request(method, path, **kwargs):
                seen.append(path)
                return await original(method, path, **kwargs)

            await client.plugins()
            await client.plugins()
            await client.system()
            client.request = request
            return await is_distant(client)

    assert run(go(server.http_port)) is False
    with ThreadedWanProxy("127.0.0.1", server.http_port, latency_ms=10) as proxy:
        assert run(go(proxy.port)) is True
    assert seen == []
