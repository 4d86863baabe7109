"""Retry policy of single HTTP queries."""

from __future__ import annotations

import asyncio

import pytest

from gui.client.errors import OrthancError
from gui.engine.retry import backoff_delay, with_retries


def failing(errors):
    calls = []

    async def query():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"
    return query, calls


def test_retryable_errors_are_retried_and_reported():
    query, calls = failing([OrthancError("refused"), OrthancError("busy", status=503)])
    seen = []
    result = asyncio.run(with_retries(query, 3, on_retry=lambda n, e: seen.append((n, e.status)),
                                      base_delay=0.001))
    assert result == "ok" and len(calls) == 3
    assert seen == [(1, None), (2, 503)]


def test_non_retryable_errors_fail_at_once():
    query, calls = failing([OrthancError("not found", status=404)])
    with pytest.raises(OrthancError):
        asyncio.run(with_retries(query, 5, base_delay=0.001))
    assert len(calls) == 1


def test_gives_up_after_max_retries():
    query, calls = failing([OrthancError("down")] * 5)
    with pytest.raises(OrthancError):
        asyncio.run(with_retries(query, 2, base_delay=0.001))
    assert len(calls) == 3


def test_backoff_grows_and_is_capped():
    assert all(0.25 <= backoff_delay(1) <= 0.5 for _ in range(50))
    assert all(backoff_delay(3) <= 2.0 for _ in range(50))
    assert all(backoff_delay(30) <= 15.0 for _ in range(50))
