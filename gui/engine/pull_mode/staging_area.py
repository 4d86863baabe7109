"""Where pulled bytes wait until their instance is whole, verified and delivered.

Each instance gets one buffer when its first chunk arrives: in memory while
the total stays within ``CacheSize``, otherwise a file in the job's staging
directory (written at the chunk's offset). When the last byte of an
instance has arrived its MD5 is computed over the staged bytes (off the
event loop) and compared with the planned one; only then can it be read
for delivery. A mismatch is reported with the instance's ID.

Towards a target whose commit checks every MD5 (``target_verifies``: push
delivery), a large instance split over several buckets (``STREAM_MIN_SIZE``)
is the exception: each of its buckets can be read for delivery as soon as
its bytes are staged, without waiting for the rest of the file. Waiting
held every byte of a 200 MB instance back until the whole file was fetched
(2 s on a LAN, with the target idle). It is not hashed here: the target's
commit checks its size and MD5, and one that does not match there is
re-sent like any instance the commit finds corrupted (resend.py); hashing
it here too took CPU and kept its buffer alive after delivery.

Bounds: an instance is released as soon as every bucket holding it was
delivered (:meth:`delivered`, or :meth:`release` after a plain upload), and
fetch workers do not start a *new* instance while the staged bytes exceed
``lead_bytes`` (:meth:`admit`; at most ``CacheSize``: the fetch needs to run
only a few buckets ahead of the delivery, and more would only hold memory
while the delivery is the slower side); they may always complete an
instance already started, which keeps delivery from waiting forever. So
staged data stays near that lead plus the instances being completed,
whatever the transfer's size. If delivery must start over (a push transaction the
target dropped), released instances are fetched again on demand.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple

from gui.engine.transport_base import TransferFailed
from gui.protocol.wire import Bucket, InstanceInfo

READ_PIECE = 1024 * 1024
# Split instances at least this large are delivered as their chunks arrive.
STREAM_MIN_SIZE = 16 * 1024 * 1024

Refetch = Callable[[Bucket], Awaitable[bytes]]


class InstanceCorrupted(TransferFailed):
    """A staged instance does not have its planned size or MD5."""


@dataclass
class _Staged:
    info: InstanceInfo
    buffer: Optional[bytearray] = None
    path: Optional[Path] = None
    allocated: bool = False
    released: bool = False
    received: int = 0
    chunks: Set[Tuple[int, int]] = field(default_factory=set)
    stored: List[Tuple[int, int]] = field(default_factory=list)   # (offset, size) written
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set when a chunk is written
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: Optional[str] = None

    def file(self) -> Path:
        """The scratch file of an instance staged on disk (not in memory)."""
        assert self.path is not None, f"{self.info.id} is staged in memory"
        return self.path


class StagingArea:
    def __init__(self, instances: Sequence[InstanceInfo], cache_bytes: int, directory: Path,
                 buckets: Sequence[Bucket] = (), refetch: Optional[Refetch] = None,
                 resend: Optional[Callable[[str, str], bool]] = None,
                 lead_bytes: Optional[int] = None, target_verifies: bool = False) -> None:
        self._infos: Dict[str, InstanceInfo] = {i.id: i for i in instances}
        self.cache_bytes = cache_bytes
        # How far the fetch may run ahead of the delivery (staged bytes); None: CacheSize.
        self.lead_bytes = cache_bytes if lead_bytes is None else min(lead_bytes, cache_bytes)
        self.directory = Path(directory)
        self._entries: Dict[str, _Staged] = {}
        self._buckets = list(buckets)
        self._holders: Dict[str, List[int]] = collections.defaultdict(list)
        for index, bucket in enumerate(self._buckets):
            for chunk in bucket.chunks:
                self._holders[chunk.instance_id].append(index)
        self._left: Dict[str, int] = {}
        self.rewind(self._buckets)
        self._refetch = refetch
        self.target_verifies = target_verifies
        # ``resend(id, reason)``: whether a corrupted instance may be fetched
        # again (the job's re-send budget, resend.py); None: never.
        self._resend = resend
        self._restaging: Dict[str, "asyncio.Future[None]"] = {}
        self._room = asyncio.Event()
        self.memory_used = 0
        self.peak_memory = 0
        self.staged_bytes = 0      # memory and disk held by unreleased instances
        self.peak_staged = 0
        self.spilled = 0           # instances that went to disk

    # --- receiving --------------------------------------------------------------

    async def admit(self, bucket: Bucket) -> None:
        """Wait before fetching a bucket that starts new instances while full."""
        def new_bytes() -> int:
            # Staging holds whole instances: a bucket starting one costs its full size.
            entries = {c.instance_id: self._entry(c.instance_id) for c in bucket.chunks}
            return sum(e.info.size for e in entries.values() if not e.allocated and not e.released)
        while new_bytes() and self.staged_bytes > 0 \
                and self.staged_bytes + new_bytes() > self.lead_bytes:
            self._room.clear()
            await self._room.wait()
        # Reserve now, before the fetch: workers admitted together must see
        # each other's instances, or each overshoots the bound on its own.
        for chunk in bucket.chunks:
            entry = self._entry(chunk.instance_id)
            if not entry.released:
                self._allocate(entry)

    async def put(self, bucket: Bucket, data: bytes) -> None:
        """Store a fetched bucket's bytes (already length-checked)."""
        position = 0
        for chunk in bucket.chunks:
            piece = memoryview(data)[position:position + chunk.size]
            position += chunk.size
            entry = self._entry(chunk.instance_id)
            key = (chunk.offset, chunk.size)
            if entry.released or entry.ready.is_set() or key in entry.chunks:
                continue  # fetched again, or already delivered: nothing to keep
            self._allocate(entry)
            entry.chunks.add(key)
            if entry.buffer is not None:
                entry.buffer[chunk.offset:chunk.offset + chunk.size] = piece
            else:
                await asyncio.to_thread(_write_at, entry.file(), chunk.offset, bytes(piece))
            entry.stored.append(key)
            entry.arrived.set()
            entry.received += chunk.size
            if entry.received >= entry.info.size:
                if self._streams(chunk.instance_id):
                    entry.ready.set()   # checked by the target's commit
                    entry.arrived.set()
                else:
                    await self._verify(entry)

    def _entry(self, iid: str) -> _Staged:
        entry = self._entries.get(iid)
        if entry is None:
            entry = self._entries[iid] = _Staged(self._infos[iid])
        return entry

    def _allocate(self, entry: _Staged) -> None:
        if entry.allocated:
            return
        size = entry.info.size
        if self.memory_used + size <= self.cache_bytes:
            entry.buffer = bytearray(size)
            self.memory_used += size
            self.peak_memory = max(self.peak_memory, self.memory_used)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            entry.path = self.directory / f"pulled-{entry.info.id}.dcm"
            entry.path.write_bytes(b"")
            self.spilled += 1
        entry.allocated = True
        self.staged_bytes += size
        self.peak_staged = max(self.peak_staged, self.staged_bytes)

    async def _verify(self, entry: _Staged) -> None:
        info = entry.info
        buffer = entry.buffer
        if buffer is not None:
            digest = await asyncio.to_thread(lambda: hashlib.md5(buffer).hexdigest())
            size = len(buffer)
        else:
            size, digest = await asyncio.to_thread(_file_md5, entry.file())
        if size != info.size:
            entry.error = f"staged {size} bytes, expected {info.size}"
        elif digest != info.md5:
            entry.error = f"MD5 {digest} of the received bytes differs from the source's {info.md5}"
        entry.ready.set()
        entry.arrived.set()

    # --- delivering ---------------------------------------------------------------

    async def wait(self, iid: str) -> _Staged:
        while True:
            entry = self._entry(iid)
            if entry.released:
                await self._restage(iid)
                entry = self._entry(iid)
            await entry.ready.wait()
            if not entry.error:
                break
            if self._entries.get(iid) is not entry:
                continue   # another reader already dropped this copy and fetches it again
            if self._refetch is not None and self._resend is not None \
                    and self._resend(iid, f"fetched from the source corrupted: {entry.error}"):
                self.release(iid)   # the bad bytes go; the next turn fetches them again
                continue
            raise InstanceCorrupted(f"instance {iid} arrived corrupted: {entry.error}", {iid: entry.error})
        if entry.buffer is None and entry.path is None:
            raise RuntimeError(f"instance {iid} was released from the staging area before delivery")
        return entry

    async def _restage(self, iid: str) -> None:
        """Fetch a released instance again (delivery had to start over)."""
        pending = self._restaging.get(iid)
        if pending is not None:
            await asyncio.shield(pending)
            return
        if self._refetch is None:
            raise RuntimeError(f"instance {iid} is needed again but cannot be fetched again")
        pending = asyncio.get_running_loop().create_future()
        self._restaging[iid] = pending
        try:
            self._entries[iid] = _Staged(self._infos[iid])
            for index in self._holders[iid]:
                bucket = self._buckets[index]
                await self.put(bucket, await self._refetch(bucket))
        finally:
            del self._restaging[iid]
            pending.set_result(None)

    def _streams(self, iid: str) -> bool:
        return self.target_verifies and len(self._holders.get(iid, ())) > 1 \
            and self._infos[iid].size >= STREAM_MIN_SIZE

    async def _wait_chunk(self, iid: str, offset: int, size: int) -> _Staged:
        """The entry once bytes ``offset:offset+size`` of a streamed instance are
        staged (or, once it is whole, released or failed, as :meth:`wait`)."""
        end = offset + size
        while True:
            entry = self._entry(iid)
            if entry.released or entry.ready.is_set():
                return await self.wait(iid)
            if entry.buffer is not None or entry.path is not None:
                if any(o <= offset and end <= o + s for o, s in entry.stored):
                    return entry
            entry.arrived.clear()
            await entry.arrived.wait()

    async def read(self, bucket: Bucket, on_retry: object = None) -> bytes:
        """A bucket's bytes, once all its instances are verified (push
        delivery); a streamed instance's once that chunk is staged."""
        parts = [await self._read_chunk(chunk.instance_id, chunk.offset, chunk.size) for chunk in bucket.chunks]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _read_chunk(self, iid: str, offset: int, size: int) -> bytes:
        while True:
            if self._streams(iid):
                entry = await self._wait_chunk(iid, offset, size)
            else:
                entry = await self.wait(iid)
            if entry.buffer is not None:
                return bytes(entry.buffer[offset:offset + size])
            try:
                return await asyncio.to_thread(_read_at, entry.file(), offset, size)
            except FileNotFoundError:
                if not entry.released:
                    raise
                # Released while the read waited for a thread (its other
                # buckets all delivered meanwhile, as when delivery starts
                # over): the next turn fetches it again, as for any released
                # instance.

    def delivered(self, bucket: Bucket) -> None:
        """A bucket reached the target: release instances no longer needed."""
        for chunk in bucket.chunks:
            iid = chunk.instance_id
            self._left[iid] = self._left.get(iid, 1) - 1
            if self._left[iid] <= 0:
                self.release(iid)

    def rewind(self, buckets: Sequence[Bucket]) -> None:
        """Delivery starts over: every bucket will be read (and delivered) again."""
        self._left = {iid: len(holders) for iid, holders in self._holders.items()}

    async def instance_bytes(self, iid: str) -> bytes:
        return await self._read_chunk(iid, 0, self._infos[iid].size)

    def release(self, iid: str) -> None:
        entry = self._entry(iid)
        if entry.released:
            return
        if entry.buffer is not None:
            self.memory_used -= len(entry.buffer)
            entry.buffer = None
        if entry.path is not None:
            _unlink(entry.path)
            entry.path = None
        if entry.allocated:
            self.staged_bytes -= entry.info.size
        # Kept, marked: a late duplicate chunk must not stage it again.
        entry.released = True
        entry.arrived.set()
        self._room.set()

    def close(self) -> None:
        for iid in list(self._entries):
            self.release(iid)
        self._entries.clear()


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _file_md5(path: Path) -> Tuple[int, str]:
    digest = hashlib.md5()
    size = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(READ_PIECE)
            if not piece:
                break
            size += len(piece)
            digest.update(piece)
    return size, digest.hexdigest()


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
