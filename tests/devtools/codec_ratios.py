"""``python -m tests.devtools.codec_ratios``: the bucket codecs on the benchmark's CT.

Plans the benchmark's CT series (300 slices) into buckets as the engine does
(4 MB), encodes every bucket alone with each candidate and prints its ratio,
wire MB and speed on one core (process time). ``--fresh`` also compares the
candidates on slices of fresh noise drawn from the generator's noise law,
without its repeated rows (see docs/benchmark.md, "A stronger codec between
our own ends").
"""

from __future__ import annotations

import argparse
import array
import bz2
import hashlib
import random
import statistics
import time
import zlib
from typing import Callable, Dict, List

from gui.engine import compression as gz
from gui.protocol import wire
from gui.sandbox import synthetic_studies as synth


def _deflate(data: bytes, strategy: int) -> bytes:
    deflater = zlib.compressobj(1, zlib.DEFLATED, 15, 8, strategy)
    return deflater.compress(data) + deflater.flush()


CANDIDATES: Dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: gz.encode(b, "gzip"),
    wire.CODEC_SPLIT16: lambda b: gz.encode(b, wire.CODEC_SPLIT16),
    wire.CODEC_SPLIT16_RLE: lambda b: gz.encode(b, wire.CODEC_SPLIT16_RLE),
    "split16, bz2-9 low, rle high": lambda b: bz2.compress(b[0::2], 9) + _deflate(b[1::2], zlib.Z_RLE),
}


def ct_buckets(slices: int, bucket_size: int) -> List[bytes]:
    spec = synth.make_study_spec(7001, "BENCH CT")
    files = list(synth.ct_series(spec, slices, seed=7001))
    infos = [wire.InstanceInfo("%08x-00000000-00000000-00000000-%08d" % (n, n), len(f), hashlib.md5(f).hexdigest())
             for n, f in enumerate(files)]
    by_id = {i.id: f for i, f in zip(infos, files)}
    return [b"".join(by_id[c.instance_id][c.offset:c.offset + c.size] for c in bucket.chunks)
            for bucket in wire.plan_buckets(infos, bucket_size)]


def fresh_slices(count: int, rows: int = 512, cols: int = 512) -> bytes:
    """The generator's anatomy and noise law, with fresh noise in every row."""
    normal = statistics.NormalDist()
    quantiles = [normal.inv_cdf((b + 0.5) / 256) for b in range(256)]
    body = [int(round(q * 22.0)) for q in quantiles]
    air = [int(round(q * 4.0)) for q in quantiles]
    rnd = random.Random(1)
    out = []
    for n in range(count):
        z = n / count * 3.0
        for r in range(rows):
            base = synth._base_row(-1.0 + r * (2.0 / (rows - 1)), z, cols)
            noisy = [min(4095, max(0, v + (body[b] if v > 100 else air[b]))) for v, b in zip(base, rnd.randbytes(cols))]
            out.append(array.array("H", noisy).tobytes())
    return b"".join(out)


def report(name: str, buckets: List[bytes]) -> None:
    raw = sum(map(len, buckets))
    print(f"{name}: {len(buckets)} buckets, {raw / 1e6:.1f} MB")
    for label, encode in CANDIDATES.items():
        start = time.process_time()
        size = sum(len(encode(b)) for b in buckets)
        seconds = time.process_time() - start
        print(f"  {label:30s} {raw / size:5.3f}:1  {size / 1e6:6.1f} MB  {raw / seconds / 1e6:6.1f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--bucket-kb", type=int, default=4096)
    parser.add_argument("--fresh", action="store_true", help="also 8 slices of fresh noise against 8 generated ones")
    args = parser.parse_args()
    report("benchmark CT", ct_buckets(args.slices, args.bucket_kb * 1024))
    if args.fresh:
        report("fresh noise, 8 slices", [fresh_slices(8)])
        one_level = b"".join(synth._phantom_slice(512, 512, n / 300, random.Random(n)) for n in range(0, 48, 6))
        report("generator, 8 slices of one position", [one_level])


if __name__ == "__main__":
    main()
