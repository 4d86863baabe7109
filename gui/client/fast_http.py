"""A lean HTTP/1.1 client for the requests a transfer makes by the thousand.

Plain mode costs a few requests per instance (the source's MD5, the file,
the target's MD5 after the upload). Through httpx each one costs about a
millisecond of CPU (httpx, httpcore and anyio: request objects, connection
pool bookkeeping that polls every idle socket, cancellation shields): on
2,000 tiny instances the engine, not the servers, was the bottleneck. This
client does only what those requests need, straight on asyncio streams:
keep-alive connections (at most ``max_connections``), ``Content-Length``
and chunked answers, gzip answers, request bodies given whole or as an
async iterator of pieces, TLS with the peer's SSL context (verification as
configured), one timeout per read or write as httpx applies it.

It raises :class:`FastHttpError` (no answer: ``status`` None) and leaves
the mapping to Orthanc errors to :class:`gui.client.orthanc_client.OrthancClient`.
When a proxy is configured in the environment for the server, the client
is not used (``proxied``): httpx honours those settings, this does not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import os
import select
import socket
import struct
import sys
import ssl
import time
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

from gui.client.rate_limit import RateLimit, spend
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # Python 3.10 (Ubuntu 22.04): the same contract, built on cancellation
    @contextlib.asynccontextmanager
    async def _timeout(delay: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(delay, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError() from None
            raise
        finally:
            handle.cancel()

try:  # the kernel's send-queue length, to tell a slow upload from a silent server
    import fcntl
    import termios
    _TIOCOUTQ: Optional[int] = termios.TIOCOUTQ
except (ImportError, AttributeError):  # not on every platform
    _TIOCOUTQ = None

Body = Union[None, bytes, bytearray, memoryview, AsyncIterator[bytes]]
# Longest answer head accepted (status line and headers).
# Large pieces keep the per-piece cost (one await each) small next to the
# bytes: a 200 MB instance is 200 reads, not 800.
READ_PIECE = 1024 * 1024
# Bytes the socket's write buffer takes before a drain waits.
WRITE_BUFFER = 1024 * 1024
# Pieces of a request body whose progress is followed (on_sent).
FOLLOWED_PIECE = 256 * 1024


class FastHttpError(Exception):
    """The request got no (usable) answer. ``timeout``: none came in time."""

    def __init__(self, reason: str, *, timeout: bool = False, cause: Optional[BaseException] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout
        self.cause = cause


@dataclass
class FastResponse:
    status: int
    reason: str
    headers: Dict[str, str]       # lower-case names
    content: bytes
    wire_bytes: int               # body bytes as received (before inflating)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def proxied(url: str) -> bool:
    """Whether the environment routes ``url`` through a proxy."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class _Connection:
    __slots__ = ("reader", "writer", "used")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a broken socket
            pass


class FastHttp:
    """One server, a pool of keep-alive connections. Use from one event loop."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str], ssl_context: Optional[ssl.SSLContext],
                 timeout: float, connect_timeout: float, max_connections: int = 16,
                 username: Optional[str] = None, password: Optional[str] = None,
                 rate_limit: Optional[RateLimit] = None) -> None:
        parts = urlsplit(base_url)
        # Bandwidth caps (rate_limit.py): body bytes written and read are spent on them.
        self.rate_limit = rate_limit
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl_context if parts.scheme == "https" else None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        host_header = self.host if parts.port is None else f"{self.host}:{parts.port}"
        if ":" in self.host:            # an IPv6 literal
            host_header = f"[{self.host}]" + (f":{parts.port}" if parts.port else "")
        fixed = {"Host": host_header, "User-Agent": "orthanc-transfers", "Accept": "*/*"}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            fixed["Authorization"] = f"Basic {token}"
        fixed.update(headers)
        self._fixed = fixed
        self._idle: List[_Connection] = []
        self._slots = asyncio.Semaphore(max(1, max_connections))
        self._closed = False
        self._raw: Optional[RawPool] = None

    def raw_pool(self) -> Optional["RawPool"]:
        """Blocking sockets to the same server for relays (:func:`relay`):
        plain HTTP only (TLS cannot be spliced), None otherwise."""
        if self.ssl is not None or self.scheme != "http" or self._closed:
            return None
        if self._raw is None:
            self._raw = RawPool(self.host, self.port, self.prefix, self._fixed, self.timeout,
                                self.connect_timeout)
        return self._raw

    async def aclose(self) -> None:
        self._closed = True
        if self._raw is not None:
            self._raw.close()
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # --- connections -----------------------------------------------------------

    async def _open(self) -> _Connection:
        try:
            async with _timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl, limit=READ_PIECE,
                    server_hostname=self.host if self.ssl is not None else None)
            writer.transport.set_write_buffer_limits(high=WRITE_BUFFER)
        except TimeoutError:
            raise FastHttpError("no connection within the timeout", timeout=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise FastHttpError(f"cannot connect: {exc}", cause=exc) from None
        return _Connection(reader, writer)

    def _take_idle(self) -> Optional[_Connection]:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    # --- requests ----------------------------------------------------------------

    async def request(self, method: str, path: str, *, body: Body = None,
                      headers: Optional[Mapping[str, str]] = None,
                      timeout: Optional[float] = None,
                      on_sent: Optional[Callable[[int], None]] = None) -> FastResponse:
        """One request, the whole answer read (inflated when gzip).
        ``on_sent(bytes)`` follows a whole body as the socket takes it."""
        pieces: List[bytes] = []
        response = await self.stream(method, path, pieces.append, body=body, headers=headers,
                                     timeout=timeout, on_sent=on_sent)
        if pieces:
            response.content = b"".join(pieces)
        return response

    async def stream(self, method: str, path: str, consume: Callable[[bytes], Any], *,
                     body: Body = None, headers: Optional[Mapping[str, str]] = None,
                     timeout: Optional[float] = None,
                     on_sent: Optional[Callable[[int], None]] = None) -> FastResponse:
        """One request; the answer's body (inflated) is handed to ``consume``
        piece by piece, never held whole (only a 2xx answer's: another's is
        kept in ``content``); an awaitable it returns is awaited before the
        next piece is read."""
        if self._closed:
            raise FastHttpError("client closed")
        limit = timeout or self.timeout
        async with self._slots:
            connection = self._take_idle()
            replayable = not (body is not None and not isinstance(body, (bytes, bytearray, memoryview)))
            if connection is not None and replayable:
                try:
                    return await self._exchange(connection, method, path, body, headers, limit, consume,
                                                on_sent)
                except _StaleConnection:
                    pass   # the server closed a kept-alive connection meanwhile: once more, on a new one
            elif connection is not None:
                connection.close()
            connection = await self._open()
            try:
                return await self._exchange(connection, method, path, body, headers, limit, consume, on_sent)
            except _StaleConnection as exc:
                raise FastHttpError("connection closed by the server before answering") from exc

    async def _exchange(self, connection: _Connection, method: str, path: str, body: Body,
                        headers: Optional[Mapping[str, str]], limit: float,
                        consume: Callable[[bytes], Any],
                        on_sent: Optional[Callable[[int], None]] = None) -> FastResponse:
        reused = connection.used
        connection.used = True
        keep = False
        try:
            await self._send(connection, method, path, body, headers, limit, on_sent)
            status, reason, answer_headers, head_keep = await self._read_head(connection, limit, reused)
            kept: List[bytes] = []
            # An error's body (Orthanc's JSON) is kept for the error, not streamed.
            sink = consume if 200 <= status < 300 else kept.append
            wire = await self._read_body(connection, answer_headers, limit, sink, method, status)
            keep = head_keep and answer_headers.get("connection") != "close"
            return FastResponse(status, reason, answer_headers, b"".join(kept), wire)
        except _StaleConnection:
            raise
        except TimeoutError:
            raise FastHttpError(f"no answer within {limit:.0f} s (timeout)", timeout=True) from None
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ssl.SSLError) as exc:
            raise FastHttpError(f"connection broken: {type(exc).__name__}: {exc}", cause=exc) from None
        finally:
            if keep and not self._closed:
                self._idle.append(connection)
            else:
                connection.close()

    async def _send(self, connection: _Connection, method: str, path: str, body: Body,
                    headers: Optional[Mapping[str, str]], limit: float,
                    on_sent: Optional[Callable[[int], None]] = None) -> None:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1"]
        merged = dict(self._fixed)
        if headers:
            merged.update(headers)
        streamed = body is not None and not isinstance(body, (bytes, bytearray, memoryview))
        if body is None:
            if method in ("POST", "PUT"):
                merged["Content-Length"] = "0"
        elif not streamed:
            merged["Content-Length"] = str(len(body))  # type: ignore[arg-type]
        elif not any(k.lower() == "content-length" for k in merged):
            merged["Transfer-Encoding"] = "chunked"
        lines.extend(f"{k}: {v}" for k, v in merged.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer = connection.writer
        chunked = merged.get("Transfer-Encoding") == "chunked"
        limit_rate = self.rate_limit if self.rate_limit is not None and self.rate_limit.active else None
        if body is None:
            writer.write(head)
        elif not streamed:
            view = memoryview(body)  # type: ignore[arg-type]
            # Followed bodies go in smaller pieces: progress shows within them.
            step = READ_PIECE if on_sent is None else FOLLOWED_PIECE
            if len(view) <= step:
                await spend(limit_rate, len(view))
                writer.write(head + bytes(view))
            else:
                writer.write(head)
                for start in range(0, len(view), step):
                    await spend(limit_rate, min(step, len(view) - start))
                    writer.write(view[start:start + step])
                    async with _timeout(limit):
                        await writer.drain()
                    if on_sent is not None:
                        on_sent(min(len(view), start + step))
        else:
            writer.write(head)
            async for piece in body:  # type: ignore[union-attr]
                if not piece:
                    continue
                await spend(limit_rate, len(piece))
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                async with _timeout(limit):
                    await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
        async with _timeout(limit):
            await writer.drain()
        if on_sent is not None and body is not None and not streamed:
            on_sent(len(body))  # type: ignore[arg-type]

    async def _read_head(self, connection: _Connection, limit: float,
                         reused: bool) -> Tuple[int, str, Dict[str, str], bool]:
        try:
            head = await _read_head_while_sending(connection, limit)
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _StaleConnection() from None
            raise
        except ConnectionResetError:
            if reused:
                raise _StaleConnection() from None
            raise
        return parse_answer_head(head.decode("latin-1"), FastHttpError)

    async def _read_body(self, connection: _Connection, headers: Dict[str, str], limit: float,
                         consume: Callable[[bytes], Any], method: str, status: int) -> int:
        reader = connection.reader
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return 0
        encoding = headers.get("content-encoding", "").lower()
        inflater = zlib.decompressobj(31) if encoding == "gzip" else \
            zlib.decompressobj() if encoding == "deflate" else None

        limit_rate = self.rate_limit if self.rate_limit is not None and self.rate_limit.active else None

        async def give(piece: bytes) -> None:
            if limit_rate is not None:
                await limit_rate.spend(len(piece))   # the wire's bytes, before inflating
            if inflater is not None:
                try:
                    piece = inflater.decompress(piece)
                except zlib.error as exc:
                    raise FastHttpError(f"corrupt {encoding} answer: {exc}") from None
                if not piece:
                    return
            result = consume(piece)
            if result is not None and result is not True and inspect.isawaitable(result):
                await result   # the consumer's backpressure

        wire = 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                async with _timeout(limit):
                    line = await reader.readuntil(b"\r\n")
                size = _parse_size(line.split(b";", 1)[0].strip(), 16, "chunk size")
                if size == 0:
                    async with _timeout(limit):
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass   # trailers
                    break
                wire += await _read_exactly(reader, size, limit, give)
                async with _timeout(limit):
                    await reader.readexactly(2)
        elif "content-length" in headers:
            wire = await _read_exactly(reader, _parse_size(headers["content-length"].encode(), 10, "Content-Length"),
                                       limit, give)
        else:
            headers["connection"] = "close"
            while True:
                async with _timeout(limit):
                    piece = await reader.read(READ_PIECE)
                if not piece:
                    break
                wire += len(piece)
                await give(piece)
        if inflater is not None:
            rest = inflater.flush()
            if rest:
                await give_raw(rest, consume)
            if not inflater.eof:
                raise FastHttpError(f"truncated {encoding} answer")
        return wire


async def give_raw(piece: bytes, consume: Callable[[bytes], Any]) -> None:
    result = consume(piece)
    if result is not None and result is not True and inspect.isawaitable(result):
        await result


def _parse_size(text: bytes, base: int, what: str) -> int:
    """A size from the answer's framing; a malformed one is the server's fault, said as such."""
    try:
        size = int(text, base)
    except ValueError:
        size = -1
    if size < 0:
        raise FastHttpError(f"malformed answer: bad {what} {text[:40]!r}")
    return size


async def _read_exactly(reader: asyncio.StreamReader, size: int, limit: float,
                        give: Callable[[bytes], Awaitable[None]]) -> int:
    """Hand ``size`` bytes of the body to ``give`` piece by piece; returns ``size``."""
    left = size
    while left:
        async with _timeout(limit):
            piece = await reader.read(min(left, READ_PIECE))
        if not piece:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(piece)
        await give(piece)
    return size


def _unsent_bytes(connection: _Connection) -> Optional[int]:
    """Bytes still in the kernel's send queue of the connection (Linux), or None."""
    sock = connection.writer.get_extra_info("socket")
    if sock is None or _TIOCOUTQ is None:
        return None
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0"))[0]
        return queued
    except (OSError, ValueError):
        return None


async def _read_head_while_sending(connection: _Connection, limit: float) -> bytes:
    """The answer's head, waiting ``limit`` seconds after the request has
    left this computer. ``drain()`` returns once the kernel holds the body,
    which over a slow link can be seconds of data: while that queue keeps
    shrinking the request is still travelling, so the wait starts over."""
    reading = asyncio.ensure_future(connection.reader.readuntil(b"\r\n\r\n"))
    unsent = _unsent_bytes(connection)
    try:
        while True:
            done, _ = await asyncio.wait({reading}, timeout=limit)
            if done:
                return reading.result()
            now = _unsent_bytes(connection)
            if not (unsent and now is not None and now < unsent):
                raise TimeoutError()
            unsent = now
    finally:
        if not reading.done():
            reading.cancel()


class _StaleConnection(Exception):
    """A kept-alive connection turned out closed before any answer byte."""


# --- zero-copy relay: an answer's body spliced into another server's request ----------
#
# Plain mode between two servers that this computer reaches over plain HTTP
# moves most bytes from one socket to another unchanged. Read into Python,
# hashed and written again, a CT slice costs a few copies and an MD5; on a
# two-core machine shared with both servers that CPU is what limits. On
# Linux ``os.splice`` moves the bytes from the source's socket through a
# pipe into the target's socket inside the kernel: this process never
# touches them. The relay runs on the event loop with sockets of its own
# (an asyncio transport owns its file descriptor), one keep-alive pool per
# server; no thread, so no GIL handed back and forth. Integrity is then the
# end-to-end check the caller does anyway (the MD5 the target stored
# against the source's).

# Largest pipe asked for (Linux's default ceiling, /proc/sys/fs/pipe-max-size).
RELAY_PIPE = 1024 * 1024
# Bytes the source's socket gathers before the relay wakes to move them
# (SO_RCVLOWAT): a few large splices, not one per TCP segment.
RELAY_LOWAT = 256 * 1024
# A kept-alive socket idle longer than this is not reused (Orthanc closes
# idle connections after its KeepAliveTimeout, 1 s by default).
RELAY_IDLE = 0.8
# Answers of the target (JSON) read whole up to this.
RELAY_ANSWER_MAX = 1024 * 1024


def relay_supported() -> bool:
    """Whether this platform can splice socket to socket (Linux, Python 3.10+)."""
    return sys.platform.startswith("linux") and hasattr(os, "splice")


class RelayError(Exception):
    """A relay did not complete. ``side``: which server failed ("source" or
    "target"); ``forwarded``: whether any body byte reached the target (if
    not, the caller may do the same transfer another way)."""

    def __init__(self, reason: str, *, side: str, forwarded: bool, status: Optional[int] = None,
                 timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.side = side
        self.forwarded = forwarded
        self.status = status
        self.timeout = timeout


@dataclass
class RelayAnswer:
    """The target's answer to a relayed upload."""
    status: int
    reason: str
    headers: Dict[str, str]
    content: bytes
    forwarded: int                # body bytes relayed (as they crossed: compressed or not)
    encoding: Optional[str]       # the body's Content-Encoding ("gzip") or None


class _Stale(Exception):
    """A kept-alive socket was closed by the server before it answered."""


class RawPool:
    """Non-blocking keep-alive sockets to one plain-HTTP server, for relays.
    Use from one event loop."""

    def __init__(self, host: str, port: int, prefix: str, headers: Mapping[str, str],
                 timeout: float, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.head_lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: List[Tuple[socket.socket, float]] = []
        self._closed = False

    async def open(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            async with _timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                family, kind, proto, _name, address = infos[0]
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, address)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise ConnectionError("no connection within the timeout") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def take(self) -> Tuple[socket.socket, bool]:
        """A socket and whether it was kept alive from an earlier request."""
        now = time.monotonic()
        while self._idle:
            sock, since = self._idle.pop()
            if now - since < RELAY_IDLE and _quiet(sock):
                return sock, True
            sock.close()
        return await self.open(), False

    def give(self, sock: socket.socket) -> None:
        if self._closed:
            sock.close()
        else:
            self._idle.append((sock, time.monotonic()))

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for sock, _since in idle:
            sock.close()


def _quiet(sock: socket.socket) -> bool:
    """An idle kept-alive socket with nothing to read: not closed by the server."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)


async def _recv(sock: socket.socket, limit: float) -> bytes:
    async with _timeout(limit):
        return await asyncio.get_running_loop().sock_recv(sock, 65536)


async def _send_all(sock: socket.socket, data: bytes, limit: float) -> None:
    async with _timeout(limit):
        await asyncio.get_running_loop().sock_sendall(sock, data)


def parse_answer_head(head: str, error: Callable[[str], Exception]) -> Tuple[int, str, Dict[str, str], bool]:
    """Status, reason, headers (lower-case names, repeated ones joined) and
    keep-alive of an HTTP/1.x answer head (without its blank line); ``error``
    builds what is raised for something that is not an HTTP answer."""
    status_line, _, lines = head.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise error(f"not an HTTP answer: {status_line[:80]!r}")
    headers: Dict[str, str] = {}
    for line in lines.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, keep


async def _relay_head(sock: socket.socket, limit: float) -> Tuple[int, str, Dict[str, str], bool, bytes]:
    """Status, reason, headers (lower-case names), keep-alive, and the bytes read past the head."""
    buffer = b""
    while True:
        piece = await _recv(sock, limit)
        if not piece:
            if not buffer:
                raise _Stale()
            raise ConnectionError("connection closed in the middle of an answer's head")
        buffer += piece
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buffer) > 65536:
            raise ConnectionError("answer head too long")
    status, reason, headers, keep = parse_answer_head(buffer[:end].decode("latin-1"), ConnectionError)
    return status, reason, headers, keep, buffer[end + 4:]


async def _relay_body(sock: socket.socket, headers: Dict[str, str], rest: bytes,
                      limit: float) -> Tuple[bytes, bool]:
    """A small answer's body (Content-Length, chunked or until close) and
    whether the socket may be kept."""
    async def more() -> bytes:
        piece = await _recv(sock, limit)
        if not piece:
            raise ConnectionError("connection closed in the middle of an answer")
        return piece

    if "chunked" in headers.get("transfer-encoding", "").lower():
        data, buffer = b"", rest
        while True:
            while b"\r\n" not in buffer:
                buffer += await more()
            line, buffer = buffer.split(b"\r\n", 1)
            size = _parse_size(line.split(b";", 1)[0].strip(), 16, "chunk size")
            if size == 0:
                while not (buffer.startswith(b"\r\n") or b"\r\n\r\n" in buffer):
                    buffer += await more()
                return data, True
            while len(buffer) < size + 2:
                buffer += await more()
            data += buffer[:size]
            buffer = buffer[size + 2:]
            if len(data) > RELAY_ANSWER_MAX:
                raise ConnectionError("answer too large")
    if "content-length" in headers:
        size = _parse_size(headers["content-length"].encode(), 10, "Content-Length")
        if size > RELAY_ANSWER_MAX:
            raise ConnectionError("answer too large")
        data = rest
        while len(data) < size:
            data += await more()
        return data[:size], True
    data = rest
    while True:
        piece = await _recv(sock, limit)
        if not piece:
            return data, False
        data += piece
        if len(data) > RELAY_ANSWER_MAX:
            raise ConnectionError("answer too large")


async def _ready(read_fd: Optional[int], write_fd: Optional[int], limit: float) -> None:
    """Wait until ``read_fd`` is readable or ``write_fd`` writable."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if read_fd is not None:
        loop.add_reader(read_fd, wake)
    if write_fd is not None:
        loop.add_writer(write_fd, wake)
    try:
        async with _timeout(limit):
            await ready
    except TimeoutError:
        side = "source" if read_fd is not None else "target"
        raise RelayError(f"no progress {'from' if side == 'source' else 'to'} the {side} within "
                         f"{limit:.0f} s (timeout)", side=side, forwarded=True, timeout=True) from None
    finally:
        if read_fd is not None:
            loop.remove_reader(read_fd)
        if write_fd is not None:
            loop.remove_writer(write_fd)


async def _splice(source: socket.socket, target: socket.socket, left: int, limit: float) -> None:
    """Move ``left`` bytes from ``source`` into ``target`` inside the kernel,
    through a pipe, never blocking the loop."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    low = 1
    try:
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, RELAY_PIPE)
        except OSError:
            pass   # the default pipe works too, in more steps
        capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        src, dst = source.fileno(), target.fileno()
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        held = 0      # bytes in the pipe
        while left or held:
            moved = False
            if left and held < capacity:
                want = min(left, RELAY_LOWAT, capacity - held)
                if want != low:
                    source.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                    low = want
                try:
                    got = os.splice(src, write_end, min(left, capacity - held), flags=flags)
                except BlockingIOError:
                    got = -1
                except OSError as exc:
                    raise RelayError(f"connection to the source broken: {exc}", side="source",
                                     forwarded=True) from None
                if got == 0:
                    raise RelayError(f"the source closed the connection with {left} bytes to go",
                                     side="source", forwarded=True)
                if got > 0:
                    left -= got
                    held += got
                    moved = True
            if held:
                try:
                    sent = os.splice(read_end, dst, held,
                                     flags=flags | (os.SPLICE_F_MORE if left else 0))
                except BlockingIOError:
                    sent = -1
                except OSError as exc:
                    raise RelayError(f"connection to the target broken: {exc}", side="target",
                                     forwarded=True) from None
                if sent > 0:
                    held -= sent
                    moved = True
            if not moved:
                await _ready(src if left and held < capacity else None, dst if held else None, limit)
    finally:
        if low != 1:
            try:
                source.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError:
                pass
        os.close(read_end)
        os.close(write_end)


async def relay(source: RawPool, path: str, target: RawPool, upload_path: str, *, accept_gzip: bool,
                expected_size: Optional[int] = None, content_type: str = "application/dicom",
                method: str = "POST", headers: Optional[Mapping[str, str]] = None) -> RelayAnswer:
    """GET ``path`` from ``source`` and send its body, spliced, as the body of
    ``POST upload_path`` (or ``method``, with ``headers`` added) to
    ``target``. A gzip answer is forwarded as it came, with
    ``Content-Encoding: gzip``.

    Raises :class:`RelayError`; ``forwarded`` False (nothing reached the
    target) also for a source answer this cannot relay as it is: not 200, no
    ``Content-Length``, another encoding, or an uncompressed size other than
    ``expected_size``. Cancelled half-way, both connections are closed: the
    target drops the upload it did not get whole."""
    for attempt in (1, 2):
        try:
            return await _relay_once(source, path, target, upload_path, accept_gzip, expected_size,
                                     content_type, method, headers or {})
        except _Stale:
            if attempt == 2:
                raise RelayError("connection closed by the server before answering", side="target",
                                 forwarded=True) from None
    raise AssertionError("unreachable")


async def _relay_once(source: RawPool, path: str, target: RawPool, upload_path: str, accept_gzip: bool,
                      expected_size: Optional[int], content_type: str, method: str,
                      extra_headers: Mapping[str, str]) -> RelayAnswer:
    request = (f"GET {source.prefix}{path} HTTP/1.1\r\n{source.head_lines}"
               f"Accept-Encoding: {'gzip' if accept_gzip else 'identity'}\r\n\r\n").encode("latin-1")
    src_sock: Optional[socket.socket] = None
    dst_sock: Optional[socket.socket] = None
    forwarded = False
    try:
        # The source's answer head (a kept-alive socket found closed: once more on a new one).
        for attempt in (1, 2):
            src_sock, reused = await source.take()
            try:
                await _send_all(src_sock, request, source.timeout)
                status, reason, headers, keep_src, rest = await _relay_head(src_sock, source.timeout)
                break
            except (_Stale, BrokenPipeError, ConnectionResetError):
                src_sock.close()
                src_sock = None
                if not reused or attempt == 2:
                    raise RelayError("the source closed the connection before answering",
                                     side="source", forwarded=False) from None
        assert src_sock is not None
        encoding = headers.get("content-encoding", "identity").lower()
        length_text = headers.get("content-length")
        problem = None
        if status != 200:
            problem = f"the source answered HTTP {status}"
        elif "chunked" in headers.get("transfer-encoding", "").lower() or length_text is None:
            problem = "the source's answer has no length"
        elif encoding not in ("identity", "gzip"):
            problem = f"the source's answer is {encoding}-encoded"
        if problem is not None:
            raise RelayError(problem, side="source", forwarded=False, status=status)
        assert length_text is not None
        length = _parse_size(length_text.encode(), 10, "Content-Length")
        gzipped = encoding == "gzip"
        if not gzipped and expected_size is not None and length != expected_size:
            raise RelayError(f"the source's file has {length} bytes, {expected_size} expected",
                             side="source", forwarded=False)
        if len(rest) > length:
            keep_src = False   # more than one answer: nothing to reuse
            rest = rest[:length]

        extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers.items())
        head = (f"{method} {target.prefix}{upload_path} HTTP/1.1\r\n{target.head_lines}{extra}"
                f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
                + ("Content-Encoding: gzip\r\n" if gzipped else "") + "\r\n").encode("latin-1")
        for attempt in (1, 2):
            dst_sock, reused = await target.take()
            try:
                await _send_all(dst_sock, head, target.timeout)
                break
            except (BrokenPipeError, ConnectionResetError):
                dst_sock.close()
                dst_sock = None
                if not reused or attempt == 2:
                    raise
        assert dst_sock is not None
        forwarded = True
        try:
            if rest:
                await _send_all(dst_sock, rest, target.timeout)
        except OSError as exc:
            raise RelayError(f"connection to the target broken: {exc}", side="target", forwarded=True) from None
        await _splice(src_sock, dst_sock, length - len(rest), source.timeout)
        if keep_src:
            source.give(src_sock)
        else:
            src_sock.close()
        src_sock = None

        try:
            status, reason, answer_headers, keep_dst, rest = await _relay_head(dst_sock, target.timeout)
            content, complete = await _relay_body(dst_sock, answer_headers, rest, target.timeout)
        except _Stale:
            if reused:
                raise
            raise RelayError("the target closed the connection without answering", side="target",
                             forwarded=True) from None
        if keep_dst and complete:
            target.give(dst_sock)
        else:
            dst_sock.close()
        dst_sock = None
        if answer_headers.get("content-encoding", "").lower() == "gzip" and content:
            # Not asked for, but a proxy in front may add it.
            try:
                content = zlib.decompress(content, 31)
            except zlib.error as exc:
                raise RelayError(f"corrupt gzip answer: {exc}", side="target", forwarded=True) from None
        return RelayAnswer(status, reason, answer_headers, content, length, "gzip" if gzipped else None)
    except (RelayError, _Stale):
        raise
    except TimeoutError:
        side = "target" if forwarded else "source"
        raise RelayError(f"no answer within {target.timeout if forwarded else source.timeout:.0f} s "
                         "(timeout)", side=side, forwarded=forwarded, timeout=True) from None
    except (OSError, FastHttpError) as exc:
        side = "target" if forwarded else "source"
        raise RelayError(f"connection broken: {exc}", side=side, forwarded=forwarded) from None
    finally:
        for sock in (src_sock, dst_sock):
            if sock is not None:
                sock.close()
