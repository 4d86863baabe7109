"""How far away a server is, from the round trip of one small request.

Where the round trip is 10 ms or more (a WAN), the link is almost
always slower than gzip, so a transfer whose compression is ``auto`` starts
compressed; on a local network it starts uncompressed. Either way the
throughput of the first buckets then confirms or reverses the choice
(``compression.py``): the guess only decides which way costs nothing when
it is right.
"""

from __future__ import annotations

import asyncio
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


# Round trips asked again before a server is believed distant.
CONFIRM_SAMPLES = 4
# Below this, a "distant" answer may be a near server on a loaded machine
# (measured: 10-30 ms under load); a real WAN's round trip is longer.
AMBIGUOUS_ROUND_TRIP = 0.030


async def confirmed_round_trip(client: OrthancClient) -> float:
    """The round trip to a server (0 when it cannot be measured: the
    transfer's own requests will say what is wrong), asked again a few times
    before a long one is believed: on a loaded machine a near server's first
    answers can take 10 ms or more (measured in the benchmark: a LAN source
    taken for a distant one got its first GETs compressed, a LAN target its
    uploads gzipped by the engine instead of relayed), while a WAN's never
    come faster. Costs one more round trip (the confirmations asked at once)
    only towards a server that looks distant."""
    try:
        seconds = client.fastest_small_request
        if seconds >= DISTANT_ROUND_TRIP:
            seconds = min(seconds, await _timed_request(client))
        if seconds >= DISTANT_ROUND_TRIP:
            # The rest asked at once, each on its own connection: over a WAN
            # they cost one round trip instead of six (0.3 s before the first
            # GET at 50 ms); a near server answers any of them fast.
            more = SAMPLES - 1 + CONFIRM_SAMPLES
            samples = await asyncio.gather(*(_timed_request(client) for _ in range(more)))
            seconds = min(seconds, *samples)
        if DISTANT_ROUND_TRIP <= seconds < AMBIGUOUS_ROUND_TRIP:
            # Requests asked at once queue behind each other on a busy near
            # server (and on this loop), so together they can all look long:
            # a few more one after the other, at other moments, decide.
            for _ in range(CONFIRM_SAMPLES):
                seconds = min(seconds, await _timed_request(client))
                if seconds < DISTANT_ROUND_TRIP:
                    break
    except OrthancError as exc:
        log.debug("round trip to %s not measured: %s", client.peer.name, exc)
        return 0.0
    log.info("round trip to %s: %.1f ms", client.peer.name, seconds * 1000)
    return seconds


async def confirmed_distant(client: OrthancClient) -> bool:
    """:func:`is_distant`, confirmed as :func:`confirmed_round_trip` does."""
    return await confirmed_round_trip(client) >= DISTANT_ROUND_TRIP


async def _timed_request(client: OrthancClient) -> float:
    start = time.perf_counter()
    await client.request("GET", "/system")
    return time.perf_counter() - start
