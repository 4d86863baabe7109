"""Speed and elapsed time leave out the time a job spent paused."""

from __future__ import annotations

from typing import List

import pytest

from gui.engine import progress as progress_module
from gui.engine.events import BucketProgress, BucketState, JobState
from gui.engine.progress import ProgressTracker
from gui.protocol.wire import Bucket, Chunk


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def buckets(n: int, size: int) -> List[Bucket]:
    return [Bucket([Chunk(f"i{k}", 0, size)]) for k in range(n)]


def done(index: int, size: int) -> BucketProgress:
    return BucketProgress(job_id="j", index=index, state=BucketState.DONE, chunks=1,
                          instance_ids=[f"i{index}"], raw_total=size, raw_done=size, wire_done=size)


def test_a_pause_neither_adds_to_elapsed_nor_lowers_the_speed(clock: Clock) -> None:
    tracker = ProgressTracker("j")
    tracker.restart_clock()
    tracker.plan(buckets(4, 1000), set(), 4, 4000)
    tracker.snapshot(JobState.RUNNING, None, None)
    clock.now += 1.0
    tracker.on_bucket(done(0, 1000))
    assert tracker.snapshot(JobState.RUNNING, None, None).raw_rate == pytest.approx(1000)

    tracker.pause_clock()
    clock.now += 60.0                       # a long pause
    paused = tracker.snapshot(JobState.PAUSED, None, None)
    assert paused.elapsed == pytest.approx(1.0)
    assert paused.raw_rate == 0.0           # nothing moves while paused
    tracker.resume_clock()

    clock.now += 1.0
    tracker.on_bucket(done(1, 1000))
    after = tracker.snapshot(JobState.RUNNING, None, None)
    assert after.elapsed == pytest.approx(2.0)
    assert tracker.elapsed() == pytest.approx(2.0)   # the report's seconds
    # 2000 bytes in 2 s of running, not in 62 s of wall time.
    assert after.raw_rate == pytest.approx(1000)


def test_pausing_twice_or_resuming_a_running_clock_changes_nothing(clock: Clock) -> None:
    tracker = ProgressTracker("j")
    tracker.restart_clock()
    tracker.resume_clock()
    clock.now += 2.0
    tracker.pause_clock()
    clock.now += 5.0
    tracker.pause_clock()
    clock.now += 5.0
    tracker.resume_clock()
    clock.now += 1.0
    assert tracker.elapsed() == pytest.approx(3.0)
