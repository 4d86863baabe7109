"""The client side of the transfers protocol in one place (docs/protocol.md §3-4).

The counterpart of the C++ plugin's ``HttpQueries/``: one typed method per
endpoint (lookup, chunks, push create/put/commit/status/delete, send, pull,
peers, storage), each building its URL and body with gui/protocol/wire.py
and reading the answer into a typed value. What a server announces (the
extensions of §4) is read here, once: a key it did not send means the
extension is not there. Transports add their own retry and recovery
policy around these calls; none of them builds a protocol URL itself.

Reached as ``client.transfers`` on an :class:`OrthancClient`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, List, Mapping, Optional, Sequence, Union

from gui.client.errors import OrthancError
from gui.protocol import wire
from gui.protocol.wire import Bucket, InstanceInfo, JsonObject

if TYPE_CHECKING:
    from gui.client.orthanc_client import OrthancClient

# The C++ sender labels every body so; receivers must not depend on it.
BODY_CONTENT_TYPE = "application/x-www-form-urlencoded"
# Orthanc would otherwise gzip chunk answers on the wire by itself, and
# "none" would not mean none (nor "gzip" gzip once only).
IDENTITY = {"Accept-Encoding": "identity"}

Body = Union[bytes, AsyncIterator[bytes]]
# Extension of this project's plugin: the answer to a bucket PUT says how
# long the plugin spent storing the bucket (decoding, writing, hashing) once
# Orthanc had handed it the body, so that the sender can tell the link's
# time from the target's. Servers without it (the C++ plugin) send nothing.
HANDLING_HEADER = "transfers-handling-seconds"


@dataclass(frozen=True)
class PushCreated:
    """A new push transaction, with what the target announced for it."""
    id: str
    path: str
    cookie: str                       # Set-Cookie pairs to send back on its requests
    asynchronous_commit: bool         # "AsynchronousCommit": true in the answer
    codec: Optional[str]              # the extension codec its bodies must use, if confirmed
    import_as_it_arrives: bool        # "ImportAsItArrives": true in the answer


@dataclass(frozen=True)
class CommitStarted:
    """The answer to POST .../commit: done (synchronous), or an asynchronous
    commit to follow, maybe with a long poll."""
    status: Optional[wire.CommitStatus]   # None: synchronous, already imported
    long_poll: bool = False


@dataclass(frozen=True)
class Chunks:
    body: bytearray
    codec: str                        # what the body is in: "none", "gzip" or an extension codec


def handling_seconds(value: Optional[str]) -> Optional[float]:
    """The header's seconds; None when absent or not a sane number."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 3600 else None


def cookie_from(response_headers: Any) -> str:
    """The ``name=value`` pairs of every Set-Cookie, ready for a Cookie header."""
    pairs = []
    for header in response_headers.get_list("set-cookie"):
        pair = header.split(";", 1)[0].strip()
        if "=" in pair:
            pairs.append(pair)
    return "; ".join(pairs)


class TransfersApi:
    def __init__(self, client: "OrthancClient") -> None:
        self.client = client

    # --- lookup and chunks ---------------------------------------------------------

    async def lookup(self, resources: Sequence[Dict[str, str]],
                     headers: Optional[Mapping[str, str]] = None) -> List[InstanceInfo]:
        answer = await self.client.post_json(wire.URI_LOOKUP, list(resources), headers=headers)
        try:
            return wire.parse_lookup_answer(answer)
        except wire.WireFormatError as exc:
            raise self._malformed(f"malformed lookup answer: {exc}", "POST", wire.URI_LOOKUP) from None

    async def chunks(self, bucket: Bucket, compression: str, limit: int, *,
                     codec: Optional[str] = None) -> Chunks:
        """A bucket's bytes with GET; ``codec`` with gzip asks for an extension
        codec, which the server confirms by the answer's Content-Type."""
        asked = codec if codec is not None and compression == "gzip" else compression
        answer: Dict[str, str] = {}
        body = await self.client.get_bounded(wire.chunks_uri(bucket, asked), limit, headers=IDENTITY,
                                             answer_headers=answer)
        used = compression
        if compression == "gzip":
            content_type = answer.get("content-type", "").split(";")[0].strip()
            used = next((c for c, t in wire.CODEC_CONTENT_TYPE.items() if t == content_type), "gzip")
        return Chunks(body, used)

    # --- push transactions ---------------------------------------------------------

    async def push_create(self, request: JsonObject, transfer_id: str) -> PushCreated:
        headers = {wire.SENDER_TRANSFER_ID_HEADER: transfer_id, "Content-Type": BODY_CONTENT_TYPE}
        response = await self.client.request("POST", wire.URI_PUSH, content=json.dumps(request).encode(),
                                             headers=headers)
        try:
            answer = json.loads(response.content)
            tid, path = answer["ID"], answer["Path"]
            if not isinstance(tid, str) or not isinstance(path, str) or not tid:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise self._malformed("malformed answer to the creation of a push transaction",
                                  "POST", wire.URI_PUSH) from None
        # The codec the server chose among those offered ("Codec", "Codecs"), if any.
        offered = list(request.get("Codecs") or []) + ([request["Codec"]] if request.get("Codec") else [])
        chosen = answer.get("Codec")
        return PushCreated(
            tid, path, cookie_from(response.headers),
            asynchronous_commit=request.get("AsynchronousCommit") is True
            and answer.get("AsynchronousCommit") is True,
            codec=chosen if isinstance(chosen, str) and chosen in offered else None,
            import_as_it_arrives=request.get("ImportAsItArrives") is True
            and answer.get("ImportAsItArrives") is True)

    async def push_put(self, path: str, index: int, body: Body, headers: Mapping[str, str],
                       on_sent: Optional[Callable[[int], None]] = None) -> Optional[float]:
        """PUT one bucket. A body given whole goes through the lean client
        (``on_sent`` follows it); pieces of an async iterator through httpx.
        Returns the seconds the target says it spent storing the bucket once
        it had the body (``HANDLING_HEADER``, this project's plugin), or None."""
        if isinstance(body, (bytes, bytearray, memoryview)):
            response: Any = await self.client.fast_request("PUT", f"{path}/{index}", content=body,
                                                           headers=headers, on_sent=on_sent)
        else:
            response = await self.client.request("PUT", f"{path}/{index}", content=body, headers=headers)
        return handling_seconds(response.headers.get(HANDLING_HEADER))

    async def push_commit(self, path: str, headers: Mapping[str, str], timeout: float) -> CommitStarted:
        response = await self.client.request("POST", f"{path}/commit", content=b"", headers=headers,
                                             timeout=timeout, expect=(200, 202))
        try:
            answer = json.loads(response.content or b"{}")
        except ValueError:
            answer = {}
        if response.status_code != 202 or not isinstance(answer, dict) or "Status" not in answer:
            return CommitStarted(None)   # a synchronous answer ({}): the import is done
        return CommitStarted(self._commit_status(answer, path), answer.get("LongPoll") is True)

    async def push_commit_status(self, path: str, headers: Mapping[str, str],
                                 wait: Optional[float] = None) -> wire.CommitStatus:
        uri = f"{path}/commit" + (f"?wait={wait:g}" if wait is not None else "")
        return self._commit_status(await self.client.get_json(uri, headers=headers), path)

    async def push_delete(self, path: str, headers: Mapping[str, str]) -> None:
        await self.client.request("DELETE", path, headers=headers, expect=(200, 404))

    # --- server-to-server jobs, peers, storage -----------------------------------------

    async def send(self, body: JsonObject, transfer_id: str) -> JsonObject:
        return await self._object("POST", wire.URI_SEND, body, transfer_id)

    async def pull(self, body: JsonObject, transfer_id: str) -> JsonObject:
        return await self._object("POST", wire.URI_PULL, body, transfer_id)

    async def peers(self) -> Dict[str, str]:
        """Each configured Orthanc peer of this server: installed, bidirectional or disabled."""
        answer = await self.client.get_json(wire.URI_PEERS)
        if not isinstance(answer, dict):
            raise self._malformed("malformed answer (not a JSON object)", "GET", wire.URI_PEERS)
        return {str(k): str(v) for k, v in answer.items()}

    async def storage(self) -> Any:
        """The target's storage limits and use (this project's plugin only)."""
        return await self.client.get_json(wire.URI_STORAGE)

    # --- helpers -----------------------------------------------------------------------

    def _commit_status(self, answer: object, path: str) -> wire.CommitStatus:
        # A malformed status raises WireFormatError: a refused commit, not a
        # network failure to retry.
        return wire.parse_commit_status(answer)

    async def _object(self, method: str, uri: str, body: JsonObject, transfer_id: str) -> JsonObject:
        headers = {wire.SENDER_TRANSFER_ID_HEADER: transfer_id}
        answer = await self.client.post_json(uri, body, headers=headers)
        if not isinstance(answer, dict):
            raise self._malformed("malformed answer (not a JSON object)", method, uri)
        return answer

    def _malformed(self, reason: str, method: str, uri: str) -> OrthancError:
        return OrthancError(reason, method=method, url=self.client.base_url + uri, peer=self.client.peer.name)
