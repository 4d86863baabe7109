"""Pull mode's staging area: a read of a staged file that loses a race with
the release of its instance fetches the instance again instead of failing
the job (seen under load in CI: "No such file or directory" for a pulled
instance while the delivery started over)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

from gui.engine.pull_mode import staging_area
from gui.engine.pull_mode.staging_area import StagingArea
from gui.protocol.wire import InstanceInfo, plan_buckets

INSTANCE_ID = "11111111-22222222-33333333-44444444-55555555"


def test_a_file_released_while_its_read_waits_for_a_thread_is_fetched_again(tmp_path: Path, monkeypatch) -> None:
    data = os.urandom(3 * 256 * 1024)
    info = InstanceInfo(INSTANCE_ID, len(data), hashlib.md5(data).hexdigest())
    buckets = plan_buckets([info], 256 * 1024)
    assert len(buckets) >= 2
    fetched_again = []

    async def refetch(bucket):
        fetched_again.append(bucket.chunks[0].offset)
        chunk = bucket.chunks[0]
        return data[chunk.offset:chunk.offset + chunk.size]

    async def go() -> bytes:
        loop = asyncio.get_running_loop()
        # CacheSize 0: the instance goes to a file in the staging directory.
        area = StagingArea([info], 0, tmp_path, buckets, refetch=refetch)
        for bucket in buckets:
            await area.admit(bucket)
            chunk = bucket.chunks[0]
            await area.put(bucket, data[chunk.offset:chunk.offset + chunk.size])
        original = staging_area._read_at
        released = threading.Event()
        calls = []

        def read_after_release(path, offset, size):
            calls.append(offset)
            if len(calls) == 1:
                # The loop releases the instance (its buckets all delivered)
                # between the read's start and the file's opening.
                loop.call_soon_threadsafe(lambda: (area.release(INSTANCE_ID), released.set()))
                released.wait(10)
            return original(path, offset, size)

        monkeypatch.setattr(staging_area, "_read_at", read_after_release)
        try:
            return await area.read(buckets[1])
        finally:
            area.close()

    chunk = buckets[1].chunks[0]
    assert asyncio.run(asyncio.wait_for(go(), 30)) == data[chunk.offset:chunk.offset + chunk.size]
    assert sorted(fetched_again) == [b.chunks[0].offset for b in buckets]   # the whole instance, again
