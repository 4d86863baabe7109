"""How far away a server is, from the round trip of one small request.

Where the round trip is 10 ms or more (a WAN), the link is almost
always slower than gzip, so a transfer whose compression is ``auto`` starts
compressed; on a local network it starts uncompressed. Either way the
throughput of the first buckets then confirms or reverses the choice
(``compression.py``): the guess only decides which way costs nothing when
it is right.
"""

from __future__ import annotations

import logging
import time

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient

log = logging.getLogger(__name__)

# A LAN answers in about a millisecond, a busy server in a few; a WAN
# across a region takes 10 ms or more.
DISTANT_ROUND_TRIP = 0.010


# Requests that make a measurement (the first one may pay for opening the
# connection, any one for a busy moment).
SAMPLES = 3


async def round_trip(client: OrthancClient) -> float:
    """Seconds of the shortest of three small requests: those the job already
    made to this server (its probe, small look-ups) count, and ``GET /system``
    makes up the rest, so a job that already talked to the server usually
    spends no round trip on this."""
    best = client.fastest_small_request
    if best < DISTANT_ROUND_TRIP:
        return best
    for _ in range(max(0, SAMPLES - client.small_requests)):
        start = time.perf_counter()
        await client.request("GET", "/system")
        best = min(best, time.perf_counter() - start)
        if best < DISTANT_ROUND_TRIP:
            break
    return best


async def is_distant(client: OrthancClient) -> bool:
    """True when ``client``'s server is across a WAN. A server that does not
    answer counts as near: the transfer's own requests will report why."""
    try:
        seconds = await round_trip(client)
    except OrthancError as exc:
        log.debug("round trip to %s not measured: %s", client.peer.name, exc)
        return False
    log.info("round trip to %s: %.1f ms", client.peer.name, seconds * 1000)
    return seconds >= DISTANT_ROUND_TRIP
