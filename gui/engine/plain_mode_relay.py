"""Plain mode's zero-copy relay: an instance's download spliced into its upload.

Between two servers reached over plain HTTP (no TLS, no speed limit, Linux),
an instance that travels alone and uncompressed by the engine is not read
into this process at all: its ``GET /instances/{id}/file`` answer is
spliced from the source's socket into the body of ``POST /instances`` to
the target (``fast_http.relay``), on the event loop. A gzip answer from
the source is forwarded as it came, ``Content-Encoding: gzip`` (stock
Orthanc stores the inflated file), so the engine neither inflates nor
hashes it either.

The engine then has no local MD5 of the bytes: the check is end to end,
the MD5 the target stored (read back after the upload, as for every
instance) against the source's stored MD5 from the plan. A mismatch goes
the way of every failed read-back: the bad copy is deleted and the
instance sent again (``resend.py``), then by the copy path, which hashes
what it downloads.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from gui.client import fast_http
from gui.client.errors import OrthancError
from gui.client.fast_http import RawPool, RelayError
from gui.client.orthanc_client import OrthancClient
from gui.protocol.wire import check_orthanc_id


class NotRelayed(Exception):
    """The relay could not start (nothing reached the target): the caller
    moves that instance the usual way."""


def relay_pools(source: OrthancClient, target: OrthancClient) -> Optional[Tuple[RawPool, RawPool]]:
    """Raw socket pools to both servers when a relay is possible now: Linux,
    both reached by the lean client over plain HTTP, and no speed limit
    active on either (a relay's bytes bypass the limiter)."""
    if not fast_http.relay_supported():
        return None
    pools: List[RawPool] = []
    for client in (source, target):
        fast = getattr(client, "_fast", None)
        if not isinstance(fast, fast_http.FastHttp):
            return None
        if fast.rate_limit is not None and fast.rate_limit.active:
            return None
        pool = fast.raw_pool()
        if pool is None:
            return None
        pools.append(pool)
    return pools[0], pools[1]


async def relay_instance(source: OrthancClient, target: OrthancClient, pools: Tuple[RawPool, RawPool],
                         instance_id: str, *, gzip: bool, size: int) -> Tuple[List[Dict[str, Any]], int]:
    """Relay one instance; the target's status objects and the body bytes that
    crossed (compressed when the source compressed them). Errors are
    :class:`OrthancError` of the server that failed, or :class:`NotRelayed`."""
    path = f"/instances/{check_orthanc_id(instance_id)}/file"
    try:
        answer = await fast_http.relay(pools[0], path, pools[1], "/instances", accept_gzip=gzip,
                                       expected_size=size)
    except RelayError as exc:
        if not exc.forwarded:
            raise NotRelayed(exc.reason) from None
        client, method, where = (source, "GET", path) if exc.side == "source" else (target, "POST", "/instances")
        raise OrthancError(exc.reason, method=method, url=client.peer.url + where, status=exc.status,
                           peer=client.peer.name) from None
    if answer.status != 200:
        raise target._answer_error("POST", "/instances", answer.status, answer.headers.get("location"),
                                   answer.content, answer.reason)
    try:
        parsed = json.loads(answer.content)
    except (ValueError, UnicodeDecodeError):
        raise OrthancError("expected JSON from Orthanc", method="POST", url=target.peer.url + "/instances",
                           status=answer.status, peer=target.peer.name) from None
    return (parsed if isinstance(parsed, list) else [parsed]), answer.forwarded
