"""Retrying one HTTP query: exponential backoff with jitter, retryable errors only.

The C++ plugin waits a fixed second between attempts; a fixed delay makes
many workers hammer a recovering server in lock-step, so the delay doubles
on each attempt and is randomised.
"""

from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable, Optional, TypeVar

from gui.client.errors import OrthancError

T = TypeVar("T")

BASE_DELAY = 0.5      # seconds before the first retry
MAX_DELAY = 15.0      # cap of one wait

RetryCallback = Callable[[int, OrthancError], None]


def backoff_delay(attempt: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Wait before retry number ``attempt`` (1-based): full jitter in [base/2, base*2^(n-1)]."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return random.uniform(min(base / 2, ceiling), ceiling)


async def with_retries(query: Callable[[], Awaitable[T]], retries: int, *,
                       on_retry: Optional[RetryCallback] = None,
                       base_delay: float = BASE_DELAY) -> T:
    """Run ``query``; on a retryable :class:`OrthancError` try again up to ``retries`` times.

    ``on_retry(n, error)`` is called before the n-th retry (so a bucket can
    show "retrying n"). Non-retryable errors (404, 401, 400...) are raised at
    once: repeating them cannot help.
    """
    attempt = 0
    while True:
        try:
            return await query()
        except OrthancError as exc:
            if not exc.is_retryable or attempt >= retries:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(backoff_delay(attempt, base_delay))
