"""Smaller pieces over a hostile link, larger again once it recovers.

A link that resets every connection after a few megabytes kills every retry
of a 4 MB bucket at the same point: retrying the same body cannot help,
sending less per request does. :class:`PieceSize` is the policy: it halves
the largest body after a request failed for good on the link (a reset or a
timeout, not an HTTP answer), never below ``MIN_PIECE``, and doubles it
again, up to where it started, after ``GROW_AFTER`` successes in a row.
The last size seen towards a server is remembered for the next job
(:func:`remembered`), growing back from there.

Where the protocol allows it, a bucket is cut into valid smaller buckets
(:func:`split_bucket`: whole small instances grouped, a large chunk cut
into pieces that travel alone, order kept):

- push: a new transaction is planned on the smaller pieces
  (``BucketPusher``; :class:`SplitPlan` reports them on the original
  buckets so the job's progress stays as planned);
- pull: a bucket is fetched as several ranged ``GET /transfers/chunks``
  (``offset``/``size`` address any range of the concatenation);
- plain: a ZIP of several instances is sent as two smaller ZIPs.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

from gui.client.errors import OrthancError
from gui.protocol.wire import Bucket, Chunk

log = logging.getLogger(__name__)

MIN_PIECE = 256 * 1024
GROW_AFTER = 4

_REMEMBERED: Dict[str, int] = {}


def is_link_failure(exc: BaseException) -> bool:
    """A request that got no answer (reset, timeout): the link, not the
    server. A refused connection is a server down (restarting), which
    smaller pieces would not help."""
    return isinstance(exc, OrthancError) and exc.status is None and "refused" not in exc.reason.lower()


def remembered(key: str, default: int) -> int:
    return min(default, _REMEMBERED.get(key, default))


class PieceSize:
    def __init__(self, initial: int, key: Optional[str] = None, minimum: int = MIN_PIECE) -> None:
        self.initial = max(1, initial)
        self.minimum = min(minimum, self.initial)
        self.key = key
        self.size = remembered(key, self.initial) if key else self.initial
        self.successes = 0
        self.shrunk = 0          # how many times it had to shrink (report, tests)

    def shrink(self, failed_size: Optional[int] = None) -> bool:
        """After a link failure of a body of ``failed_size``: a smaller size,
        or False when already at the minimum (splitting further cannot help)."""
        base = min(self.size, failed_size) if failed_size else self.size
        if base <= self.minimum:
            return False
        self.size = max(self.minimum, base // 2)
        self.successes = 0
        self.shrunk += 1
        self._remember()
        log.warning("hostile link%s: pieces of at most %d KB from now on",
                    f" to {self.key}" if self.key else "", self.size // 1024)
        return True

    def succeeded(self) -> None:
        if self.size >= self.initial:
            return
        self.successes += 1
        if self.successes >= GROW_AFTER:
            self.size = min(self.initial, self.size * 2)
            self.successes = 0
            self._remember()

    def _remember(self) -> None:
        if self.key:
            if self.size >= self.initial:
                _REMEMBERED.pop(self.key, None)
            else:
                _REMEMBERED[self.key] = self.size


def split_bucket(bucket: Bucket, size: int, instance_sizes: Mapping[str, int]) -> List[Bucket]:
    """``bucket`` as buckets of at most ``size`` bytes (one chunk may be
    alone and larger only if ``size`` is 0), carrying the same bytes in the
    same order, each valid by PROTOCOL.md §1."""
    if bucket.total_size <= size or size <= 0:
        return [bucket]
    out: List[Bucket] = []
    group: List[Chunk] = []
    group_size = 0

    def close() -> None:
        nonlocal group, group_size
        if group:
            out.append(Bucket(list(group)))
        group, group_size = [], 0

    for chunk in bucket.chunks:
        whole = chunk.offset == 0 and chunk.size == instance_sizes.get(chunk.instance_id, -1)
        if whole and chunk.size <= size:
            if group_size + chunk.size > size:
                close()
            group.append(chunk)
            group_size += chunk.size
            continue
        close()
        # A partial (or large) chunk travels in pieces of its own.
        start, end = chunk.offset, chunk.offset + chunk.size
        while start < end:
            piece = min(size, end - start)
            out.append(Bucket([Chunk(chunk.instance_id, start, piece)]))
            start += piece
    close()
    return out


class SplitPlan:
    """The buckets a transaction is planned with (``parts``), each belonging
    to one of the job's planned buckets (``originals``)."""

    def __init__(self, originals: Sequence[Bucket]) -> None:
        self.originals = list(originals)
        self.parts: List[Bucket] = list(originals)
        self.owner: List[int] = list(range(len(originals)))
        self.piece = 0    # 0: not split

    def resplit(self, size: int, instance_sizes: Mapping[str, int]) -> List[Bucket]:
        self.parts, self.owner = [], []
        for index, bucket in enumerate(self.originals):
            for part in split_bucket(bucket, size, instance_sizes):
                self.parts.append(part)
                self.owner.append(index)
        self.piece = size
        return self.parts

    def parts_of(self, original: int) -> List[int]:
        return [n for n, o in enumerate(self.owner) if o == original]

    def complete(self, original: int, done: "set[int]") -> bool:
        return all(n in done for n in self.parts_of(original))

    def done_bytes(self, original: int, done: "set[int]") -> int:
        return sum(self.parts[n].total_size for n in self.parts_of(original) if n in done)


async def fetch_adaptive(fetcher: Any, index: Optional[int], bucket: Bucket, on_retry: Any,
                         piece: PieceSize, instance_sizes: Mapping[str, int]) -> "bytes | bytearray":
    """A pull bucket's bytes, fetched whole or, over a link that keeps
    breaking, as several ranged GETs of at most ``piece.size`` bytes."""
    while True:
        parts = split_bucket(bucket, piece.size, instance_sizes)
        try:
            datas = [(await fetcher.fetch(index if len(parts) == 1 else None, part, on_retry)).data
                     for part in parts]
        except OrthancError as exc:
            if not is_link_failure(exc) or not piece.shrink(max(p.total_size for p in parts)):
                raise
            continue
        for _ in parts:
            piece.succeeded()
        return datas[0] if len(datas) == 1 else b"".join(bytes(d) for d in datas)


def groups_of(sizes: Sequence[int], limit: int) -> List[List[int]]:
    """Indexes of consecutive items grouped so that each group's total stays
    within ``limit`` (an item larger than the limit is a group of its own)."""
    out: List[List[int]] = []
    total = 0
    for n, size in enumerate(sizes):
        if out and total + size <= limit:
            out[-1].append(n)
            total += size
        else:
            out.append([n])
            total = size
    return out
