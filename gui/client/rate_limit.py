"""Bandwidth caps: token buckets shared by every connection of a job, and one for all jobs.

A hospital's WAN link also carries clinical traffic, so a transfer may be
told to stay below a rate. Every body byte our HTTP clients write or read
(``fast_http`` and the httpx path of ``orthanc_client``) is spent on the
job's bucket and on the global one, in the pieces they already move (up to
1 MB): one call per piece, no extra work per request.

A bucket runs on debt: bytes are taken at once and the caller waits until
the bucket is back above zero, so the rate over time is the cap however
large the pieces are, and a piece is never split.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, Optional, Sequence

# A bucket idle for a while lets this many seconds' worth through at once:
# small enough that the cap holds over a few seconds, large enough that a
# 1 MB piece at a low cap does not stall for a whole second each time.
BURST_SECONDS = 0.5


class TokenBucket:
    """Rate in bytes per second; ``None`` or 0: unlimited (nothing counted but the total)."""

    def __init__(self, rate: Optional[float] = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate: Optional[float] = None
        self._tokens = 0.0
        self._stamp = clock()
        self.total = 0          # bytes spent since creation (the accounting tests read)
        self.waited = 0.0       # seconds callers were told to wait
        # When the first byte was spent and when the last one may move (its
        # debt paid): the span the cap is measured over.
        self.first: Optional[float] = None
        self.until = 0.0
        self.rate = rate

    @property
    def rate(self) -> Optional[float]:
        return self._rate

    @rate.setter
    def rate(self, value: Optional[float]) -> None:
        self._refill()
        self._rate = float(value) if value and value > 0 else None
        if self._rate is not None:
            self._tokens = min(self._tokens, self._rate * BURST_SECONDS)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._rate * BURST_SECONDS, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self, count: int) -> float:
        """Spend ``count`` bytes; the seconds to wait before moving more."""
        self.total += count
        if self._rate is None:
            return 0.0
        self._refill()
        if self.first is None:
            self.first = self._stamp
        self._tokens -= count
        delay = -self._tokens / self._rate if self._tokens < 0 else 0.0
        self.waited += delay
        self.until = max(self.until, self._stamp + delay)
        return delay

    def accounting(self) -> Optional[Dict[str, Any]]:
        """What the cap let through: for the report (None without a cap)."""
        if self._rate is None or self.first is None:
            return None
        span = max(self._clock(), self.until) - self.first
        return {"cap": round(self._rate), "bytes": self.total, "seconds": round(span, 3),
                "achieved": round(self.total / span) if span > 0 else None,
                "waited": round(self.waited, 3)}


class RateLimit:
    """The buckets one client spends on (its job's, the global one)."""

    def __init__(self, buckets: Sequence[TokenBucket]) -> None:
        self.buckets = list(buckets)

    @property
    def active(self) -> bool:
        return any(b.rate is not None for b in self.buckets)

    async def spend(self, count: int) -> None:
        if count <= 0:
            return
        delay = 0.0
        for bucket in self.buckets:
            delay = max(delay, bucket.take(count))
        if delay > 0:
            await asyncio.sleep(delay)


async def spend(limit: Optional[RateLimit], count: int) -> None:
    if limit is not None:
        await limit.spend(count)
