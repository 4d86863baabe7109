"""An asyncio HTTP front that injects faults in front of a real Orthanc.

A real Orthanc does not answer 503 on demand, send an HTML page instead of
JSON, lie in a lookup answer or redirect to another host. This front
forwards every request to a real Orthanc and lets a *handler* replace or
rewrite chosen answers. It speaks just enough HTTP/1.1 for httpx and
urllib: keep-alive, Content-Length and chunked request bodies; answers are
always sent with a Content-Length. With ``ssl_context`` it serves HTTPS
(used for the TLS certificate scenarios).

A handler is ``async def handler(request, forward) -> FrontResponse``;
``forward(request)`` returns the real server's answer. The helpers below
(:func:`fail_first`, :func:`rewrite_json`, :func:`canned`, :func:`redirect`)
build handlers; :func:`chain` combines them. Raising :class:`DropConnection`
in a handler resets the client's connection.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import httpx

__all__ = ["FrontRequest", "FrontResponse", "HttpFront", "DropConnection",
           "fail_first", "rewrite_json", "canned", "redirect", "chain", "match_path"]

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
              "upgrade", "proxy-connection"}
MAX_HEADER_BYTES = 64 * 1024


class DropConnection(Exception):
    """Raised by a handler: reset the client's connection without answering."""


@dataclass
class FrontRequest:
    method: str
    target: str                       # path with query string
    headers: List[Tuple[str, str]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class FrontResponse:
    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def of_json(cls, status: int, value: Any) -> "FrontResponse":
        return cls(status, [("Content-Type", "application/json")], json.dumps(value).encode())

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def decoded(self) -> "FrontResponse":
        """The same answer without Content-Encoding (Orthanc gzips JSON for httpx)."""
        if (self.header("content-encoding") or "").lower() != "gzip":
            return self
        headers = [(k, v) for k, v in self.headers if k.lower() != "content-encoding"]
        return FrontResponse(self.status, headers, gzip.decompress(self.body))

    def json(self) -> Any:
        return json.loads(self.decoded().body)


Forward = Callable[[FrontRequest], Awaitable[FrontResponse]]
Handler = Callable[[FrontRequest, Forward], Awaitable[FrontResponse]]
Matcher = Callable[[FrontRequest], bool]


async def _pass_through(request: FrontRequest, forward: Forward) -> FrontResponse:
    return await forward(request)


class HttpFront:
    """The front itself. ``url`` is where clients connect; ``upstream`` the real server."""

    def __init__(self, upstream: str, handler: Optional[Handler] = None, *,
                 ssl_context: Optional[ssl.SSLContext] = None, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.handler: Handler = handler or _pass_through
        self.ssl_context = ssl_context
        self.host = host
        self.requests: List[FrontRequest] = []   # every request received, in order
        self._server: Optional[asyncio.AbstractServer] = None
        self._client: Optional[httpx.AsyncClient] = None
        self._tasks: set = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "HttpFront is not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> "HttpFront":
        # No automatic decompression, no redirects: the client must see the real bytes.
        # One upstream connection per request: Orthanc closes an idle kept-alive
        # connection after KeepAliveTimeout (1 s), and a request racing that close
        # failed as "upstream failed" (502) although the server was fine.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None), follow_redirects=False,
                                         limits=httpx.Limits(max_keepalive_connections=0))
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl_context)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "HttpFront":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- forwarding ------------------------------------------------------------

    async def forward(self, request: FrontRequest) -> FrontResponse:
        assert self._client is not None
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP | {"host"}]
        upstream = self._client.build_request(request.method, self.upstream + request.target,
                                              headers=headers, content=request.body)
        answer = await self._client.send(upstream, stream=True)
        try:
            body = b"".join([part async for part in answer.aiter_raw()])
        finally:
            await answer.aclose()
        out = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        return FrontResponse(answer.status_code, out, body)

    # --- serving ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                try:
                    response = await self.handler(request, self.forward)
                except DropConnection:
                    _reset(writer)
                    return
                except httpx.HTTPError as exc:
                    response = FrontResponse.of_json(502, {"Message": f"front: upstream failed: {exc}"})
                writer.write(_encode_response(response, request.method))
                await writer.drain()
                if (request.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError, ValueError):
            pass
        except asyncio.CancelledError:
            _reset(writer)
            raise
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass


async def _read_request(reader: asyncio.StreamReader) -> Optional[FrontRequest]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too large")
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    request = FrontRequest(method, target, headers)
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        request.body = b"".join(parts)
    else:
        length = int(request.header("content-length") or 0)
        request.body = await reader.readexactly(length) if length else b""
    return request


def _encode_response(response: FrontResponse, method: str) -> bytes:
    reason = httpx.codes.get_reason_phrase(response.status) or "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{k}: {v}" for k, v in response.headers if k.lower() not in HOP_BY_HOP]
    lines.append(f"Content-Length: {len(response.body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if method == "HEAD" else head + response.body


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


# --- handler builders ---------------------------------------------------------------

def match_path(prefix: str, method: Optional[str] = None) -> Matcher:
    """Requests whose path starts with ``prefix`` (and with ``method`` if given)."""
    def matches(request: FrontRequest) -> bool:
        return request.path.startswith(prefix) and (method is None or request.method == method)
    return matches


class _Counter:
    def __init__(self) -> None:
        self.count = 0


def fail_first(status: int, times: Optional[int], match: Matcher = lambda r: True,
               counter: Optional[_Counter] = None) -> Handler:
    """Answer ``status`` (an Orthanc-style JSON error) to the first ``times``
    matching requests (``None``: forever); forward everything else."""
    state = counter or _Counter()

    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        if match(request) and (times is None or state.count < times):
            state.count += 1
            return FrontResponse.of_json(status, {
                "HttpError": "Service Unavailable" if status == 503 else "Internal Server Error",
                "HttpStatus": status, "Message": "injected fault", "Method": request.method,
                "OrthancError": "Injected", "OrthancStatus": -1, "Uri": request.path})
        return await forward(request)
    handler.counter = state  # type: ignore[attr-defined]
    return handler


def rewrite_json(match: Matcher, rewrite: Callable[[Any], Any]) -> Handler:
    """Forward, then replace the JSON answer of matching requests by ``rewrite(answer)``."""
    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        response = await forward(request)
        if match(request) and 200 <= response.status < 300:
            response = FrontResponse.of_json(response.status, rewrite(response.json()))
        return response
    return handler


def canned(match: Matcher, status: int, body: bytes,
           content_type: str = "application/json") -> Handler:
    """Answer matching requests with fixed bytes (an HTML page, broken JSON...)."""
    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        if match(request):
            return FrontResponse(status, [("Content-Type", content_type)], body)
        return await forward(request)
    return handler


def redirect(match: Matcher, location: str, status: int = 307) -> Handler:
    """Redirect matching requests to ``location`` (another host, in the tests)."""
    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        if match(request):
            return FrontResponse(status, [("Location", location + request.target)], b"")
        return await forward(request)
    return handler


def chain(*handlers: Handler) -> Handler:
    """Apply handlers in order: each one's ``forward`` goes through the next one."""
    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        async def step(index: int, req: FrontRequest) -> FrontResponse:
            if index == len(handlers):
                return await forward(req)
            return await handlers[index](req, lambda r: step(index + 1, r))
        return await step(0, request)
    return handler
