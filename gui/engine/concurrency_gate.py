"""How many jobs move data at once: a FIFO gate the job runners queue at.

A running job holds a place until it ends; pausing gives the place back and
resuming queues for one again (gui/engine/job_runner.py).
"""

from __future__ import annotations

import asyncio


class ConcurrencyGate:
    """At most ``limit`` jobs hold a place; FIFO."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(max(1, limit))

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()
