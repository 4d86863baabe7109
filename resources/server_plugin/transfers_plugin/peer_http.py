"""A small HTTP client from this Orthanc to one of its peers (standard library only).

Connections are kept alive and reused by the job's worker threads. Every
failure becomes a :class:`PeerError` whose text names the peer and says
what happened in words (refused credentials, unreachable, the peer's own
error ``Details``), since that text ends up in the job's ErrorDescription.
TLS certificates are verified (the CA bundle of Orthanc's
``HttpsCACertificates`` when set, else the system's).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

from .safe_json import json_too_deep

FORM = "application/x-www-form-urlencoded"  # what the C++ sender labels every body with
RETRY_WAIT = 1.0                            # seconds between attempts, as the C++ plugin waits
RETRYABLE_STATUSES = (502, 503, 504)
# What a request on a kept-alive connection the peer has closed meanwhile raises.
STALE_CONNECTION = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                    http.client.RemoteDisconnected, http.client.BadStatusLine)


# Orthanc error codes a failed job reports (as Orthanc's own HTTP client would).
NETWORK_PROTOCOL, TIMEOUT, UNAUTHORIZED = 9, 16, 29


class PeerError(Exception):
    """A request to a peer failed; ``status`` is the HTTP status when there was an answer,
    ``code`` the Orthanc error code the job reports."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None,
                 code: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.code = code if code is not None else (UNAUTHORIZED if status == 401 else NETWORK_PROTOCOL)


class PeerHttp:
    def __init__(self, peer: Any, timeout: float, retries: int = 0,
                 ca_file: Optional[str] = None, verify: bool = True) -> None:
        self.peer = peer
        self.timeout = peer.timeout or timeout
        self.retries = max(0, int(retries))
        parsed = urllib.parse.urlsplit(peer.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise PeerError("peer %r: its URL %r is not an http(s) URL" % (peer.name, peer.url))
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.base_headers = dict(peer.headers)
        if peer.username:
            token = base64.b64encode(("%s:%s" % (peer.username, peer.password or "")).encode()).decode()
            self.base_headers["Authorization"] = "Basic " + token
        self.context: Optional[ssl.SSLContext] = None
        if self.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca_file or None)
            if not verify:  # only when Orthanc's own HttpsVerifyPeers is false
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
            if peer.certificate_file:
                self.context.load_cert_chain(peer.certificate_file, peer.key_file, peer.key_password)
        self.lock = threading.Lock()
        self.idle: List[http.client.HTTPConnection] = []
        self.queries = 0   # completed HTTP queries, for the job's CompletedHttpQueries

    @property
    def url(self) -> str:
        return self.peer.url.rstrip("/")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        with self.lock:
            connection = self.idle.pop() if self.idle else None
        if connection is None:
            if self.scheme == "https":
                connection = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                                         context=self.context)
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < 16:
                self.idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()

    def _once(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
              timeout: float) -> Tuple[int, Dict[str, str], bytes]:
        connection = self._connection(timeout)
        reused = connection.sock is not None
        try:
            connection.request(method, self.prefix + path, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            answer_headers = {k.lower(): v for k, v in answer.getheaders()}
        except STALE_CONNECTION if reused else ():  # noqa: B030 - no handler on a fresh connection
            # The peer closed an idle kept-alive connection before reading this
            # request: not a failure of the peer, so try once on a new connection.
            connection.close()
            with self.lock:
                stale, self.idle = self.idle, []
            for other in stale:
                other.close()
            return self._once(method, path, body, headers, timeout)
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return answer.status, answer_headers, data

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
                ok: Tuple[int, ...] = (200,)) -> Tuple[int, Dict[str, str], bytes]:
        """Send one query (retried up to MaxHttpRetries times on network errors and
        502-504); any status outside ``ok`` raises a PeerError."""
        all_headers = dict(self.base_headers)
        all_headers.update(headers or {})
        if body is not None and not any(k.lower() == "content-type" for k in all_headers):
            all_headers["Content-Type"] = FORM
        wait = timeout or self.timeout
        attempt = 0
        while True:
            try:
                status, answer_headers, data = self._once(method, path, body, all_headers, wait)
            except (OSError, http.client.HTTPException) as exc:
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(RETRY_WAIT)
                    continue
                timed_out = isinstance(exc, (socket.timeout, TimeoutError))
                raise PeerError(self._network_text(method, path, exc),
                                code=TIMEOUT if timed_out else None) from None
            if status in RETRYABLE_STATUSES and attempt < self.retries:
                attempt += 1
                time.sleep(RETRY_WAIT)
                continue
            with self.lock:
                self.queries += 1
            if status not in ok:
                raise PeerError(self._status_text(method, path, status, data), status, _json_or_none(data))
            return status, answer_headers, data

    def json(self, method: str, path: str, value: Any = None, headers: Optional[Dict[str, str]] = None,
             timeout: Optional[float] = None, ok: Tuple[int, ...] = (200,)) -> Any:
        body = None if value is None else json.dumps(value).encode()
        if method in ("POST", "PUT") and body is None:
            body = b""
        _, _, data = self.request(method, path, body, headers, timeout, ok)
        parsed = _json_or_none(data)
        if parsed is None and data.strip():
            raise PeerError("peer %r: %s %s answered something that is not JSON: %r"
                            % (self.peer.name, method, path.split("?")[0], data[:80]))
        return parsed

    # --- words for errors ------------------------------------------------------

    def _network_text(self, method: str, path: str, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = "its TLS certificate could not be verified (%s)" % exc.verify_message
        elif isinstance(exc, (socket.timeout, TimeoutError)):
            why = "no answer within the timeout"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is the peer running?)"
        elif isinstance(exc, socket.gaierror):
            why = "its host name cannot be resolved"
        else:
            why = str(exc) or type(exc).__name__
        tries = " after %d attempts" % (self.retries + 1) if self.retries else ""
        return "peer %r at %s cannot be reached%s: %s (%s %s)" % (
            self.peer.name, self.peer.url, tries, why, method, path.split("?")[0])

    def _status_text(self, method: str, path: str, status: int, data: bytes) -> str:
        where = "%s %s" % (method, path.split("?")[0])
        if status == 401:
            return ("peer %r refused the credentials (401 Unauthorized on %s): check Username and Password"
                    " of this peer in OrthancPeers" % (self.peer.name, where))
        if status == 403:
            return "peer %r forbids %s (403 Forbidden)" % (self.peer.name, where)
        body = _json_or_none(data)
        reason = ""
        if isinstance(body, dict):
            reason = str(body.get("Details") or body.get("Message") or "")
        return "peer %r answered %d to %s%s" % (self.peer.name, status, where, ": " + reason if reason else "")


def _json_or_none(data: bytes) -> Any:
    if not data or json_too_deep(data):
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
