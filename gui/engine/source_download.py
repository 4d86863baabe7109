"""Whole-file downloads from a stock Orthanc source, gzip on the wire or not:
into memory, or streamed into a file.

Stock Orthanc compresses an answer with gzip when the client accepts it, in
one thread per request, at its default level: on a fast link that is far
slower than sending the file as it is (a 0.5 MB CT slice: ~150 ms gzipped,
~5 ms raw on a LAN). So whether to accept gzip is the same adaptive
decision as for a pull bucket (:class:`PullCompressionPolicy`): ``auto``
measures both and keeps the faster, ``gzip`` / ``none`` are as asked.
"""

from __future__ import annotations

import time
from typing import Any, Tuple

from gui.client.orthanc_client import OrthancClient
from gui.engine.compression import PullCompressionPolicy


async def download_instance(source: OrthancClient, instance_id: str,
                            policy: PullCompressionPolicy) -> Tuple[bytes, int]:
    """The instance's file and how many bytes crossed the network for it."""
    choice = policy.choose()
    start = time.perf_counter()
    data, wire_bytes = await source.fetch_instance(instance_id, gzip=choice == "gzip")
    policy.observe(choice, len(data), wire_bytes, time.perf_counter() - start)
    return data, wire_bytes


async def download_instance_to(source: OrthancClient, instance_id: str, sink: Any,
                               policy: PullCompressionPolicy) -> int:
    """Stream the instance's file into ``sink`` (anything with ``write``),
    never whole in memory; returns the bytes written. The wire size of a
    streamed answer is not known here: only the rate is recorded, not the
    ratio."""
    choice = policy.choose()
    start = time.perf_counter()
    written = await source.download_instance_to(instance_id, sink, gzip=choice == "gzip")
    policy.observe(choice, written, None, time.perf_counter() - start)
    return written
