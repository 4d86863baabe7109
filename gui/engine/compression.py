"""gzip for buckets: off the event loop, bounded when inflating, and the
``auto`` policy that decides whether compressing pays.

zlib releases the GIL while it works, so compressing in a few threads runs
truly in parallel with the event loop and with each other. A private pool
keeps compression from starving ``asyncio.to_thread`` users (file I/O).

The ``auto`` policy (see docs/transports.md, "Compression"):

- push: the protocol fixes compression per transaction, so the decision is
  taken *before* creating it, from a local sample (ratio and compression
  throughput) and an estimate of the link throughput (:func:`decide_push`);
- pull: compression is chosen per GET, so :class:`PullCompressionPolicy`
  measures the raw throughput of buckets fetched with and without gzip and
  keeps choosing the faster one, probing the other from time to time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from gui.protocol import wire

# Level 1 is several times faster than the default 6 and loses only a few
# percent of ratio on CT-like data: on a transfer, speed matters more.
GZIP_LEVEL = 1
# Below this ratio compression is not worth its CPU (JPEG, JPEG 2000, MPEG...).
MIN_USEFUL_RATIO = 1.1
# How much of the first bucket(s) the auto policy compresses to measure.
SAMPLE_BYTES = 4 * 1024 * 1024
# A push's first sample: enough for the ratio and the codec choice, quick
# enough not to hold the transaction's creation (the first bucket is then
# compressed in full while the creation request travels).
QUICK_SAMPLE_BYTES = 1024 * 1024
# The slower pull choice is re-probed at most this many times less often.
MAX_PROBE_SPACING = 8
# A choice's first GETs: their median starts its smoothed rate, and from a
# distant source (gzip first) uncompressed GETs are measured this many
# times, one after the other, before they may replace gzip. One sent while
# the link idled looked four times faster than it runs once the link is
# full, and a CT retrieve then went uncompressed for a fifth of its slices.
TRUST_SAMPLES = 3
# Raw bytes/s of one uncompressed GET above which gzip is not even tried:
# a source compresses one answer in one thread, at a few tens of MB/s.
GZIP_NEVER_FASTER = 32e6

_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="gzip")


class DecompressionError(ValueError):
    """A gzip body is truncated, corrupt, or inflates to more than expected."""


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """One gzip member holding ``data`` (what the protocol's ``gzip`` means)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def gunzip_bounded(data: "bytes | bytearray", expected: int) -> bytes:
    """Inflate one gzip member that must hold exactly ``expected`` bytes.

    Never produces more than ``expected + 1`` bytes, whatever the input (a
    small "gzip bomb" cannot make us allocate gigabytes).
    """
    inflater = zlib.decompressobj(31)
    try:
        out = inflater.decompress(data, expected + 1)
    except zlib.error as exc:
        raise DecompressionError(f"corrupt gzip data: {exc}") from None
    if len(out) > expected:
        raise DecompressionError(f"gzip data inflates to more than the expected {expected} bytes")
    if not inflater.eof:
        raise DecompressionError(f"truncated gzip data ({len(out)} of {expected} bytes inflated)")
    if inflater.unused_data:
        raise DecompressionError("unexpected bytes after the gzip stream")
    if len(out) != expected:
        raise DecompressionError(f"gzip data inflates to {len(out)} bytes, expected {expected}")
    return out


# What a bucket body may be in: the protocol's two, then this project's codecs.
BODY_COMPRESSIONS = wire.COMPRESSIONS + wire.CODECS
# A codec is asked for only when the sample shrank at least this much more with it.
CODEC_MIN_GAIN = 1.02


def parse_body_compression(value: object) -> str:
    if isinstance(value, str) and value in wire.CODECS:
        return value
    return wire.parse_compression(value)


def encode(data: bytes, compression: str, level: int = GZIP_LEVEL) -> bytes:
    """A bucket's body in ``compression`` ("gzip" or a codec of wire.CODECS)."""
    if compression == wire.CODEC_SPLIT16:
        return gzip_bytes(wire.split16(data), level)
    if compression == wire.CODEC_SPLIT16_RLE:
        return wire.encode_split16_rle(data, level)
    return gzip_bytes(data, level)


def decode_bounded(data: bytes, expected: int, compression: str) -> "bytes | bytearray":
    if compression == wire.CODEC_SPLIT16_RLE:
        try:
            return wire.decode_split16_rle(data, expected)
        except wire.CodecError as exc:
            raise DecompressionError(str(exc)) from None
    out = gunzip_bounded(data, expected)
    if compression == wire.CODEC_SPLIT16:
        return wire.join16(out)
    return out


async def compress(data: bytes, level: int = GZIP_LEVEL, compression: str = "gzip") -> bytes:
    return await asyncio.get_running_loop().run_in_executor(_POOL, encode, data, compression, level)


async def decompress(data: bytes, expected: int, compression: str = "gzip") -> "bytes | bytearray":
    return await asyncio.get_running_loop().run_in_executor(_POOL, decode_bounded, data, expected, compression)


@dataclass
class Sample:
    """What compressing a sample told us."""

    raw: int
    compressed: int
    seconds: float
    split16_compressed: int = 0  # the same sample in wire.CODEC_SPLIT16 (0: not measured)
    split16_seconds: float = 0.0  # and how long that took (split included)
    # The other codecs of wire.CODECS: name -> (compressed bytes, seconds).
    others: Dict[str, Tuple[int, float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.raw / self.compressed if self.compressed else 1.0

    def encoded(self, codec: str) -> Tuple[int, float]:
        """(compressed bytes, seconds) of the sample in ``codec``; (0, 0) if not measured."""
        if codec == "gzip":
            return self.compressed, self.seconds
        if codec == wire.CODEC_SPLIT16:
            return self.split16_compressed, self.split16_seconds
        return self.others.get(codec, (0, 0.0))

    def codec_ratio(self, codec: str) -> float:
        size = self.encoded(codec)[0]
        return self.raw / size if size else 0.0

    @property
    def codecs(self) -> Tuple[str, ...]:
        """The codecs that shrank this data clearly more than gzip, smallest first.

        Each runs at least at gzip's speed at both ends (measured on CT, tiny
        and multi-frame data), so a better ratio never makes it slower end
        to end."""
        paying = [c for c in wire.CODECS
                  if self.encoded(c)[0] and self.compressed >= self.encoded(c)[0] * CODEC_MIN_GAIN]
        return tuple(sorted(paying, key=lambda c: self.encoded(c)[0]))

    @property
    def codec(self) -> Optional[str]:
        """The codec to ask for instead of gzip, if any: the one that shrank the data most."""
        codecs = self.codecs
        return codecs[0] if codecs else None

    @property
    def rate(self) -> float:
        """Compression throughput of one thread, raw bytes per second."""
        return self.raw / self.seconds if self.seconds > 0 else float("inf")

    def merged(self, other: "Sample") -> "Sample":
        """Both samples as one (the data seen so far, weighted by size)."""
        others = {c: (self.others.get(c, (0, 0.0))[0] + other.others.get(c, (0, 0.0))[0],
                      self.others.get(c, (0, 0.0))[1] + other.others.get(c, (0, 0.0))[1])
                  for c in set(self.others) & set(other.others)}
        return Sample(self.raw + other.raw, self.compressed + other.compressed, self.seconds + other.seconds,
                      self.split16_compressed + other.split16_compressed,
                      self.split16_seconds + other.split16_seconds, others)


async def measure(data: bytes, level: int = GZIP_LEVEL, limit: int = SAMPLE_BYTES) -> Sample:
    """Compress (up to ``limit`` bytes of) ``data`` off the loop and time it,
    with gzip and with each codec at once (threads: the sample costs about
    the time of one compression, not one per encoding)."""
    piece = data[:limit]

    def timed(compression: str) -> "tuple[int, float]":
        start = time.perf_counter()
        body = encode(piece, compression, level)
        return len(body), time.perf_counter() - start

    loop = asyncio.get_running_loop()
    encodings = ("gzip",) + wire.CODECS
    results = await asyncio.gather(*(loop.run_in_executor(_POOL, timed, c) for c in encodings))
    by = dict(zip(encodings, results))
    others = {c: by[c] for c in wire.CODECS if c != wire.CODEC_SPLIT16}
    return Sample(len(piece), by["gzip"][0], by["gzip"][1], by[wire.CODEC_SPLIT16][0],
                  by[wire.CODEC_SPLIT16][1], others)


@dataclass
class Decision:
    compression: str      # "gzip" | "none"
    reason: str           # one line for logs and the docs' "why"


def decide_push(sample: Optional[Sample], link_rate: Optional[float], workers: int) -> Decision:
    """Choose the compression of a push transaction.

    Workers compress and send in a pipeline, so with gzip a raw byte costs
    ``max(1 / (C * w), 1 / (r * L))`` seconds and without ``1 / L`` (C: one
    thread's compression rate, w: threads that can compress at once, r: the
    ratio, L: the link's raw rate). gzip pays when r is useful and
    ``C * w > L``.
    """
    if sample is None or sample.raw == 0:
        return Decision("none", "nothing to sample")
    if sample.ratio < MIN_USEFUL_RATIO:
        return Decision("none", f"data does not shrink (ratio {sample.ratio:.2f})")
    parallel = max(1, min(workers, os.cpu_count() or 1))
    compress_rate = sample.rate * parallel
    if link_rate is None:
        return Decision("gzip", f"ratio {sample.ratio:.2f}, link speed unknown")
    if compress_rate <= link_rate:
        return Decision("none", f"link ({_mb(link_rate)}) faster than gzip ({_mb(compress_rate)})")
    if link_rate >= GZIP_NEVER_FASTER:
        # One PUT this fast is bound by the receiver (writing, hashing), not
        # by the wire: gzip would add its inflating to the receiver's work
        # (docs/benchmark.md: a LAN push of large instances that went gzip).
        return Decision("none", f"link ({_mb(link_rate)}) too fast for gzip to pay on the receiver")
    return Decision("gzip", f"ratio {sample.ratio:.2f}, gzip ({_mb(compress_rate)}) "
                            f"faster than the link ({_mb(link_rate)})")


def _mb(rate: float) -> str:
    return f"{rate / 1e6:.1f} MB/s"


class PullCompressionPolicy:
    """Per-bucket choice for pull mode, where every GET may differ.

    Keeps a smoothed raw throughput (raw bytes per second of one GET) for
    each choice. GETs go uncompressed until one has been measured (with
    ``start_with_gzip``, for a distant source, compressed); then a single
    GET tries the other choice, except gzip when uncompressed GETs already
    run faster than ``GZIP_NEVER_FASTER`` (no source compresses that fast:
    on a LAN a gzip probe only costs a whole bucket compressed by the
    source). Afterwards the faster one is used and the other is re-tried from time to
    time so a change of conditions (a busier source, a congested link) is
    noticed: every ``probe_every`` buckets, less often the more it lost
    (a probe of the slower choice costs a bucket at its speed). gzip is
    dropped for good once the data proves not to shrink. From a distant
    source, uncompressed GETs are first tried once the GETs sent before the
    first answer have finished, and must be measured ``TRUST_SAMPLES`` times
    before they can replace gzip.
    """

    def __init__(self, mode: str = "auto", probe_every: int = 8, start_with_gzip: bool = False) -> None:
        if mode not in ("auto", "gzip", "none"):
            raise ValueError(f"unknown compression mode {mode!r}")
        self.mode = mode
        self._first = "gzip" if start_with_gzip else "none"
        self.probe_every = probe_every
        self._rate = {"gzip": None, "none": None}  # type: dict[str, Optional[float]]
        self._raw = 0
        self._wire = 0
        self._count = 0
        self._probing = {"gzip": False, "none": False}
        self._early: Dict[str, List[float]] = {"gzip": [], "none": []}
        self._completed = 0
        self._burst = 0     # GETs chosen before the first one finished

    @property
    def ratio(self) -> Optional[float]:
        return self._raw / self._wire if self._wire else None

    def choose(self) -> str:
        if self.mode != "auto":
            return self.mode
        self._count += 1
        ratio = self.ratio
        if ratio is not None and ratio < MIN_USEFUL_RATIO:
            return "none"
        first = self._first
        second = "none" if first == "gzip" else "gzip"
        first_rate = self._rate[first]
        if first_rate is None:
            return first
        if first == "none" and first_rate >= GZIP_NEVER_FASTER:
            return "none"
        if first == "gzip" and self._completed < 2 * self._burst:
            # The first GETs all compress at once on the source, the link idle
            # meanwhile: an uncompressed GET then would look far faster than
            # it runs once the link is full. Probe once they have cleared.
            return first
        if self._rate[second] is None or (first == "gzip" and len(self._early[second]) < TRUST_SAMPLES):
            if self._probing[second]:
                return first
            self._probing[second] = True
            return second
        rates: Dict[str, float] = self._rate  # type: ignore[assignment]
        # From a distant source an uncompressed GET takes ``ratio`` times the
        # link of a gzip one, which a GET's own rate does not show while
        # others share the link: it must be faster by that much to replace
        # gzip (else noise between GETs flips the choice back and forth).
        margin = max(1.0, ratio or 1.0) if first == "gzip" else 1.0
        worth = {"gzip": rates["gzip"] * margin, "none": rates["none"]}
        best = "gzip" if worth["gzip"] >= worth["none"] else "none"
        other = "none" if best == "gzip" else "gzip"
        # A choice twice slower is probed four times less often (up to
        # MAX_PROBE_SPACING x): a probe costs its bucket's time at the
        # slower speed, so the share of time lost stays small.
        slower_by = max(1.0, worth[best] / max(worth[other], 1e-9))
        every = int(self.probe_every * min(MAX_PROBE_SPACING, slower_by * slower_by))
        if self._count % every == 0:
            return other
        return best

    def observe(self, compression: str, raw: int, wire: Optional[int], seconds: float) -> None:
        """Record one finished GET (``raw`` bytes after inflating, ``wire`` on the
        wire; None when unknown, e.g. inflated while streaming: rate only)."""
        if raw <= 0 or seconds <= 0:
            return
        if compression == "gzip" and wire is not None:
            self._raw += raw
            self._wire += wire
        self._probing[compression] = False
        if not self._completed:
            self._burst = self._count
        self._completed += 1
        rate = raw / seconds
        early = self._early[compression]
        if len(early) < TRUST_SAMPLES:
            # The first GETs' median: one outlier does not decide the start.
            early.append(rate)
            self._rate[compression] = statistics.median(early)
            return
        old = self._rate[compression]
        # Exponential smoothing: recent buckets count more, one outlier less.
        self._rate[compression] = rate if old is None else 0.7 * old + 0.3 * rate
