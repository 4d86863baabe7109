"""Engine events → Qt signals, coalesced into a few frames per second.

The engine calls its subscribers on the asyncio loop for every bucket state
change and every 256 KB; repainting on each of those would starve the event
loop with thousands of buckets. The bridge only records the latest event per
job and per bucket, and a QTimer hands them to the views in batches.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Tuple

from PySide6.QtCore import QObject, QTimer, Signal

from gui.engine.events import BucketProgress, JobFinished, JobProgress

DEFAULT_INTERVAL_MS = 150


class EngineEventBridge(QObject):
    """Collects engine events and emits them in batches on the Qt thread."""

    #: list[JobProgress], the latest one per job since the last frame
    jobsProgressed = Signal(list)
    #: job id, list[BucketProgress] (latest per bucket, ascending index)
    bucketsProgressed = Signal(str, list)
    #: JobFinished, after the progress of the same frame
    jobFinished = Signal(object)

    def __init__(self, interval_ms: int = DEFAULT_INTERVAL_MS, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        # The engine calls back on the asyncio loop, which qasync runs on the
        # Qt thread; the lock only guards against an engine run elsewhere.
        self._lock = threading.Lock()
        self._jobs: Dict[str, JobProgress] = {}
        self._buckets: Dict[str, Dict[int, BucketProgress]] = {}
        self._finished: List[JobFinished] = []
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        self.frames = 0   # how many batches were delivered (tests, benchmark)

    def attach(self, engine: object) -> None:
        self.detach()
        self._unsubscribe = engine.subscribe(self.on_event)  # type: ignore[attr-defined]
        self._timer.start()

    def detach(self) -> None:
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            finally:
                self._unsubscribe = None
        self._timer.stop()

    def on_event(self, event: object) -> None:
        """The engine's callback: store, never paint (must be quick)."""
        with self._lock:
            if isinstance(event, BucketProgress):
                self._buckets.setdefault(event.job_id, {})[event.index] = event
            elif isinstance(event, JobProgress):
                self._jobs[event.job_id] = event
            elif isinstance(event, JobFinished):
                self._finished.append(event)
        if not self._timer.isActive() and threading.current_thread() is threading.main_thread():
            self._timer.start()

    def pending(self) -> Tuple[int, int, int]:
        with self._lock:
            return (len(self._jobs), sum(len(b) for b in self._buckets.values()), len(self._finished))

    def flush(self) -> None:
        """Deliver everything collected since the last frame."""
        with self._lock:
            jobs, self._jobs = self._jobs, {}
            buckets, self._buckets = self._buckets, {}
            finished, self._finished = self._finished, []
        if not (jobs or buckets or finished):
            return
        self.frames += 1
        if jobs:
            self.jobsProgressed.emit(list(jobs.values()))
        for job_id, by_index in buckets.items():
            self.bucketsProgressed.emit(job_id, [by_index[i] for i in sorted(by_index)])
        for event in finished:
            self.jobFinished.emit(event)
