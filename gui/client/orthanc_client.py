"""Async client for Orthanc's REST API and the transfers accelerator endpoints."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterable, List, Mapping, Optional,
                    Set, Tuple)

import httpx

from gui.client.errors import OrthancError
from gui.client.fast_http import FastHttp, FastHttpError, FastResponse, proxied
from gui.client.peer import Peer
from gui.client.rate_limit import RateLimit
from gui.protocol import wire

if TYPE_CHECKING:
    from gui.client.transfers_api import TransfersApi

log = logging.getLogger(__name__)

# httpx imports its transport stack (httpcore, h11, anyio and anyio's asyncio
# backend) on the first request, on the event loop: about 60 ms during which
# the window would freeze. Import it with this module instead. The names are
# the libraries' own module layout; a future version that moves them only
# brings the freeze back.
for _module in ("httpcore", "h11", "anyio", "anyio._backends._asyncio", "httpcore._backends.anyio"):
    try:
        importlib.import_module(_module)
    except ImportError:  # pragma: no cover - depends on the installed versions
        pass
# httpcore asks ``import sniffio`` on every request; without sniffio installed
# (anyio 4 no longer needs it) each failed import searches sys.path: a fifth
# of the engine's CPU on thousands of small requests. A None entry makes the
# import fail at once, which httpcore reads as "asyncio".
try:
    importlib.import_module("sniffio")
except ImportError:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

DEFAULT_TIMEOUT = 60.0
LEVEL_PATHS = {"Patient": "patients", "Study": "studies", "Series": "series", "Instance": "instances"}
CHILD_LEVEL = {"Patient": "Study", "Study": "Series", "Series": "Instance"}
# Cap on JSON answers: a hostile peer must not make us buffer gigabytes of JSON.
# A request and answer both at most this large take about one round trip.
SMALL_REQUEST = 16 * 1024
MAX_JSON_BYTES = 256 * 1024 * 1024
# Request bodies above this size are written in pieces of this size: httpx
# applies its write timeout to each write, so a 200 MB upload written at once
# over a 10 Mbit/s link would time out although bytes keep flowing.
UPLOAD_PIECE = 256 * 1024
FAST_CONNECTIONS = 40
# (level, resource ID) -> (instance ID, SOP Instance UID, series ID) of each instance listed.
KeptListings = Dict[Tuple[str, str], List[Tuple[str, str, str]]]


@dataclass
class ServerInfo:
    name: str
    version: str
    api_version: Optional[int]
    raw: Dict[str, Any]


@dataclass
class AcceleratorInfo:
    available: bool
    plugins: List[str]
    flavour: str  # "transfers" (C++ plugin), "python" (this project's), "" when absent


class OrthancClient:
    """One peer, one connection pool. Use ``async with`` or call ``aclose()``.

    Every failure is an :class:`OrthancError` with method, URL, status and
    Orthanc's error fields. Credentials never appear in errors or logs.
    """

    def __init__(self, peer: Peer, *, timeout: Optional[float] = None,
                 max_connections: int = 16, transport: Optional[httpx.AsyncBaseTransport] = None,
                 extra_headers: Optional[Mapping[str, str]] = None,
                 rate_limit: Optional[RateLimit] = None) -> None:
        self.peer = peer
        # Bandwidth caps (rate_limit.py), shared with the lean client.
        self.rate_limit = rate_limit
        self.timeout = peer.timeout or timeout or DEFAULT_TIMEOUT
        self._accelerator: Optional[AcceleratorInfo] = None
        self._transfers: Optional["TransfersApi"] = None
        # Durations of small requests so far (the shortest, how many): a
        # transfer's link probe reuses them instead of spending round trips.
        self.fastest_small_request = float("inf")
        self.small_requests = 0
        # What a listing with ``keep=True`` said of each instance (SOP
        # Instance UID, parent series), per listed resource, until taken.
        self._kept_listings: KeptListings = {}
        self._in_flight = 0
        self._started = 0
        headers = dict(peer.http_headers)
        headers.update(extra_headers or {})
        auth = httpx.BasicAuth(peer.username, peer.password or "") if peer.username else None
        self._http = httpx.AsyncClient(
            base_url=peer.url,
            auth=auth,
            headers=headers,
            verify=self._tls_context(peer),
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0)),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            follow_redirects=False,  # a redirect to another host must not receive our credentials
            transport=transport,
        )
        # The per-instance requests (MD5s, files, uploads) go through the lean
        # client (``fast_http``), unless a test injects a transport or the
        # environment routes this server through a proxy.
        self._fast: Optional[FastHttp] = None
        if transport is None and not proxied(peer.url):
            # Enough connections for a transfer's uploads and MD5 read-backs at
            # once (plain mode: 8 + 32), well below Orthanc's 50 HTTP threads.
            self._fast = FastHttp(peer.url, headers=headers, ssl_context=self._tls_context(peer),
                                  timeout=self.timeout, connect_timeout=min(self.timeout, 15.0),
                                  max_connections=max(max_connections, FAST_CONNECTIONS),
                                  username=peer.username,
                                  password=peer.password, rate_limit=rate_limit)

    @staticmethod
    def _tls_context(peer: Peer) -> Any:
        return tls_context(peer)

    async def __aenter__(self) -> "OrthancClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._fast is not None:
            await self._fast.aclose()

    @property
    def base_url(self) -> str:
        return self.peer.url

    # --- low level -----------------------------------------------------------

    def _error(self, reason: str, method: str, path: str, status: Optional[int] = None,
               body: Any = None) -> OrthancError:
        return OrthancError(reason, method=method, url=self.peer.url + path, status=status,
                            body=body, peer=self.peer.name)

    async def request(self, method: str, path: str, *, content: Any = None,
                      json_body: Any = None, params: Optional[Mapping[str, Any]] = None,
                      headers: Optional[Mapping[str, str]] = None,
                      timeout: Optional[float] = None, expect: Iterable[int] = (200,)) -> httpx.Response:
        """Send one request; non-2xx answers and transport failures raise OrthancError."""
        if json_body is not None:
            content = json.dumps(json_body).encode()
        capped = self.rate_limit if self.rate_limit is not None and self.rate_limit.active else None
        if capped is not None:
            if isinstance(content, (bytes, bytearray, memoryview)) and len(content) <= UPLOAD_PIECE:
                await capped.spend(len(content))
            elif content is not None and not isinstance(content, (bytes, bytearray, memoryview)):
                content = _spent_pieces(content, capped)
        if isinstance(content, (bytes, bytearray, memoryview)) and len(content) > UPLOAD_PIECE:
            headers = dict(headers or {})
            headers["Content-Length"] = str(len(content))
            content = _in_pieces(content)
            if capped is not None:
                content = _spent_pieces(content, capped)
        small = content is None or (isinstance(content, (bytes, bytearray, memoryview))
                                    and len(content) <= SMALL_REQUEST)
        kwargs: Dict[str, Any] = {"content": content, "params": params, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        # Only a request that had the connection to itself measures the round trip.
        alone, order = self._in_flight == 0, self._started
        self._in_flight += 1
        self._started += 1
        started = time.perf_counter()
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise self._error(f"no answer within {timeout or self.timeout:.0f} s (timeout)", method, path) from None
        except httpx.ConnectError as exc:
            raise self._error(_connect_reason(exc), method, path) from None
        except httpx.RemoteProtocolError as exc:
            raise self._error(f"connection broken: {exc}", method, path) from None
        except httpx.HTTPError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}", method, path) from None
        except ssl.SSLError as exc:
            raise self._error(f"TLS error: {exc}", method, path) from None
        finally:
            self._in_flight -= 1
        if capped is not None:
            # httpx read the answer whole: its bytes delay this client's next ones.
            await capped.spend(int(getattr(response, "num_bytes_downloaded", 0) or len(response.content)))
        alone = alone and self._started == order + 1
        if alone and small and len(response.content) <= SMALL_REQUEST:
            self._observe_round_trip(time.perf_counter() - started)
        if response.status_code not in expect:
            raise self._status_error(method, path, response)
        return response

    def _observe_round_trip(self, seconds: float) -> None:
        self.fastest_small_request = min(self.fastest_small_request, seconds)
        self.small_requests += 1

    def _status_error(self, method: str, path: str, response: httpx.Response) -> OrthancError:
        return self._answer_error(method, path, response.status_code, response.headers.get("location"),
                                  response.content, response.reason_phrase)

    def _answer_error(self, method: str, path: str, status: int, location: Optional[str],
                      content: bytes, reason_phrase: str) -> OrthancError:
        """The error for an unexpected answer, from either HTTP client."""
        body: Any = None
        try:
            body = json.loads(content) if content else None
        except (ValueError, UnicodeDecodeError):
            body = None
        if 300 <= status < 400:
            reason = f"the server redirects to {(location or '?')[:100]}; not followed (check the peer URL)"
        elif status == 401:
            reason = "wrong username or password"
        elif status == 403:
            reason = "access forbidden"
        elif status == 404:
            reason = "not found"
        elif isinstance(body, dict) and body.get("Message"):
            reason = str(body.get("Message"))
        else:
            reason = reason_phrase or "request failed"
        return self._error(reason, method, path, status, body)

    async def fast_request(self, method: str, path: str, *, content: Any = None,
                           headers: Optional[Mapping[str, str]] = None,
                           timeout: Optional[float] = None, expect: Iterable[int] = (200,),
                           consume: Optional[Callable[[bytes], Any]] = None,
                           on_sent: Optional[Callable[[int], None]] = None) -> "FastResponse | httpx.Response":
        """:meth:`request` through the lean client when there is one (same
        errors); ``consume`` streams the answer's body instead of keeping it;
        ``on_sent(bytes)`` follows a request body given whole (bytes) as it goes."""
        if self._fast is None:
            if consume is not None:
                await self.stream_get(path, lambda piece: consume(piece) is not False, headers=headers)
                return httpx.Response(200)
            if on_sent is not None and isinstance(content, (bytes, bytearray, memoryview)):
                headers = dict(headers or {})
                headers["Content-Length"] = str(len(content))
                content = _followed_pieces(content, on_sent)
            return await self.request(method, path, content=content, headers=headers, timeout=timeout,
                                      expect=expect)
        self._in_flight += 1   # not a measurement itself, but it spoils one made meanwhile
        self._started += 1
        try:
            if consume is None:
                response = await self._fast.request(method, path, body=content, headers=headers,
                                                    timeout=timeout, on_sent=on_sent)
            else:
                response = await self._fast.stream(method, path, consume, body=content, headers=headers,
                                                   timeout=timeout)
        except FastHttpError as exc:
            if exc.timeout:
                reason = f"no answer within {timeout or self.timeout:.0f} s (timeout)"
            elif exc.cause is not None and path and "cannot connect" in exc.reason:
                reason = _connect_reason(exc.cause)
            else:
                reason = exc.reason
            raise self._error(reason, method, path) from None
        finally:
            self._in_flight -= 1
        if response.status not in expect:
            raise self._fast_status_error(method, path, response)
        return response

    def _fast_status_error(self, method: str, path: str, response: FastResponse) -> OrthancError:
        return self._answer_error(method, path, response.status, response.headers.get("location"),
                                  response.content, response.reason)

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        return self._json(await self.request("GET", path, **kwargs), "GET", path)

    async def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self._json(await self.request("POST", path, json_body=body, **kwargs), "POST", path)

    def _json(self, response: "httpx.Response | FastResponse", method: str, path: str) -> Any:
        status = response.status_code if isinstance(response, httpx.Response) else response.status
        if len(response.content) > MAX_JSON_BYTES:
            raise self._error("answer too large", method, path, status)
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            kind = "an HTML page" if response.content.lstrip()[:1] == b"<" else "invalid JSON"
            raise self._error(f"expected JSON from Orthanc, got {kind}", method, path, status) from None

    # --- server ----------------------------------------------------------------

    async def system(self) -> ServerInfo:
        data = await self.get_json("/system")
        if not isinstance(data, dict) or "Version" not in data or "ApiVersion" not in data:
            raise self._error("this HTTP server is not Orthanc (no Version in /system)", "GET", "/system")
        return ServerInfo(str(data.get("Name", "")), str(data["Version"]), data.get("ApiVersion"), data)

    async def plugins(self) -> List[str]:
        data = await self.get_json("/plugins")
        if not isinstance(data, list):
            raise self._error("unexpected answer to /plugins", "GET", "/plugins")
        return [str(p) for p in data]

    async def accelerator(self, *, cached: bool = False) -> AcceleratorInfo:
        """Detect the protocol itself: the Python plugin shows as ``python`` in /plugins.

        ``cached``: reuse this client's last answer, if any (a job asks more
        than once; over a WAN each asking costs two round trips)."""
        if cached and self._accelerator is not None:
            return self._accelerator
        # Both questions at once: over a WAN, one round trip instead of two.
        results: List[Any] = list(await asyncio.gather(self.plugins(), self.post_json(wire.URI_LOOKUP, []),
                                                       return_exceptions=True))
        listed, looked_up = results
        if isinstance(listed, BaseException):
            raise listed
        plugins: List[str] = listed
        if isinstance(looked_up, OrthancError):
            if looked_up.status is None or looked_up.status == 401:
                raise looked_up
            available = False
        elif isinstance(looked_up, BaseException):
            raise looked_up
        else:
            available = isinstance(looked_up, dict) and isinstance(looked_up.get("Instances"), list)
        flavour = ""
        if available:
            flavour = "transfers" if "transfers" in plugins else "python"
        self._accelerator = AcceleratorInfo(available, plugins, flavour)
        return self._accelerator

    async def speaks_accelerator(self) -> bool:
        return (await self.accelerator()).available

    # --- browsing ------------------------------------------------------------------

    async def find(self, level: str, query: Mapping[str, str], *, limit: Optional[int] = None,
                   since: Optional[int] = None, expand: bool = True) -> List[Dict[str, Any]]:
        body: Dict[str, Any] = {"Level": level, "Query": dict(query), "Expand": expand}
        if limit is not None:
            body["Limit"] = limit
        if since is not None:
            body["Since"] = since
        data = await self.post_json("/tools/find", body)
        if not isinstance(data, list):
            raise self._error("unexpected answer to /tools/find", "POST", "/tools/find")
        return data

    async def search_studies(self, *, patient_name: str = "", patient_id: str = "",
                             accession: str = "", date_from: str = "", date_to: str = "",
                             modality: str = "", limit: Optional[int] = None,
                             since: Optional[int] = None) -> List[Dict[str, Any]]:
        """Studies matching the filters (wildcards allowed); dates as YYYYMMDD."""
        query: Dict[str, str] = {}
        if patient_name:
            query["PatientName"] = _wild(patient_name)
        if patient_id:
            query["PatientID"] = _wild(patient_id)
        if accession:
            query["AccessionNumber"] = _wild(accession)
        if date_from or date_to:
            query["StudyDate"] = f"{date_from}-{date_to}"
        if modality:
            query["ModalitiesInStudy"] = modality
        return await self.find("Study", query, limit=limit, since=since)

    async def list_patients(self, *, limit: int, since: int = 0) -> List[Dict[str, Any]]:
        """A page of all the patients, expanded like ``find``'s, in the server's own order
        (``GET /patients?expand&since&limit``). Orthanc 1.10 answers ``/tools/find`` with
        ``Since`` in time growing with the offset (it walks the patients before it); this
        one costs the same for the last page of 50,000 patients as for the first."""
        if limit < 1 or since < 0:
            raise ValueError("list_patients: limit must be at least 1 and since at least 0")
        data = await self.get_json("/patients", params={"expand": "", "since": since, "limit": limit})
        if not isinstance(data, list):
            raise self._error("unexpected answer to /patients", "GET", "/patients")
        return data

    async def search_patients(self, text: str = "", *, limit: Optional[int] = None,
                              since: Optional[int] = None) -> List[Dict[str, Any]]:
        """Patients whose name or ID matches ``text`` (both searched, merged)."""
        if not text:
            return await self.find("Patient", {}, limit=limit, since=since)
        by_name = await self.find("Patient", {"PatientName": _wild(text)}, limit=limit, since=since)
        by_id = await self.find("Patient", {"PatientID": _wild(text)}, limit=limit, since=since)
        merged = {p["ID"]: p for p in by_name + by_id}
        return list(merged.values())

    async def children(self, level: str, resource_id: str) -> List[Dict[str, Any]]:
        """Expanded children of a patient (studies), study (series) or series (instances)."""
        child = CHILD_LEVEL[level]
        path = f"/{LEVEL_PATHS[level]}/{wire.check_orthanc_id(resource_id)}/{LEVEL_PATHS[child]}"
        data = await self.get_json(path)
        if not isinstance(data, list):
            raise self._error("unexpected answer", "GET", path)
        return data

    async def resource(self, level: str, resource_id: str) -> Dict[str, Any]:
        path = f"/{LEVEL_PATHS[level]}/{wire.check_orthanc_id(resource_id)}"
        return await self._get_object(path)

    async def statistics(self, level: str, resource_id: str) -> Dict[str, Any]:
        path = f"/{LEVEL_PATHS[level]}/{wire.check_orthanc_id(resource_id)}/statistics"
        return await self._get_object(path)

    async def _get_object(self, path: str) -> Dict[str, Any]:
        data = await self.get_json(path)
        if not isinstance(data, dict):
            raise self._error("unexpected answer (not a JSON object)", "GET", path)
        return data

    async def instances_of(self, level: str, resource_id: str, *, keep: bool = False) -> List[Dict[str, Any]]:
        """Every instance below a resource, each with ``ID`` and ``FileSize``.
        ``keep``: remember each one's SOP Instance UID and series for
        :meth:`take_listing` (a job's planning lists what its audit record
        names later: the source is not asked twice)."""
        if level == "Instance":
            data = [await self.resource("Instance", resource_id)]
        else:
            path = f"/{LEVEL_PATHS[level]}/{wire.check_orthanc_id(resource_id)}/instances"
            data = await self.get_json(path)
            if not isinstance(data, list) or not all(isinstance(i, dict) and "ID" in i for i in data):
                raise self._error("unexpected answer", "GET", path)
        if keep:
            kept = []
            for item in data:
                tags = item.get("MainDicomTags")
                sop = tags.get("SOPInstanceUID", "") if isinstance(tags, dict) else ""
                kept.append((str(item["ID"]), str(sop), str(item.get("ParentSeries", ""))))
            self._kept_listings[(level, resource_id)] = kept
        return data

    def take_listing(self, level: str, resource_id: str) -> Optional[List[Tuple[str, str, str]]]:
        """(ID, SOP Instance UID, series) of each instance a ``keep`` listing
        of that resource found, once; None when it was not listed so."""
        return self._kept_listings.pop((level, resource_id), None)

    def take_listings(self) -> KeptListings:
        """Every kept listing, handed over (a plan made by a client that closes
        gives them to the job's own client: :meth:`keep_listings`)."""
        kept, self._kept_listings = self._kept_listings, {}
        return kept

    def keep_listings(self, listings: KeptListings) -> None:
        self._kept_listings.update(listings)

    async def lookup_uid(self, uid: str, level: Optional[str] = None) -> List[Dict[str, str]]:
        """Resolve a DICOM UID or PatientID to Orthanc resources (``/tools/lookup``)."""
        data = await self.request("POST", "/tools/lookup", content=uid.encode())
        found = self._json(data, "POST", "/tools/lookup")
        if not isinstance(found, list):
            raise self._error("unexpected answer", "POST", "/tools/lookup")
        out = [{"Level": item["Type"], "ID": item["ID"]} for item in found
               if isinstance(item, dict) and item.get("Type") in LEVEL_PATHS]
        return [r for r in out if level is None or r["Level"] == level]

    # --- instances -------------------------------------------------------------------

    async def instance_md5(self, instance_id: str) -> str:
        path = f"/instances/{wire.check_orthanc_id(instance_id)}/attachments/dicom/md5"
        text = (await self.fast_request("GET", path)).text.strip()
        if len(text) != 32:
            raise self._error("malformed MD5 answer", "GET", path)
        return text

    async def instance_md5_or_none(self, instance_id: str) -> Optional[str]:
        """The stored MD5, or None when the instance is not on this server."""
        try:
            return await self.instance_md5(instance_id)
        except OrthancError as exc:
            if exc.status == 404:
                return None
            raise

    async def download_instance(self, instance_id: str, *, gzip: bool = True) -> bytes:
        """The stored file; ``gzip`` lets Orthanc compress it on the wire (worth
        it on slow links, a cost on fast ones: Orthanc compresses single-threaded)."""
        return (await self.fetch_instance(instance_id, gzip=gzip))[0]

    async def fetch_instance(self, instance_id: str, *, gzip: bool = True) -> "tuple[bytes, int]":
        """The stored file and how many body bytes crossed the network for it."""
        path = f"/instances/{wire.check_orthanc_id(instance_id)}/file"
        headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
        response = await self.fast_request("GET", path, headers=headers)
        if isinstance(response, FastResponse):
            return response.content, response.wire_bytes
        data = response.content
        return data, int(getattr(response, "num_bytes_downloaded", 0) or len(data))

    async def stream_get(self, path: str, consume: Callable[[bytes], bool], *,
                         headers: Optional[Mapping[str, str]] = None,
                         piece_size: Optional[int] = None,
                         answer_headers: Optional[Dict[str, str]] = None) -> None:
        """GET a binary answer and hand it to ``consume`` piece by piece, without
        holding it whole; ``consume`` returns False to stop reading early.
        ``answer_headers`` (a dict) receives the answer's headers."""
        try:
            async with self._http.stream("GET", path, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise self._status_error("GET", path, response)
                if answer_headers is not None:
                    answer_headers.update({k.lower(): v for k, v in response.headers.items()})
                capped = self.rate_limit if self.rate_limit is not None and self.rate_limit.active else None
                seen = 0
                async for piece in response.aiter_bytes(piece_size):
                    if capped is not None:
                        # The wire's bytes so far (compressed or not), spent as they come.
                        now = int(response.num_bytes_downloaded)
                        await capped.spend(now - seen)
                        seen = now
                    result = consume(piece)
                    if inspect.isawaitable(result):
                        result = await result
                    if result is False:
                        break
        except httpx.TimeoutException:
            raise self._error(f"no answer within {self.timeout:.0f} s (timeout)", "GET", path) from None
        except httpx.ConnectError as exc:
            raise self._error(_connect_reason(exc), "GET", path) from None
        except httpx.HTTPError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}", "GET", path) from None

    async def get_bounded(self, path: str, limit: int, *,
                          headers: Optional[Mapping[str, str]] = None,
                          answer_headers: Optional[Dict[str, str]] = None) -> bytearray:
        """GET a binary answer of at most ``limit`` bytes, streamed into one
        buffer (no second copy; an answer longer than ``limit`` is cut at
        ``limit + 1`` bytes so the caller sees it is too long)."""
        buffer = bytearray()

        def keep(piece: bytes) -> bool:
            buffer.extend(piece)
            if len(buffer) > limit:
                del buffer[limit + 1:]
                return False
            return True

        if self._fast is not None:
            # The lean client: one 1 MB read per piece instead of httpx's
            # layers per 64 KB (a pull's chunk GETs were a third of the
            # engine's CPU). It reads an answer to its end; ``keep`` still
            # holds no more than ``limit + 1`` bytes of it.
            response = await self.fast_request("GET", path, headers=headers, consume=keep)
            if answer_headers is not None:
                answer_headers.update(response.headers)
            return buffer
        await self.stream_get(path, keep, headers=headers, answer_headers=answer_headers)
        return buffer

    async def download_instance_to(self, instance_id: str, sink: Any,
                                   piece_size: int = 256 * 1024, *, gzip: bool = True) -> int:
        """Stream an instance's file into ``sink`` (a binary file object opened
        for writing) without holding it in memory; returns the bytes written."""
        path = f"/instances/{wire.check_orthanc_id(instance_id)}/file"
        written = 0

        def write(piece: bytes) -> Any:
            nonlocal written
            written += len(piece)
            # An awaitable from the sink (backpressure) is awaited by the reader.
            result = sink.write(piece)
            return result if inspect.isawaitable(result) else True

        headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
        if self._fast is not None:
            await self.fast_request("GET", path, headers=headers, consume=write)
        else:
            await self.stream_get(path, write, headers=headers, piece_size=piece_size)
        return written

    async def upload(self, data: bytes, *, content_encoding: Optional[str] = None,
                     timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Store a DICOM file or a ZIP of DICOM files; one status object per file."""
        headers = {"Content-Type": "application/dicom" if data[:2] != b"PK" else "application/zip"}
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        return await self._post_instances(data, headers, timeout)

    async def upload_stream(self, pieces: AsyncIterator[bytes], size: int, *,
                            timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Store one DICOM file of ``size`` bytes given piece by piece."""
        headers = {"Content-Type": "application/dicom", "Content-Length": str(size)}
        return await self._post_instances(pieces, headers, timeout)

    async def upload_file(self, path: Path, *, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Store one DICOM file read from disk piece by piece (never whole in memory)."""
        size = path.stat().st_size

        async def pieces() -> AsyncIterator[bytes]:
            with open(path, "rb") as handle:
                while True:
                    piece = await asyncio.to_thread(handle.read, UPLOAD_PIECE)
                    if not piece:
                        return
                    yield piece

        headers = {"Content-Type": "application/dicom", "Content-Length": str(size)}
        return await self._post_instances(pieces(), headers, timeout)

    async def _post_instances(self, content: Any, headers: Dict[str, str],
                              timeout: Optional[float]) -> List[Dict[str, Any]]:
        response = await self.fast_request("POST", "/instances", content=content, headers=headers,
                                           timeout=timeout)
        answer = self._json(response, "POST", "/instances")
        return answer if isinstance(answer, list) else [answer]

    async def delete(self, level: str, resource_id: str) -> None:
        await self.request("DELETE", f"/{LEVEL_PATHS[level]}/{wire.check_orthanc_id(resource_id)}")

    async def all_instance_ids(self) -> List[str]:
        data = await self.get_json("/instances")
        return [str(i) for i in data] if isinstance(data, list) else []

    # --- accelerator protocol (client side) ---------------------------------------------

    @property
    def transfers(self) -> "TransfersApi":
        """This peer's transfers endpoints (gui/client/transfers_api.py)."""
        if self._transfers is None:
            from gui.client.transfers_api import TransfersApi
            self._transfers = TransfersApi(self)
        return self._transfers


# Building an SSL context loads the CA store (100-300 ms): done once per
# distinct TLS setting and shared, so opening a client does not stall the loop.
_TLS_CONTEXTS: Dict[Tuple[Any, ...], ssl.SSLContext] = {}


def tls_context(peer: Peer) -> Any:
    """The SSL context for a peer: system CAs (plus its CA bundle) and its client
    certificate; verification stays on unless the peer turns it off."""
    if not peer.url.startswith("https"):
        key: Tuple[Any, ...] = ("plain-http",)
    else:
        key = (peer.verify_tls, peer.ca_bundle, peer.certificate_file, peer.certificate_key_file,
               peer.certificate_key_password)
    context = _TLS_CONTEXTS.get(key)
    if context is not None:
        return context
    if key == ("plain-http",):
        # Never used for http://, but httpx wants one; a bare context costs nothing.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    elif not peer.verify_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=peer.ca_bundle) if peer.ca_bundle \
            else ssl.create_default_context()
    if peer.url.startswith("https") and peer.certificate_file:
        context.load_cert_chain(peer.certificate_file, peer.certificate_key_file,
                                peer.certificate_key_password)
    _TLS_CONTEXTS[key] = context
    return context


def _wild(text: str) -> str:
    text = text.strip()
    return text if ("*" in text or "?" in text) else f"*{text}*"


def _connect_reason(exc: BaseException) -> str:
    # httpx wraps the OS error; the useful words are further down the chain.
    texts: List[str] = []
    seen: Set[int] = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        texts.append(f"{type(cur).__name__} {cur}")
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    lowered = " ".join(texts).lower()
    if "certificate" in lowered:
        if "expired" in lowered:
            return "TLS certificate has expired"
        if "self-signed" in lowered or "self signed" in lowered:
            return "TLS certificate is self-signed and not trusted (add its CA bundle to the peer)"
        return f"TLS certificate not trusted: {text}"
    if "name or service not known" in lowered or "nodename" in lowered or "temporary failure in name" in lowered:
        return "host name not found"
    if "refused" in lowered or "all connection attempts failed" in lowered:
        return "connection refused: is the server running?"
    return f"cannot connect: {text or type(exc).__name__}"


async def _in_pieces(body: Any) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(view), UPLOAD_PIECE):
        yield bytes(view[start:start + UPLOAD_PIECE])


async def _followed_pieces(body: Any, on_sent: Callable[[int], None]) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(view), UPLOAD_PIECE):
        yield bytes(view[start:start + UPLOAD_PIECE])
        on_sent(min(len(view), start + UPLOAD_PIECE))


async def _spent_pieces(pieces: Any, limit: RateLimit) -> AsyncIterator[bytes]:
    """An upload body's pieces, each spent on the caps before httpx writes it."""
    if hasattr(pieces, "__aiter__"):
        async for piece in pieces:
            await limit.spend(len(piece))
            yield piece
    else:
        for piece in pieces:
            await limit.spend(len(piece))
            yield piece
