"""The WAN emulator against small local asyncio servers.

Throughput and latency checks use generous bounds (0.5x..1.3x): they check
that shaping happens, not the exact figures, which the benchmark reports.
"""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import threading
from typing import Awaitable, Callable, List, Tuple

import pytest

from tests.devtools.netem import Direction, Fault, FaultKind, ThreadedWanProxy, WanProxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> Tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read everything, then answer with the byte count as text."""
    total = 0
    while True:
        data = await reader.read(65536)
        if not data:
            break
        total += len(data)
    writer.write(str(total).encode())
    await writer.drain()
    writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


def _source(payload: bytes) -> Handler:
    """A server that sends ``payload`` to whoever connects, then closes."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(payload)
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass
    return handler


async def _upload(port: int, nbytes: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = os.urandom(32 * 1024)
    sent = 0
    while sent < nbytes:
        writer.write(block[: nbytes - sent])
        sent += min(len(block), nbytes - sent)
        await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return int(answer)


async def _download(port: int) -> Tuple[bytes, BaseException | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    error: BaseException | None = None
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            received += data
    except ConnectionError as exc:
        error = exc
    writer.close()
    return bytes(received), error


def test_bandwidth_cap_holds_and_latency_does_not_reduce_throughput() -> None:
    async def scenario() -> Tuple[float, int, int]:
        server, port = await _serve(_sink)
        # 8 Mbit/s = 1 MB/s, plus 50 ms each way: 1 MB must take about 1 s, not more
        # than a few round trips longer (latency is added, throughput is kept).
        async with WanProxy("127.0.0.1", port, latency_ms=50, bandwidth_mbit=8) as proxy:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            received = await _upload(proxy.port, 1_000_000)
            elapsed = loop.time() - t0
            up = proxy.stats.bytes_up
        server.close()
        return elapsed, received, up

    elapsed, received, up = asyncio.run(scenario())
    assert received == 1_000_000
    assert up == 1_000_000  # the counters see every byte forwarded
    rate = 1_000_000 / elapsed
    print(f"1 MB through 8 Mbit/s + 2x50 ms: {elapsed:.2f} s, {rate / 1e6:.2f} MB/s")
    assert 0.5 * 1e6 <= rate <= 1.3 * 1e6


def test_latency_is_added_each_way() -> None:
    async def scenario() -> float:
        server, port = await _serve(_echo)
        async with WanProxy("127.0.0.1", port, latency_ms=100) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
            rtt = loop.time() - t0
            writer.close()
        server.close()
        return rtt

    rtt = asyncio.run(scenario())
    print(f"round trip through 2x100 ms: {rtt * 1000:.0f} ms")
    assert 0.19 <= rtt < 2.0


def test_bandwidth_is_shared_by_all_connections() -> None:
    async def scenario() -> Tuple[float, List[int]]:
        server, port = await _serve(_sink)
        async with WanProxy("127.0.0.1", port, bandwidth_mbit=8) as proxy:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            counts = await asyncio.gather(_upload(proxy.port, 600_000), _upload(proxy.port, 600_000))
            elapsed = loop.time() - t0
            assert proxy.stats.connections == 2
        server.close()
        return elapsed, list(counts)

    elapsed, counts = asyncio.run(scenario())
    assert counts == [600_000, 600_000]
    rate = 1_200_000 / elapsed
    print(f"2 x 600 KB at once through 8 Mbit/s: {elapsed:.2f} s, {rate / 1e6:.2f} MB/s together")
    assert 0.5 * 1e6 <= rate <= 1.3 * 1e6


def test_reset_after_n_bytes_then_next_connection_is_clean() -> None:
    payload = os.urandom(100_000)

    async def scenario():  # type: ignore[no-untyped-def]
        server, port = await _serve(_source(payload))
        async with WanProxy("127.0.0.1", port) as proxy:
            proxy.arm(Fault(FaultKind.RESET, Direction.DOWN, after_bytes=10_000))
            first = await _download(proxy.port)
            second = await _download(proxy.port)
        server.close()
        return first, second

    (data1, error1), (data2, error2) = asyncio.run(scenario())
    assert data1 == payload[:10_000]
    assert isinstance(error1, ConnectionResetError)
    assert data2 == payload and error2 is None


def test_corrupts_exactly_one_byte_on_every_connection_when_armed_so() -> None:
    payload = os.urandom(200_000)

    async def scenario():  # type: ignore[no-untyped-def]
        server, port = await _serve(_source(payload))
        async with WanProxy("127.0.0.1", port, bandwidth_mbit=200) as proxy:
            proxy.arm(Fault(FaultKind.CORRUPT, Direction.DOWN, after_bytes=123_457, every_connection=True))
            results = [await _download(proxy.port), await _download(proxy.port)]
        server.close()
        return results

    for data, error in asyncio.run(scenario()):
        assert error is None and len(data) == len(payload)
        differences = [i for i in range(len(payload)) if data[i] != payload[i]]
        assert differences == [123_457]


def test_stall_holds_data_until_released() -> None:
    payload = os.urandom(50_000)

    async def scenario():  # type: ignore[no-untyped-def]
        server, port = await _serve(_source(payload))
        async with WanProxy("127.0.0.1", port) as proxy:
            proxy.arm(Fault(FaultKind.STALL, Direction.DOWN, after_bytes=1000))
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            head = await asyncio.wait_for(reader.readexactly(1000), 10)
            while proxy.active_stalls == 0:
                await asyncio.sleep(0.01)
            # While stalled nothing more comes through.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
            proxy.release()
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        server.close()
        return head + rest

    assert asyncio.run(scenario()) == payload


def test_timed_stall_resumes_by_itself() -> None:
    payload = os.urandom(20_000)

    async def scenario():  # type: ignore[no-untyped-def]
        server, port = await _serve(_source(payload))
        async with WanProxy("127.0.0.1", port) as proxy:
            proxy.arm(Fault(FaultKind.STALL, Direction.DOWN, after_bytes=5000, seconds=0.3))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            data, error = await _download(proxy.port)
            elapsed = loop.time() - t0
        server.close()
        return data, error, elapsed

    data, error, elapsed = asyncio.run(scenario())
    assert data == payload and error is None
    assert elapsed >= 0.28


def test_fault_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Fault(FaultKind.RESET, after_bytes=-1)
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WanProxy("127.0.0.1", 1, bandwidth_mbit=0)


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


def test_threaded_proxy_serves_blocking_clients_and_counts_bytes() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        try:
            with ThreadedWanProxy("127.0.0.1", echo.server_address[1], latency_ms=5) as proxy:
                assert proxy.url == f"http://127.0.0.1:{proxy.port}"
                message = os.urandom(300_000)
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
                    s.sendall(message)
                    s.shutdown(socket.SHUT_WR)
                    received = bytearray()
                    while len(received) < len(message):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                assert bytes(received) == message
                stats = proxy.stats
                assert stats.bytes_up == len(message) and stats.bytes_down == len(message)
                assert proxy.reset_stats().total == 2 * len(message)
                assert proxy.stats.total == 0
        finally:
            echo.shutdown()
