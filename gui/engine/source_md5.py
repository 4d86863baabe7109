"""Source MD5s fetched beside the transfer instead of before it.

A stock source gives its MD5s one GET per instance. Planning needs them only
for the instances the target already holds (same MD5: nothing to send); for
every other one the MD5 is first needed when its copy is checked, and at the
final verification. Over a 40 ms link, 300 look-ups before the first byte
cost about 0.8 s of a 16 s retrieve: so the planner leaves those MD5s empty
(``PENDING``) and :class:`DeferredSourceMd5s` fetches them in the order the
transfer will need them, while it runs.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Dict, Iterator, List, Sequence

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine.retry import with_retries
from gui.protocol.wire import InstanceInfo

# An InstanceInfo's md5 while its source MD5 is still to be fetched.
PENDING = ""
# Look-ups in flight: tiny answers, so over a WAN the round trip is what
# limits (32 / 40 ms = 800 per second; 16 made a retrieve of 2,000 small
# instances wait 3 s for them). As many as plain mode's read-backs, within
# the client's connections and Orthanc's 50 HTTP threads.
CONCURRENCY = 32


class SourceMd5Error(Exception):
    """The source could not give an instance's MD5 (after the retries)."""

    def __init__(self, instance_id: str, error: OrthancError) -> None:
        super().__init__(f"cannot read the MD5 of instance {instance_id} on the source: {error}")
        self.instance_id = instance_id
        self.error = error


class DeferredSourceMd5s:
    """The source MD5s of ``ids``, fetched in that order, ``concurrency`` at a
    time, from :meth:`start` on. :meth:`get` waits for one; :meth:`all` for every one."""

    def __init__(self, source: OrthancClient, ids: Sequence[str], *, retries: int,
                 concurrency: int = CONCURRENCY) -> None:
        self._source = source
        self._ids = list(dict.fromkeys(ids))
        self._retries = retries
        self._concurrency = max(1, concurrency)
        self._found: Dict[str, "asyncio.Future[str]"] = {}
        self._workers: List["asyncio.Future[None]"] = []

    def start(self) -> None:
        if self._workers:
            return
        loop = asyncio.get_running_loop()
        self._found = {i: loop.create_future() for i in self._ids}
        # One iterator shared by the workers: each takes the next ID in order.
        order = iter(self._ids)
        self._workers = [asyncio.ensure_future(self._work(order))
                         for _ in range(min(self._concurrency, len(self._ids)))]

    async def _work(self, order: Iterator[str]) -> None:
        for instance_id in order:
            future = self._found[instance_id]
            try:
                md5 = await with_retries(functools.partial(self._source.instance_md5, instance_id),
                                         self._retries)
            except OrthancError as exc:
                if not future.done():
                    future.set_exception(SourceMd5Error(instance_id, exc))
                continue
            if not future.done():
                future.set_result(md5)

    async def get(self, instance_id: str) -> str:
        """The source's MD5 of ``instance_id``; SourceMd5Error if it cannot be read."""
        self.start()
        future = self._found.get(instance_id)
        if future is None:
            raise KeyError(instance_id)
        return await asyncio.shield(future)

    def known(self) -> Dict[str, str]:
        """The MD5s fetched so far."""
        return {i: f.result() for i, f in self._found.items()
                if f.done() and not f.cancelled() and f.exception() is None}

    async def all(self) -> Dict[str, str]:
        """Every MD5; raises the first SourceMd5Error met."""
        self.start()
        if self._found:
            await asyncio.gather(*(asyncio.shield(f) for f in self._found.values()))
        return self.known()

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for future in self._found.values():
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()     # retrieved: no "never retrieved" warning


def pending(instances: Sequence[InstanceInfo]) -> List[str]:
    """The IDs of the instances whose source MD5 is still to be fetched."""
    return [i.id for i in instances if i.md5 == PENDING]


def filled(instances: Sequence[InstanceInfo], md5s: Dict[str, str]) -> List[InstanceInfo]:
    """``instances`` with the fetched MD5s in place of the pending ones."""
    return [InstanceInfo(i.id, i.size, md5s[i.id]) if i.md5 == PENDING and i.id in md5s else i
            for i in instances]
