"""The event-loop stall probe sees a blocked loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.devtools.bench.stall_probe import StallProbe


def test_a_blocking_call_shows_up_as_a_stall() -> None:
    async def scenario():  # type: ignore[no-untyped-def]
        probe = StallProbe().start()
        while len(probe.delays) < 5:          # a few normal ticks first
            await asyncio.sleep(0.01)
        time.sleep(0.1)                       # the loop is blocked for 100 ms
        ticks = len(probe.delays)
        while len(probe.delays) < ticks + 3:  # the late tick and a few after it
            await asyncio.sleep(0.01)
        return probe.stop()

    report = asyncio.run(scenario())
    print(report)
    assert report.max_ms >= 90
    assert report.samples >= 8


def test_report_before_any_tick_and_stop_is_idempotent() -> None:
    async def scenario():  # type: ignore[no-untyped-def]
        async with StallProbe() as probe:
            assert probe.running
        assert not probe.running
        return probe.stop()

    report = asyncio.run(scenario())
    assert report.samples >= 0 and report.max_ms >= 0
    assert set(report.to_json()) == {"samples", "max_ms", "p99_ms", "mean_ms"}


def test_p99_ignores_a_single_outlier_among_many_ticks() -> None:
    probe = StallProbe()
    probe.delays = [0.001] * 199 + [0.5]
    report = probe.report()
    assert report.max_ms == pytest.approx(500)
    assert report.p99_ms == pytest.approx(1)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StallProbe(interval=0)


def _blocking_step() -> None:
    time.sleep(0.15)


def test_stack_capture_names_the_blocking_function() -> None:
    async def scenario():  # type: ignore[no-untyped-def]
        probe = StallProbe(capture_stacks=True, stack_threshold=0.05).start()
        while len(probe.delays) < 3:
            await asyncio.sleep(0.01)
        _blocking_step()
        ticks = len(probe.delays)
        while len(probe.delays) < ticks + 2:
            await asyncio.sleep(0.01)
        return probe.stop()

    report = asyncio.run(scenario())
    assert report.max_ms >= 140
    assert len(report.stacks) == 1
    blocked_ms, frames = report.stacks[0]
    assert blocked_ms >= 140  # the whole stall, not just until it was caught
    assert any("_blocking_step" in f for f in frames)
    assert report.to_json()["stalls"][0]["stack"] == list(frames)
