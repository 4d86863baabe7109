"""One job's progress: bucket events folded into totals and live rates.

The runner feeds every :class:`BucketProgress` to :meth:`ProgressTracker.on_bucket`
and asks for a :class:`JobProgress` at most every ``PROGRESS_INTERVAL``
(more often would flood the UI on jobs with thousands of small buckets).
Totals are kept up to date per event, never recomputed from all buckets.
"""

from __future__ import annotations

import collections
import time
from typing import Dict, List, Optional, Set, Tuple

from gui.engine.events import BucketProgress, BucketState, JobProgress, JobState, TransferMode
from gui.protocol.wire import Bucket

PROGRESS_INTERVAL = 0.1     # seconds between two JobProgress events of one job
RATE_WINDOW = 3.0           # seconds of history for the live rates


class ProgressTracker:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.started = time.monotonic()
        self._last_progress = 0.0
        self._samples: "collections.deque[Tuple[float, int, int]]" = collections.deque()
        self._bucket_index: Dict[int, BucketProgress] = {}
        self._instances_total = 0
        self._raw_total = 0
        self._raw_done = 0
        self._wire_done = 0
        self._buckets_done = 0
        self._instances_done = 0
        self._remaining: Dict[str, int] = {}     # instance -> its buckets not done yet
        # Paused time is not the job's: elapsed and rates run on a clock that
        # stands still while the job is paused.
        self._paused_total = 0.0
        self._paused_at: Optional[float] = None

    def restart_clock(self) -> None:
        self.started = time.monotonic()
        self._paused_total = 0.0
        self._paused_at = None
        self._samples.clear()

    def pause_clock(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume_clock(self) -> None:
        if self._paused_at is not None:
            self._paused_total += time.monotonic() - self._paused_at
            self._paused_at = None

    @property
    def clock_paused(self) -> bool:
        return self._paused_at is not None

    def _active_now(self) -> float:
        """Monotonic time minus every pause (frozen while paused)."""
        now = self._paused_at if self._paused_at is not None else time.monotonic()
        return now - self._paused_total

    def plan(self, buckets: List[Bucket], done: Set[int], instances_total: int,
             raw_total: int) -> List[BucketProgress]:
        """Start over with these buckets (``done`` finished in an earlier run);
        the first event of each bucket, for the job and its observers."""
        self._instances_total = instances_total
        self._raw_total = raw_total
        for bucket in buckets:
            for instance_id in bucket.instance_ids():
                self._remaining[instance_id] = self._remaining.get(instance_id, 0) + 1
        events = []
        for index, bucket in enumerate(buckets):
            state = BucketState.DONE if index in done else BucketState.QUEUED
            event = BucketProgress(job_id=self.job_id, index=index, state=state, chunks=len(bucket.chunks),
                                   instance_ids=bucket.instance_ids(), raw_total=bucket.total_size,
                                   raw_done=bucket.total_size if state is BucketState.DONE else 0)
            self._count(event, 1)
            self._bucket_index[index] = event
            events.append(event)
        return events

    def on_bucket(self, event: BucketProgress) -> None:
        old = self._bucket_index.get(event.index)
        if old is not None:
            self._count(old, -1)
        self._count(event, 1)
        self._bucket_index[event.index] = event

    def elapsed(self) -> float:
        """Seconds the job ran, pauses excluded."""
        return self._active_now() - self.started

    @property
    def wire_done(self) -> int:
        return self._wire_done

    @property
    def all_buckets_done(self) -> bool:
        return bool(self._bucket_index) and self._buckets_done == len(self._bucket_index)

    def raw_done_in_done_buckets(self) -> int:
        return sum(b.raw_done for b in self._bucket_index.values() if b.state is BucketState.DONE)

    def due(self, force: bool = False) -> bool:
        """Whether a JobProgress is due now (always when ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return False
        self._last_progress = now
        return True

    def snapshot(self, state: JobState, mode: Optional[TransferMode], compression: Optional[str],
                 error: Optional[str] = None) -> JobProgress:
        now = self._active_now()
        raw_done, wire_done = self._raw_done, self._wire_done
        self._samples.append((now, raw_done, wire_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        raw_rate = wire_rate = 0.0
        first = self._samples[0]
        if now - first[0] > 0.2 and self._paused_at is None:   # nothing moves while paused
            raw_rate = (raw_done - first[1]) / (now - first[0])
            wire_rate = (wire_done - first[2]) / (now - first[0])
        return JobProgress(
            job_id=self.job_id, state=state, mode=mode, compression=compression,
            instances_total=self._instances_total, instances_done=self._instances_done,
            raw_total=self._raw_total, raw_done=raw_done, wire_done=wire_done,
            buckets_total=len(self._bucket_index), buckets_done=self._buckets_done,
            elapsed=now - self.started, raw_rate=max(0.0, raw_rate), wire_rate=max(0.0, wire_rate),
            error=error)

    def _count(self, event: BucketProgress, sign: int) -> None:
        """Add (sign 1) or remove (sign -1) one bucket event from the running totals."""
        self._raw_done += sign * event.raw_done
        self._wire_done += sign * event.wire_done
        if event.state is BucketState.DONE:
            self._buckets_done += sign
            for instance_id in event.instance_ids:
                before = self._remaining.get(instance_id, 0)
                after = before - sign
                self._remaining[instance_id] = after
                if before > 0 and after == 0:
                    self._instances_done += 1
                elif before == 0 and after > 0:
                    self._instances_done -= 1
