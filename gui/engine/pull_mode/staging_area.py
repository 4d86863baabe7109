"""Where pulled bytes wait until their instance is whole and verified.

Each instance gets one buffer when its first chunk arrives: in memory while
the total stays within ``CacheSize``, otherwise a file in the job's staging
directory (written at the chunk's offset). When the last byte of an
instance has arrived its MD5 is computed over the staged bytes (off the
event loop) and compared with the planned one; only then can it be read
for delivery. A mismatch is reported with the instance's ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Set, Tuple

from gui.engine.transport_base import TransferFailed
from gui.protocol.wire import Bucket, InstanceInfo

READ_PIECE = 1024 * 1024


class InstanceCorrupted(TransferFailed):
    """A staged instance does not have its planned size or MD5."""


@dataclass
class _Staged:
    info: InstanceInfo
    buffer: Optional[bytearray] = None
    path: Optional[Path] = None
    received: int = 0
    chunks: Set[Tuple[int, int]] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: Optional[str] = None


class StagingArea:
    def __init__(self, instances: Sequence[InstanceInfo], cache_bytes: int, directory: Path) -> None:
        self._infos: Dict[str, InstanceInfo] = {i.id: i for i in instances}
        self.cache_bytes = cache_bytes
        self.directory = Path(directory)
        self._entries: Dict[str, _Staged] = {}
        self.memory_used = 0
        self.peak_memory = 0
        self.spilled = 0   # instances that went to disk

    # --- receiving --------------------------------------------------------------

    async def put(self, bucket: Bucket, data: bytes) -> None:
        """Store a fetched bucket's bytes (already length-checked)."""
        position = 0
        for chunk in bucket.chunks:
            piece = memoryview(data)[position:position + chunk.size]
            position += chunk.size
            entry = self._entry(chunk.instance_id)
            key = (chunk.offset, chunk.size)
            if entry.ready.is_set() or key in entry.chunks:
                continue  # fetched again (a re-run): already here
            entry.chunks.add(key)
            if entry.buffer is not None:
                entry.buffer[chunk.offset:chunk.offset + chunk.size] = piece
            else:
                await asyncio.to_thread(_write_at, entry.path, chunk.offset, bytes(piece))
            entry.received += chunk.size
            if entry.received >= entry.info.size:
                await self._verify(entry)

    def _entry(self, iid: str) -> _Staged:
        entry = self._entries.get(iid)
        if entry is not None:
            return entry
        info = self._infos[iid]
        entry = _Staged(info)
        if self.memory_used + info.size <= self.cache_bytes:
            entry.buffer = bytearray(info.size)
            self.memory_used += info.size
            self.peak_memory = max(self.peak_memory, self.memory_used)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            entry.path = self.directory / f"pulled-{iid}.dcm"
            entry.path.write_bytes(b"")
            self.spilled += 1
        self._entries[iid] = entry
        return entry

    async def _verify(self, entry: _Staged) -> None:
        info = entry.info
        if entry.buffer is not None:
            digest = await asyncio.to_thread(lambda: hashlib.md5(entry.buffer).hexdigest())
            size = len(entry.buffer)
        else:
            size, digest = await asyncio.to_thread(_file_md5, entry.path)
        if size != info.size:
            entry.error = f"staged {size} bytes, expected {info.size}"
        elif digest != info.md5:
            entry.error = f"MD5 {digest} of the received bytes differs from the source's {info.md5}"
        entry.ready.set()

    # --- delivering ---------------------------------------------------------------

    async def wait(self, iid: str) -> _Staged:
        entry = self._entry(iid)
        await entry.ready.wait()
        if entry.error:
            raise InstanceCorrupted(f"instance {iid} arrived corrupted: {entry.error}", {iid: entry.error})
        if entry.buffer is None and entry.path is None:
            raise RuntimeError(f"instance {iid} was released from the staging area before delivery")
        return entry

    async def read(self, bucket: Bucket, on_retry: object = None) -> bytes:
        """A bucket's bytes, once all its instances are verified (push delivery)."""
        parts = []
        for chunk in bucket.chunks:
            entry = await self.wait(chunk.instance_id)
            if entry.buffer is not None:
                parts.append(bytes(entry.buffer[chunk.offset:chunk.offset + chunk.size]))
            else:
                parts.append(await asyncio.to_thread(_read_at, entry.path, chunk.offset, chunk.size))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def rewind(self, buckets: Sequence[Bucket]) -> None:
        """Nothing to do: staged instances stay until released."""

    async def instance_bytes(self, iid: str) -> bytes:
        entry = await self.wait(iid)
        if entry.buffer is not None:
            return bytes(entry.buffer)
        return await asyncio.to_thread(entry.path.read_bytes)  # type: ignore[union-attr]

    def release(self, iid: str) -> None:
        entry = self._entries.get(iid)
        if entry is None:
            return
        if entry.buffer is not None:
            self.memory_used -= len(entry.buffer)
            entry.buffer = None
        if entry.path is not None:
            _unlink(entry.path)
        # Keep the (empty) entry: a late duplicate chunk must not restage it.
        entry.path = None

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
