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
  round trip, and Orthanc serves them from its database);
- when the job's resources (patients, studies, series) are known, one
  ``GET /{level}/{id}/instances`` per resource first says which instances
  the server holds at all (404: none): only those are asked for their MD5.
  Orthanc IDs derive from the DICOM UIDs, so an instance of the job that is
  on the server is listed under the same resource there. On a fresh target
  that is one request instead of one per instance.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Callable, Dict, List, Optional, Sequence, Set

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine.retry import with_retries

SMALL_GET_CONCURRENCY = 16
# ``held`` not given: ask the server (when ``resources`` are given).
ASK: object = object()
# Instances per lookup request (the plugins accept 10,000 resources by default).
LOOKUP_SLICE = 2000


async def md5s_on(server: OrthancClient, ids: Sequence[str], *, bulk: bool, concurrency: int,
                  retries: int = 0,
                  resources: Optional[Sequence[Dict[str, str]]] = None,
                  on_retry: Optional[Callable[[int, OrthancError], None]] = None,
                  held: object = ASK) -> Dict[str, object]:
    """MD5 per instance ID: a string, None when absent, or the OrthancError met
    (after ``retries`` retries of retryable errors, each reported to
    ``on_retry``). ``resources``: the job's resources, every instance of
    ``ids`` lies below them. ``held``: what :func:`held_below` answered for
    them already (asked while something else was going on)."""
    ids = list(ids)
    if not ids:
        return {}
    if held is ASK:
        held = await held_below(server, resources, retries, on_retry) if resources else None
    if isinstance(held, set):
        found: Dict[str, object] = {i: None for i in ids if i not in held}
        present = [i for i in ids if i in held]
        found.update(await md5s_on(server, present, bulk=bulk, concurrency=concurrency,
                                   retries=retries, on_retry=on_retry))
        return found
    if bulk:
        looked_up = await _lookup(server, ids, retries)
        if looked_up is not None:
            return looked_up
    gate = asyncio.Semaphore(max(1, concurrency, SMALL_GET_CONCURRENCY))

    async def one(instance_id: str) -> object:
        async with gate:
            try:
                return await with_retries(lambda: server.instance_md5_or_none(instance_id), retries,
                                          on_retry=on_retry)
            except OrthancError as exc:
                return exc

    return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids))))


async def held_below(server: OrthancClient, resources: Sequence[Dict[str, str]], retries: int,
                     on_retry: Optional[Callable[[int, OrthancError], None]]) -> Optional[Set[str]]:
    """IDs of the instances the server holds below ``resources``, or None when
    it cannot tell (an instance-level resource, an unexpected error)."""
    held: Set[str] = set()
    for resource in resources:
        if not isinstance(resource, dict):
            return None
        level, rid = resource.get("Level"), resource.get("ID")
        if level not in ("Patient", "Study", "Series") or not isinstance(rid, str):
            return None
        try:
            items = await with_retries(functools.partial(server.instances_of, level, rid), retries,
                                       on_retry=on_retry)
        except OrthancError as exc:
            if exc.status == 404:
                continue  # the resource is not there: none of its instances are
            return None
        held.update(str(item["ID"]) for item in items)
    return held


async def _lookup(server: OrthancClient, ids: List[str], retries: int) -> Optional[Dict[str, object]]:
    """Every MD5 through the protocol's lookup, or None when it cannot tell
    (an instance is absent, or the server refused)."""
    wanted = set(ids)
    found: Dict[str, object] = {}
    for start in range(0, len(ids), LOOKUP_SLICE):
        resources = [{"Level": "Instance", "ID": i} for i in ids[start:start + LOOKUP_SLICE]]
        try:
            infos = await with_retries(functools.partial(server.transfers.lookup, resources), retries)
        except OrthancError:
            return None
        for info in infos:
            if info.id in wanted:
                found[info.id] = info.md5
    if len(found) != len(wanted):
        return None
    return found
