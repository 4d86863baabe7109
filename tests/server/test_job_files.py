"""The plugin's job files: saves of one job from several threads at once
(its worker, a pause asked over REST) leave a file the next start reads."""

from __future__ import annotations

import threading

from gui.resources.server_plugin.transfers_plugin.jobs import PAUSED, Job, JobRegistry


def test_concurrent_saves_of_a_job_leave_a_readable_file(tmp_path) -> None:
    warnings = []
    registry = JobRegistry(str(tmp_path), {}, log_warning=warnings.append)
    job = Job("PushTransfer", {"Resources": [], "Peer": "dst", "Compression": "none"})
    registry.jobs[job.id] = job
    # A checkpoint of some size, so that a write takes long enough to overlap another.
    job.checkpoint = {"SentBuckets": list(range(20000))}
    start = threading.Barrier(8)

    def saver(n: int) -> None:
        start.wait()
        for i in range(25):
            job.publish(None, SentBuckets=n * 100 + i)
            registry.save(job)

    threads = [threading.Thread(target=saver, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not warnings
    after_restart = JobRegistry(str(tmp_path), {}, log_warning=warnings.append)
    after_restart.load()
    assert not warnings
    assert list(after_restart.jobs) == [job.id] and after_restart.jobs[job.id].state == PAUSED
