"""The lean HTTP client of the per-instance requests, against real Orthanc servers."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

import pytest

from gui.client import OrthancClient, OrthancError, Peer
from gui.client.fast_http import FastHttp, RelayError, proxied, relay
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import free_port


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def client_for(server, password=None) -> OrthancClient:
    return OrthancClient(Peer(server.name, server.url, username=server.username,
                              password=password or server.password))


@pytest.fixture
def ct_files():
    spec = synth.make_study_spec(61, "FAST HTTP")
    return list(synth.ct_series(spec, 3, seed=61))


def test_files_md5s_and_uploads_go_through_the_lean_client(orthanc_factory, ct_files):
    source = orthanc_factory("fast_source", username="alice", password="s3cret")
    target = orthanc_factory("fast_target", username="bob", password="0ther")
    ids = [source.upload(data)["ID"] for data in ct_files]

    async def go():
        async with client_for(source) as src, client_for(target) as tgt:
            assert src._fast is not None
            plain, plain_wire = await src.fetch_instance(ids[0], gzip=False)
            packed, packed_wire = await src.fetch_instance(ids[0], gzip=True)
            md5 = await src.instance_md5(ids[0])
            missing = await tgt.instance_md5_or_none(ids[0])
            stored = await tgt.upload(plain)
            gz = await tgt.upload(gzip.compress(ct_files[1], 1), content_encoding="gzip")
            return plain, plain_wire, packed, packed_wire, md5, missing, stored, gz, \
                await tgt.instance_md5(ids[1])

    plain, plain_wire, packed, packed_wire, md5, missing, stored, gz, md5_1 = run(go())
    assert plain == packed == ct_files[0]
    assert plain_wire == len(plain) and packed_wire < len(plain) * 0.8   # gzip on the wire, inflated here
    assert md5 == hashlib.md5(ct_files[0]).hexdigest()
    assert missing is None
    assert stored[0]["Status"] == "Success" and gz[0]["Status"] == "Success"
    assert md5_1 == hashlib.md5(ct_files[1]).hexdigest()


def test_errors_read_as_orthanc_errors(orthanc_factory, ct_files):
    server = orthanc_factory("fast_errors", username="alice", password="s3cret")
    instance = server.upload(ct_files[0])["ID"]
    nowhere = OrthancClient(Peer("nowhere", f"http://127.0.0.1:{free_port()}"))

    async def go():
        async with client_for(server, password="wrong") as bad, client_for(server) as good, nowhere:
            with pytest.raises(OrthancError) as wrong_password:
                await bad.instance_md5(instance)
            with pytest.raises(OrthancError) as absent:
                await good.instance_md5("01234567-89abcdef-01234567-89abcdef-01234567")
            with pytest.raises(OrthancError) as refused:
                await nowhere.instance_md5(instance)
            with pytest.raises(OrthancError) as not_dicom:
                await good.upload(b"not a DICOM file at all")
            # The connection stays usable after every error answer.
            return wrong_password.value, absent.value, refused.value, not_dicom.value, \
                await good.instance_md5(instance)

    wrong_password, absent, refused, not_dicom, md5 = run(go())
    assert wrong_password.status == 401 and "wrong username or password" in str(wrong_password)
    assert absent.status == 404 and not absent.is_retryable
    assert refused.status is None and "connection refused" in str(refused) and refused.is_retryable
    assert not_dicom.status == 400 and not_dicom.body is not None   # Orthanc's JSON kept
    assert "s3cret" not in str(wrong_password) + str(refused)
    assert md5 == hashlib.md5(ct_files[0]).hexdigest()


def test_a_connection_closed_by_the_server_is_replaced(orthanc_factory, ct_files):
    """Orthanc closes idle keep-alive connections after KeepAliveTimeout: the
    next request opens a new one instead of failing."""
    server = orthanc_factory("fast_keepalive", extra_config={"KeepAliveTimeout": 1})
    instance = server.upload(ct_files[0])["ID"]

    async def go():
        http = FastHttp(server.url, headers={}, ssl_context=None, timeout=30, connect_timeout=5,
                        max_connections=2)
        try:
            first = await http.request("GET", f"/instances/{instance}/attachments/dicom/md5")
            idle = http._idle[0]
            deadline = asyncio.get_running_loop().time() + 30
            while not idle.reader.at_eof():          # the server closes it after its timeout
                assert asyncio.get_running_loop().time() < deadline, "Orthanc kept the connection"
                await asyncio.sleep(0.05)
            second = await http.request("GET", f"/instances/{instance}/attachments/dicom/md5")
            return first, second, http._idle[0] is not idle
        finally:
            await http.aclose()

    first, second, replaced = run(go())
    assert first.status == second.status == 200 and first.content == second.content and replaced


def test_a_proxy_in_the_environment_leaves_requests_to_httpx(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert proxied("http://pacs.invalid:8042/")
    assert OrthancClient(Peer("p", "http://pacs.invalid:8042/"))._fast is None
    monkeypatch.setenv("no_proxy", "pacs.invalid")
    assert not proxied("http://pacs.invalid:8042/")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
])
def test_a_malformed_answer_is_an_error_naming_the_server_and_request(answer):
    """A peer that is not Orthanc (or a broken proxy) answers with bad framing:
    the request fails with an OrthancError that says so, never a ValueError
    from deep inside the client, and never a hang."""
    async def go():
        async def serve(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with OrthancClient(Peer("broken", f"http://127.0.0.1:{port}"), timeout=5) as client:
                assert client._fast is not None
                with pytest.raises(OrthancError) as caught:
                    await client.instance_md5("0" * 8 + "-" + "0" * 8 + "-" + "0" * 8 + "-" + "0" * 8 + "-" + "0" * 8)
                return str(caught.value)
        finally:
            server.close()
            await server.wait_closed()

    message = run(go())
    assert "broken" in message and "md5" in message
    assert "malformed answer" in message or "not an HTTP answer" in message


def test_relay_splices_a_download_into_an_upload(orthanc_factory, ct_files):
    """``relay`` moves a file from one Orthanc to another without the bytes
    entering Python: stored intact, plain or gzip-encoded as the source
    answered, on kept-alive connections; an answer it cannot pass on as it is
    fails before anything reached the target."""
    source = orthanc_factory("relay_source", username="alice", password="s3cret")
    target = orthanc_factory("relay_target", username="bob", password="0ther")
    ids = [source.upload(data)["ID"] for data in ct_files]

    async def go():
        async with client_for(source) as src, client_for(target) as tgt:
            pools = src._fast.raw_pool(), tgt._fast.raw_pool()

            def path(n: int) -> str:
                return f"/instances/{ids[n]}/file"

            def relay_one(n: int, **kwargs):
                return relay(pools[0], path(n), pools[1], "/instances", **kwargs)

            plain = await relay_one(0, accept_gzip=False, expected_size=len(ct_files[0]))
            idle = len(pools[0]._idle), len(pools[1]._idle)
            packed = await relay_one(1, accept_gzip=True, expected_size=len(ct_files[1]))
            failures = []
            with pytest.raises(RelayError) as wrong_size:
                await relay_one(2, accept_gzip=False, expected_size=len(ct_files[2]) + 1)
            failures.append(wrong_size.value)
            with pytest.raises(RelayError) as absent:
                await relay(pools[0], "/instances/0123-4567/file", pools[1], "/instances", accept_gzip=False)
            failures.append(absent.value)
            return plain, idle, packed, failures, await tgt.instance_md5_or_none(ids[2])

    plain, idle, packed, failures, third = run(go())
    assert plain.status == 200 and json.loads(plain.content)["Status"] == "Success"
    assert plain.encoding is None and plain.forwarded == len(ct_files[0])
    assert idle == (1, 1)                                   # both connections kept alive
    assert packed.status == 200 and packed.encoding == "gzip" and packed.forwarded < 0.8 * len(ct_files[1])
    assert target.instance_md5s() == {i: hashlib.md5(f).hexdigest() for i, f in zip(ids[:2], ct_files)}
    wrong_size, absent = failures
    assert not wrong_size.forwarded and "expected" in wrong_size.reason
    assert not absent.forwarded and absent.status == 404 and absent.side == "source"
    assert third is None                                    # nothing reached the target
