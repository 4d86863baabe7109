"""The MD5 of many instances on one server, in as few round trips as it allows.

Planning (what the target already has), the check before a push commit and
the final verification each need one MD5 per instance. One GET per instance
is one round trip each: 2,000 tiny instances over a 40 ms link are 80 s at
one request at a time. So:

- a server that speaks the transfers protocol is asked once:
  ``POST /transfers/lookup`` with the instances (in slices of
  ``LOOKUP_SLICE``) lists every MD5. The lookup fails as a whole when one
  instance is absent, and then the GETs below decide;
- otherwise ``GET /instances/{id}/attachments/dicom/md5`` for each, at least
  ``SMALL_GET_CONCURRENCY`` in flight (tiny answers: what limits is the
  round trip, and Orthanc serves them from its database).
"""

from __future__ import annotations

import asyncio
from typing import Dict, List, Optional, Sequence

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine.retry import with_retries

SMALL_GET_CONCURRENCY = 16
# Instances per lookup request (the plugins accept 10,000 resources by default).
LOOKUP_SLICE = 2000


async def md5s_on(server: OrthancClient, ids: Sequence[str], *, bulk: bool, concurrency: int,
                  retries: int = 0) -> Dict[str, object]:
    """MD5 per instance ID: a string, None when absent, or the OrthancError met
    (after ``retries`` retries of retryable errors)."""
    ids = list(ids)
    if not ids:
        return {}
    if bulk:
        found = await _lookup(server, ids, retries)
        if found is not None:
            return found
    gate = asyncio.Semaphore(max(1, concurrency, SMALL_GET_CONCURRENCY))

    async def one(instance_id: str) -> object:
        async with gate:
            try:
                return await with_retries(lambda: server.instance_md5_or_none(instance_id), retries)
            except OrthancError as exc:
                return exc

    return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids))))


async def _lookup(server: OrthancClient, ids: List[str], retries: int) -> Optional[Dict[str, object]]:
    """Every MD5 through the protocol's lookup, or None when it cannot tell
    (an instance is absent, or the server refused)."""
    wanted = set(ids)
    found: Dict[str, object] = {}
    for start in range(0, len(ids), LOOKUP_SLICE):
        resources = [{"Level": "Instance", "ID": i} for i in ids[start:start + LOOKUP_SLICE]]
        try:
            infos = await with_retries(lambda r=resources: server.transfers_lookup(r), retries)
        except OrthancError:
            return None
        for info in infos:
            if info.id in wanted:
                found[info.id] = info.md5
    if len(found) != len(wanted):
        return None
    return found
