"""Which encoding to ask for, GET by GET, when fetching chunks from a source
that speaks the protocol: none, gzip, or a codec the source honours.

In ``auto``, per link and per data:

- **a near source** (round trip under 10 ms, link_probe): every GET goes
  uncompressed, and nothing is sampled. On a LAN the CPU of both ends,
  not the wire, bounds a GET: measured on the shared benchmark machine, a
  prediction from slow uncompressed GETs chose gzip there, and the CPU it
  took made the GETs slower still (the earlier policy's gzip probes cost
  the same way). A slow LAN is the case for ``--compression gzip``;
- **a distant source**: the data is sampled before any compressed GET (a
  small uncompressed GET of the first bucket's start), locally, with each
  candidate (gzip, and this project's codecs where the source may honour them):
  ratio and compression speed. Data that does not shrink (JPEG, JPEG 2000,
  MPEG transfer syntaxes, encrypted data) is fetched uncompressed, so it is
  never compressed at all. Every ``RESAMPLE_EVERY`` buckets a fetched
  bucket adds to the sample, so a study that mixes kinds is judged as a
  whole. GETs then go in the candidate that shrinks most (the codec only
  where it shrinks clearly more than gzip, at the same speed: never slower
  than gzip). No GET is made uncompressed just to try the link: every GET
  of 1 MB or more measures it (its bytes on the wire over the time the wire
  took: the round trip and the source's compression taken out), each
  candidate's time for a bucket is predicted (``S / L`` uncompressed,
  ``S / C + S / (r * L)`` compressed: the source compresses a whole answer,
  then sends it; C: the sampled speed, shared by the GETs compressed at
  once; r: the ratio), and the GETs go uncompressed only when that is
  predicted ``NONE_MARGIN`` times faster (a fast link with a long round
  trip), or after an uncompressed GET of ``GZIP_NEVER_FASTER`` or more.

``gzip`` forced: the codec where the data favours it, else gzip;
``none``: none.

The codec is asked for only where the source may honour it (this
project's plugin: flavour ``python``), and used only when the answer's
Content-Type says so (transfers_api.chunks); any other answer is gzip.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence, Tuple

from gui.engine import compression as gz
from gui.protocol import wire

log = logging.getLogger(__name__)

# A distant source's GETs go uncompressed only when that is predicted this
# much faster: the compression speed is this computer's, measured while it
# also does the transfer's other work, so it may understate the source's.
NONE_MARGIN = 2.0
# The first sample: a GET of this much of the first bucket, uncompressed.
FIRST_SAMPLE_BYTES = 128 * 1024
# Later samples: up to this much of a fetched bucket, every RESAMPLE_EVERY
# buckets (small: a sample's CPU is taken from the transfer, e.g. from the
# delivery's first PUT, which measures the target's link at that moment).
SAMPLE_BYTES = 256 * 1024
RESAMPLE_EVERY = 16
# Smoothing of the link estimate: recent GETs count more, one outlier less.
SMOOTHING = 0.3
# A GET measures the link only if it carried at least this much: a smaller
# one measures the round trip and the source's work per request (as push's
# PROBE_MIN_BYTES).
LINK_MIN_BYTES = 1024 * 1024


class ChunkCodecPolicy:
    def __init__(self, mode: str = "auto", *, distant: bool = False, round_trip: float = 0.0,
                 codecs: Sequence[str] = (), threads: int = 4, cores: Optional[int] = None) -> None:
        if mode not in ("auto", "gzip", "none"):
            raise ValueError(f"unknown compression mode {mode!r}")
        self.mode = mode
        self.distant = distant
        self.round_trip = max(0.0, round_trip)
        self.codecs = tuple(c for c in codecs if c in wire.CODECS)
        # Share of one core a request's compression gets on the source
        # while ``threads`` requests are compressed at once.
        cores = cores or os.cpu_count() or 1
        self.share = min(1.0, cores / max(1, threads))
        self.sample: Optional[gz.Sample] = None
        self.link: Optional[float] = None      # wire bytes/s of one GET
        self.fastest_plain = 0.0               # raw bytes/s of the fastest uncompressed GET
        self.fetched = 0                       # GETs measured (for re-sampling)
        self.answers: Dict[str, int] = {}      # GETs by the encoding of their answer
        self.raw_compressed = 0
        self.wire_compressed = 0
        self.reason = "nothing measured yet"
        self._last: Optional[str] = None
        self._rates: Dict[str, float] = {}     # one thread's compression speed, raw bytes/s

    # --- what was measured -------------------------------------------------------

    @property
    def ratio(self) -> Optional[float]:
        """Raw over wire bytes of the compressed answers; None if there was none."""
        return self.raw_compressed / self.wire_compressed if self.wire_compressed else None

    def wants_sample(self) -> bool:
        """Whether the next fetched bucket's bytes should be sampled."""
        if self.mode == "none":
            return False
        if self.mode == "auto" and (not self.distant or self.fastest_plain >= gz.GZIP_NEVER_FASTER):
            return False   # nothing will be compressed: no CPU spent on samples
        return self.sample is None or self.fetched % RESAMPLE_EVERY == 0

    def add_sample(self, sample: gz.Sample) -> None:
        if sample.raw <= 0:
            return
        self.sample = sample if self.sample is None else self.sample.merged(sample)
        # Speeds: the fastest sample, not the sum: a sample slowed down by
        # this computer's other work (decompressing the other GETs) says
        # little of the source's speed.
        for encoding in ("gzip",) + wire.CODECS:
            seconds = sample.encoded(encoding)[1]
            if seconds > 0:
                self._rates[encoding] = max(self._rates.get(encoding, 0.0), sample.raw / seconds)

    def observe(self, used: str, raw: int, wire_bytes: int, seconds: float) -> None:
        """One GET done: ``raw`` bytes once decoded, ``wire_bytes`` in the
        answer, ``seconds`` from the request to the answer's last byte."""
        self.fetched += 1
        self.answers[used] = self.answers.get(used, 0) + 1
        if used != "none":
            self.raw_compressed += raw
            self.wire_compressed += wire_bytes
        if raw < LINK_MIN_BYTES or seconds <= 0:
            return
        on_wire = seconds - self.round_trip
        if used == "none":
            self.fastest_plain = max(self.fastest_plain, raw / seconds)
        else:
            speed = self._speed(used)
            if speed:
                on_wire -= raw / speed
        # The wire took at least a tenth of the request's time: a source much
        # faster at compressing than assumed must not make the link look
        # infinitely fast.
        on_wire = max(on_wire, 0.1 * seconds)
        rate = wire_bytes / on_wire
        self.link = rate if self.link is None else (1 - SMOOTHING) * self.link + SMOOTHING * rate

    # --- the choice ----------------------------------------------------------------

    def _speed(self, encoding: str) -> Optional[float]:
        """Raw bytes/s at which the source compresses one answer in ``encoding``."""
        rate = self._rates.get(encoding)
        return rate * self.share if rate else None

    def _candidates(self) -> Tuple[Tuple[str, float], ...]:
        """(encoding, ratio) of every compressed candidate the data allows."""
        sample = self.sample
        if sample is None:
            return (("gzip", 0.0),)
        out = [("gzip", sample.ratio)]
        out += [(codec, sample.codec_ratio(codec)) for codec in sample.codecs if codec in self.codecs]
        return tuple(out)

    def choose(self) -> str:
        choice, reason = self._choose()
        if choice != self._last or reason != self.reason:
            log.debug("chunk GETs: %s (%s)", choice, reason)
        self._last, self.reason = choice, reason
        return choice

    def _choose(self) -> Tuple[str, str]:
        if self.mode == "none":
            return "none", "chosen by the user"
        sample = self.sample
        candidates = self._candidates()
        if self.mode == "gzip":
            # gzip forced: the codec where the data favours it (as fast, smaller).
            best = max(candidates, key=lambda c: c[1])[0]
            return best, "gzip chosen by the user"
        if sample is not None and sample.ratio < gz.MIN_USEFUL_RATIO:
            return "none", f"data does not shrink (ratio {sample.ratio:.2f})"
        if not self.distant:
            # On a LAN a GET's time is the CPU of both ends (measured: under
            # load, slow uncompressed GETs made a prediction choose gzip,
            # and the CPU it took made the GETs slower still).
            return "none", "near source: the link is not what limits the transfer"
        if self.fastest_plain >= gz.GZIP_NEVER_FASTER:
            return "none", (f"uncompressed GETs reach {self.fastest_plain / 1e6:.0f} MB/s: "
                            "no source compresses that fast")
        link = self.link
        if link is None or sample is None:
            best = max(candidates, key=lambda c: c[1])[0]
            return best, "distant source, link not measured yet"
        # Predicted seconds per raw byte of each candidate on this link.
        times = {"none": 1.0 / link}
        for encoding, ratio in candidates:
            speed = self._speed(encoding)
            if speed and ratio > 0:
                times[encoding] = 1.0 / speed + 1.0 / (ratio * link)
        compressed = min((e for e in times if e != "none"), key=lambda e: times[e], default=None)
        if compressed is None or times["none"] * NONE_MARGIN < times[compressed]:
            return "none", (f"link {link / 1e6:.1f} MB/s per GET: compressing would not pay"
                            + (f" ({compressed} {1 / times[compressed] / 1e6:.1f} MB/s raw)" if compressed else ""))
        return compressed, (f"link {link / 1e6:.1f} MB/s per GET: {compressed} "
                            f"{1 / times[compressed] / 1e6:.1f} MB/s raw, none {link / 1e6:.1f}")

