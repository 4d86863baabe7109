"""Serving ``GET /transfers/chunks/{ids}``: byte ranges of concatenated instances.

Instance files come from Orthanc's storage through an LRU cache bounded by
``CacheSize``. When several requests want the same file at the same time,
the first one reads it and the others wait for that read (one storage read
per instance, however many workers pull it).

A piece of a large instance (one split over several buckets) is read from
the stored file itself where Orthanc's storage allows it (:class:`StoredFiles`):
only that piece's bytes, so the first piece goes out at once instead of
after the whole file was read through Orthanc's API (1.1 s for 200 MB), and
the memory used is the piece's, not the file's.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

from .codec import CODECS, encode
from .errors import PARAMETER_OUT_OF_RANGE, UNKNOWN_RESOURCE, PluginError


class _Loading:
    """A read in progress that other requests can wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.data: Optional[bytes] = None
        self.error: Optional[BaseException] = None


class InstanceCache:
    def __init__(self, capacity: int, read: Callable[[str], bytes], metrics: Any = None) -> None:
        self.capacity = capacity
        self.read = read
        self.metrics = metrics
        self.lock = threading.Lock()
        self.files: "OrderedDict[str, bytes]" = OrderedDict()
        self.used = 0
        self.loading: Dict[str, _Loading] = {}

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.add(name)

    def get(self, instance_id: str) -> bytes:
        with self.lock:
            data = self.files.get(instance_id)
            if data is not None:
                self.files.move_to_end(instance_id)
                pending, leader = None, False
            else:
                pending = self.loading.get(instance_id)
                leader = pending is None
                if leader:
                    pending = self.loading[instance_id] = _Loading()
        if data is not None:
            self._count("transfers_cache_hits")
            return data
        if leader:
            self._load(instance_id, pending)
        else:
            pending.done.wait()  # another request is reading this file: share its result
        if pending.error is not None:
            raise pending.error
        return pending.data  # type: ignore[return-value]

    def _load(self, instance_id: str, pending: _Loading) -> None:
        self._count("transfers_storage_reads")
        try:
            pending.data = self.read(instance_id)  # outside the lock: storage reads are slow
        except BaseException as exc:
            pending.error = exc
        with self.lock:
            del self.loading[instance_id]
            if pending.data is not None:
                self._store_locked(instance_id, pending.data)
            used = self.used
        if self.metrics is not None:
            self.metrics.set("transfers_cache_bytes", used)
        pending.done.set()

    def cached_size(self, instance_id: str) -> Optional[int]:
        with self.lock:
            data = self.files.get(instance_id)
            return None if data is None else len(data)

    def _store_locked(self, instance_id: str, data: bytes) -> None:
        if len(data) > self.capacity:
            return  # larger than the whole cache: serve it, do not keep it
        self.files[instance_id] = data
        self.used += len(data)
        while self.used > self.capacity:
            _, old = self.files.popitem(last=False)
            self.used -= len(old)


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Only a part of an instance at least this large is read directly: smaller
# files are read whole through the cache, as cheap as asking where they are.
DIRECT_MIN_SIZE = 4 * 1024 * 1024
# Instances whose file location is remembered.
KNOWN_FILES = 1024


class StoredFiles:
    """Where Orthanc's default storage keeps an instance's DICOM file
    (``<StorageDirectory>/ab/cd/abcd...`` by the attachment's UUID), when
    it can be read directly: stored uncompressed (equal compressed and
    uncompressed size and MD5) and found there with the expected size.
    Anything else (StorageCompression, a storage plugin, a file that went
    away) gives None, and the caller reads through Orthanc's API."""

    def __init__(self, api: Any, root: str, metrics: Any = None) -> None:
        self.api = api
        self.root = root
        self.metrics = metrics
        self.lock = threading.Lock()
        self.known: "OrderedDict[str, Optional[str]]" = OrderedDict()

    def path(self, instance_id: str, size: int) -> Optional[str]:
        if not self.root:
            return None
        with self.lock:
            if instance_id in self.known:
                self.known.move_to_end(instance_id)
                return self.known[instance_id]
        found = self._locate(instance_id, size)
        with self.lock:
            self.known[instance_id] = found
            while len(self.known) > KNOWN_FILES:
                self.known.popitem(last=False)
        return found

    def forget(self, instance_id: str) -> None:
        with self.lock:
            self.known.pop(instance_id, None)

    def _locate(self, instance_id: str, size: int) -> Optional[str]:
        try:
            info = json.loads(self.api.RestApiGet("/instances/%s/attachments/dicom/info" % instance_id))
        except (self.api.OrthancException, ValueError):
            return None
        if not isinstance(info, dict):
            return None
        uuid = info.get("Uuid")
        if not isinstance(uuid, str) or not UUID_RE.match(uuid):
            return None
        if not (info.get("CompressedSize") == info.get("UncompressedSize") == size
                and info.get("CompressedMD5") == info.get("UncompressedMD5")):
            return None  # stored compressed: the file's bytes are not the instance's
        path = os.path.join(self.root, uuid[0:2], uuid[2:4], uuid)
        try:
            found = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(found.st_mode) or found.st_size != size:
            return None
        return path

    def read(self, instance_id: str, path: str, offset: int, length: int) -> Optional[bytes]:
        """``length`` bytes at ``offset``, or None (the caller falls back)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            self.forget(instance_id)
            return None
        try:
            if os.fstat(fd).st_size < offset + length:
                self.forget(instance_id)
                return None
            data = os.pread(fd, length, offset)
            if len(data) < length:  # a short read, rare: finish it in a buffer
                parts = [data]
                got = len(data)
                while got < length:
                    more = os.pread(fd, length - got, offset + got)
                    if not more:
                        self.forget(instance_id)
                        return None
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
        except OSError:
            self.forget(instance_id)
            return None
        finally:
            os.close(fd)
        if self.metrics is not None:
            self.metrics.add("transfers_direct_reads")
        return data


# The engine asks for the codec only where its own sample of the data says
# it pays (gui/engine/pull_mode/codec_choice.py); this per-answer check
# only catches a bucket unlike the rest (8-bit data in a 16-bit study), so
# it can be small: 2 x 64 KB of deflate, about 3 % of compressing 4 MB.
CODEC_SAMPLE = 64 * 1024
CODEC_MIN_GAIN = 1.02  # as the engine asks: a codec only for a clear gain


class ChunkServer:
    def __init__(self, api: Any, wire: Any, options: Any, metrics: Any = None) -> None:
        self.api = api
        self.wire = wire
        self.options = options
        self.cache = InstanceCache(options.cache_size, self._read_file, metrics)
        self.stored = StoredFiles(api, getattr(options, "storage_directory", ""), metrics)

    def _read_file(self, instance_id: str) -> bytes:
        try:
            return self.api.RestApiGet("/instances/%s/file" % instance_id)
        except self.api.OrthancException:
            raise PluginError(UNKNOWN_RESOURCE, "chunks: unknown instance %s" % instance_id)

    def _size(self, instance_id: str) -> int:
        cached = self.cache.cached_size(instance_id)
        if cached is not None:
            return cached
        try:
            return int(self.api.RestApiGet("/instances/%s/attachments/dicom/size" % instance_id))
        except self.api.OrthancException:
            raise PluginError(UNKNOWN_RESOURCE, "chunks: unknown instance %s" % instance_id)

    def _piece(self, instance_id: str, length: int, low: int, high: int) -> Any:
        """Bytes ``low:high`` of one instance file of ``length`` bytes."""
        if (high - low < length and length >= DIRECT_MIN_SIZE
                and self.cache.cached_size(instance_id) is None):
            path = self.stored.path(instance_id, length)
            if path is not None:
                data = self.stored.read(instance_id, path, low, high - low)
                if data is not None:
                    return data
        data = self.cache.get(instance_id)
        if low == 0 and high == len(data):
            return data
        return memoryview(data)[low:high]

    def _codec_for(self, body: bytes, asked: List[str]) -> Optional[str]:
        """The first codec of ``asked`` that shrinks this answer clearly more
        than gzip, judged on a sample (64 KB of deflate each, about a
        millisecond): data that is not 16-bit samples goes as gzip, which
        the client accepts as well."""
        sample = body[:CODEC_SAMPLE]
        if len(sample) < 1024 or not asked:
            return None
        level = self.options.gzip_level
        gzipped = len(encode(sample, "gzip", level))
        return next((c for c in asked if gzipped >= len(encode(sample, c, level)) * CODEC_MIN_GAIN), None)

    def serve(self, ids_part: str, query: Dict[str, str]) -> Tuple[bytes, str]:
        """The answer body and its Content-Type."""
        wire = self.wire
        ids = wire.parse_chunk_ids(ids_part, self.options.max_chunk_ids)
        offset = wire.parse_decimal(query.get("offset", "0"), "chunks: offset")
        size = wire.parse_decimal(query.get("size", "0"), "chunks: size")
        compression = wire.parse_compression(query.get("compression", "none"), "chunks: compression")
        # The extension: codecs asked for with gzip ("codecs=", best first, then
        # "codec="), those this server honours; the Content-Type tells the
        # client which one the answer is in.
        asked: List[str] = []
        if compression == "gzip":
            try:
                asked = wire.parse_codec_list(query.get("codecs", ""), "chunks: codecs")
            except wire.WireFormatError:
                asked = []   # unknown query arguments are ignored, as before the extension
            asked += [query["codec"]] if query.get("codec") in CODECS else []
            asked = [c for c in dict.fromkeys(asked) if c in self.options.codecs]
        sizes = [self._size(i) for i in ids]
        total = sum(sizes)
        start = min(offset, total)
        end = total if size == 0 else min(total, offset + size)
        if end - start > self.options.max_answer_size:
            raise PluginError(PARAMETER_OUT_OF_RANGE, "chunks: %d bytes asked, more than MaxChunksAnswerSize"
                              " (%d bytes) in one answer" % (end - start, self.options.max_answer_size))
        pieces: List[Any] = []
        position = 0
        for instance_id, length in zip(ids, sizes):
            low, high = max(start, position), min(end, position + length)
            if low < high:
                pieces.append(self._piece(instance_id, length, low - position, high - position))
            position += length
            if position >= end:
                break
        body = pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)
        codec = self._codec_for(body, asked)
        if codec is not None:
            return encode(body, codec, self.options.gzip_level), wire.CODEC_CONTENT_TYPE[codec]
        if compression == "gzip":
            return encode(body, compression, self.options.gzip_level), "application/gzip"
        return body, "application/octet-stream"
