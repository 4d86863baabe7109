"""The client side of one push transaction (docs/protocol.md §3).

``POST /transfers/push`` creates it, ``PUT .../{index}`` sends each bucket,
``POST .../commit`` imports everything, ``DELETE`` discards it. Every request
carries ``sender-transfer-id``; a cookie set by the create answer is sent
back on the transaction's later requests (sticky sessions behind a load
balancer). Bodies are labelled ``application/x-www-form-urlencoded`` as the
C++ plugin does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

from gui.client.errors import OrthancError, full_storage_text
from gui.client.orthanc_client import OrthancClient
from gui.client import fast_http
from gui.client.transfers_api import BODY_CONTENT_TYPE, HANDLING_HEADER, handling_seconds
from gui.engine.compression import parse_body_compression
from gui.engine.retry import backoff_delay, with_retries
from gui.protocol import wire
from gui.protocol.wire import Bucket, InstanceInfo

if TYPE_CHECKING:
    from gui.engine.transport_base import TransferContext

log = logging.getLogger(__name__)

# Polling interval bounds of an asynchronous commit. It stays short for the
# first seconds (a study's commit usually ends within them, and every poll
# interval is time the transfer may finish late by), then grows.
POLL_MIN, POLL_MAX = 0.05, 1.0
POLL_FAST_SECONDS = 3.0
# A long poll (our plugin) holds the answer at most this long; well under HttpTimeout.
LONG_POLL_SECONDS = 5.0

RetryHook = Optional[Callable[[int, OrthancError], None]]
BAD_FILE_FORMAT = 15   # Orthanc's error code for a body that is not what it claims


class TransactionGone(Exception):
    """The target no longer knows the transaction (restart, LRU eviction)."""


class NotRelayed(Exception):
    """A bucket could not be relayed from the source to the target: it goes the usual way."""


class CommitFailed(Exception):
    """The target refused the commit; ``reason`` says why (e.g. a bad MD5)."""

    def __init__(self, reason: str, instances: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # The error's "Instances" list ([{"ID", "Problem"}]) when the target named them.
        self.instances = instances


@dataclass
class TransactionState:
    """What is needed to talk to the transaction again (saved for resume)."""

    id: str
    path: str
    compression: str
    cookie: str = ""
    asynchronous: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"ID": self.id, "Path": self.path, "Compression": self.compression,
                "Cookie": self.cookie, "Asynchronous": self.asynchronous}

    @classmethod
    def from_json(cls, data: Any) -> Optional["TransactionState"]:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["ID"]), str(data["Path"]), parse_body_compression(data["Compression"]),
                       str(data.get("Cookie", "")), bool(data.get("Asynchronous", False)))
        except (KeyError, wire.WireFormatError):
            return None


async def supports_asynchronous_commit(ctx: "TransferContext") -> bool:
    """Only this project's Python plugin knows the asynchronous commit; the
    C++ plugin shows as ``transfers`` in /plugins, ours as ``python``."""
    try:
        return (await ctx.target.accelerator(cached=True)).flavour == "python"
    except OrthancError as exc:
        log.info("cannot tell whether %s commits asynchronously (%s); using a synchronous commit",
                 ctx.target.peer.name, exc)
        return False


class PushTransaction:
    def __init__(self, target: OrthancClient, state: TransactionState, *, transfer_id: str,
                 retries: int, commit_timeout: float) -> None:
        self.target = target
        self.state = state
        self.transfer_id = transfer_id
        self.retries = retries
        self.commit_timeout = commit_timeout

    @property
    def id(self) -> str:
        return self.state.id

    def _headers(self, body: bool = False) -> Dict[str, str]:
        headers = {wire.SENDER_TRANSFER_ID_HEADER: self.transfer_id}
        if body:
            headers["Content-Type"] = BODY_CONTENT_TYPE
        if self.state.cookie:
            headers["Cookie"] = self.state.cookie
        return headers

    @classmethod
    async def create(cls, target: OrthancClient, instances: Sequence[InstanceInfo],
                     buckets: Sequence[Bucket], compression: str, *, transfer_id: str,
                     retries: int, commit_timeout: float, asynchronous_commit: bool = False,
                     on_retry: RetryHook = None, codec: Optional[str] = None,
                     import_as_it_arrives: bool = False, codecs: Sequence[str] = ()) -> "PushTransaction":
        """``codec``, or ``codecs`` (best first): the codecs to offer instead of gzip."""
        request = wire.build_push_request(instances, buckets, compression, asynchronous_commit, codec,
                                          import_as_it_arrives, codecs=codecs)
        created = await with_retries(lambda: target.transfers.push_create(request, transfer_id),
                                     retries, on_retry=on_retry)
        tid = created.id
        if codec is not None or codecs:
            # Bodies in the codec only when the server confirms it; the C++
            # plugin ignores the request's "Codec" and expects gzip.
            compression = created.codec or "gzip"
        # Only our own plugin honours the asynchronous commit; it says so in its answer.
        state = TransactionState(tid, created.path, compression, created.cookie, created.asynchronous_commit)
        if import_as_it_arrives:
            log.info("push transaction %s: import as it arrives %s", tid,
                     "honoured" if created.import_as_it_arrives
                     else "not offered by the target (all at the commit)")
        log.info("push transaction %s created on %s (%d buckets, %s)", tid, target.peer.name,
                 len(buckets), compression)
        return cls(target, state, transfer_id=transfer_id, retries=retries,
                   commit_timeout=commit_timeout)

    async def put(self, index: int, body: bytes, on_progress: Callable[[int], None],
                  on_retry: RetryHook = None) -> Optional[float]:
        """Send bucket ``index``; ``on_progress(bytes)`` follows the body on the wire.
        Returns the seconds the target spent storing it after receiving it, when it says."""
        headers = self._headers(body=True)

        async def attempt() -> Optional[float]:
            on_progress(0)
            return await self.target.transfers.push_put(self.state.path, index, body, headers,
                                                        on_sent=on_progress)

        refused = 0
        while True:
            try:
                return await with_retries(attempt, self.retries, on_retry=on_retry)
            except OrthancError as exc:
                if exc.status == 404:
                    raise TransactionGone(f"the target dropped push transaction {self.id}") from None
                # A body we compressed ourselves refused as not valid (Bad
                # file format, 15): corrupted on the way. Sending it again is
                # safe (a bucket written twice is checked as written).
                if exc.status == 400 and exc.orthanc_status == BAD_FILE_FORMAT \
                        and self.state.compression != "none" and refused < self.retries:
                    refused += 1
                    if on_retry is not None:
                        on_retry(refused, exc)
                    continue
                raise

    async def put_relayed(self, index: int, pools: "tuple[fast_http.RawPool, fast_http.RawPool]",
                          source_path: str, size: int) -> Optional[float]:
        """Send bucket ``index`` as the source's answer to ``GET source_path``
        (``size`` bytes, uncompressed), spliced from socket to socket without
        passing through this process (``fast_http.relay``). Returns as
        :meth:`put`; raises :class:`NotRelayed` when the bucket did not get
        through this way (the caller sends it the usual way, which reports
        a real error properly and retries), :class:`TransactionGone` on 404."""
        headers = self._headers(body=True)
        content_type = headers.pop("Content-Type")
        try:
            answer = await fast_http.relay(pools[0], source_path, pools[1], f"{self.state.path}/{index}",
                                           accept_gzip=False, expected_size=size, content_type=content_type,
                                           method="PUT", headers=headers)
        except fast_http.RelayError as exc:
            raise NotRelayed(exc.reason) from None
        if answer.status == 404:
            raise TransactionGone(f"the target dropped push transaction {self.id}")
        if answer.status != 200:
            raise NotRelayed(f"the target answered HTTP {answer.status}")
        return handling_seconds(answer.headers.get(HANDLING_HEADER))

    async def commit(self, on_retry: RetryHook = None) -> None:
        """Ask the target to check and import everything; return once imported."""
        attempt = 0
        while True:
            try:
                started = await self.target.transfers.push_commit(self.state.path, self._headers(True),
                                                                  self.commit_timeout)
                break
            except wire.WireFormatError as exc:
                raise CommitFailed(f"malformed commit status: {exc}") from None
            except OrthancError as exc:
                if exc.status == 404:
                    raise TransactionGone(f"the target dropped push transaction {self.id}") from None
                # A refused commit (bad MD5: HTTP 500) or a timed-out one must
                # not be repeated blindly: only "never reached the server" is.
                unreachable = exc.status in (502, 503) or (
                    exc.status is None and "timeout" not in exc.reason)
                if not unreachable or attempt >= self.retries:
                    if exc.status is not None:
                        raise CommitFailed(full_storage_text(exc.message or exc.reason, exc.orthanc_status),
                                           (exc.body or {}).get("Instances")) from exc
                    raise
                attempt += 1
                if on_retry is not None:
                    on_retry(attempt, exc)
                await asyncio.sleep(backoff_delay(attempt))
        if self.state.asynchronous and started.status is not None:
            await self._follow_commit(started.status, started.long_poll)

    async def _follow_commit(self, status: wire.CommitStatus, long_poll: bool) -> None:
        """Follow an asynchronous commit (this project's extension, docs/protocol.md §4)
        until the target says Success or Failure."""
        # Our plugin can hold the status answer until the outcome is known:
        # no poll interval (and fewer round trips) added to the commit.
        wait = LONG_POLL_SECONDS if long_poll else None
        started = time.monotonic()
        deadline = started + self.commit_timeout
        delay = POLL_MIN
        while True:
            if status.status == wire.COMMIT_SUCCESS:
                return
            if status.status == wire.COMMIT_FAILURE:
                error = status.error or {}
                message = error.get("Message") or "the target could not import the transaction"
                bad = error.get("Instances")
                if isinstance(bad, list) and bad:
                    message += f" (instances: {', '.join(str(i) for i in bad[:5])})"
                raise CommitFailed(full_storage_text(str(message), error.get("OrthancStatus")),
                                   error.get("Instances"))
            if time.monotonic() > deadline:
                raise CommitFailed(f"the commit did not finish within {self.commit_timeout:.0f} s")
            if not long_poll:
                await asyncio.sleep(delay)
                if time.monotonic() - started > POLL_FAST_SECONDS:
                    delay = min(POLL_MAX, delay * 1.25)
            try:
                status = await with_retries(
                    lambda: self.target.transfers.push_commit_status(self.state.path, self._headers(), wait),
                    self.retries)
            except wire.WireFormatError as exc:
                raise CommitFailed(f"malformed commit status: {exc}") from None
            except OrthancError as exc:
                if exc.status == 404:
                    raise TransactionGone(f"the target forgot push transaction {self.id} "
                                          "while committing it") from None
                raise

    async def delete(self) -> None:
        """Discard the transaction; best effort (it may be gone already)."""
        try:
            await self.target.transfers.push_delete(self.state.path, self._headers())
        except OrthancError as exc:
            log.warning("could not discard push transaction %s: %s", self.id, exc)

