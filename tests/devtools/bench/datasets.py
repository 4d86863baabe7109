"""The benchmark's datasets, generated with the synthetic study generator.

Each dataset is one study. Files are produced lazily so the 200 MB
multi-frame instances are never all in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator

from gui.sandbox import synthetic_studies as synth


@dataclass(frozen=True)
class DatasetSize:
    """How big each dataset is; ``full`` follows the issue, ``quick`` is for a first look."""

    ct_slices: int = 300
    tiny_count: int = 2000
    tiny_bytes: int = 8 * 1024
    large_count: int = 2
    large_mb: float = 200.0
    scale_series: int = 20
    scale_count: int = 20000      # instances in all, spread over scale_series series


FULL = DatasetSize()
QUICK = DatasetSize(ct_slices=20, tiny_count=100, large_count=2, large_mb=16.0, scale_count=400)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: Callable[[], Iterator[bytes]]
    count: int


def _ct(size: DatasetSize) -> Dataset:
    spec = synth.make_study_spec(7001, "BENCH CT")
    return Dataset("ct", f"CT study, {size.ct_slices} slices of 512x512x16 bit",
                   lambda: synth.ct_series(spec, size.ct_slices, seed=7001), size.ct_slices)


def _tiny(size: DatasetSize) -> Dataset:
    spec = synth.make_study_spec(7002, "BENCH TINY")
    return Dataset("tiny", f"{size.tiny_count} tiny instances of about {size.tiny_bytes // 1024} KB",
                   lambda: synth.tiny_instances(spec, size.tiny_count, size=size.tiny_bytes, seed=7002),
                   size.tiny_count)


def _large(size: DatasetSize) -> Dataset:
    spec = synth.make_study_spec(7003, "BENCH LARGE")

    def files() -> Iterator[bytes]:
        for i in range(size.large_count):
            yield synth.multiframe_instance(spec, size.large_mb, index=i, seed=7003)
    return Dataset("large", f"{size.large_count} multi-frame instances of about {size.large_mb:g} MB",
                   files, size.large_count)


def _scale(size: DatasetSize) -> Dataset:
    """One patient's study of many small instances in several series (issue 16's scale case)."""
    spec = synth.make_study_spec(7004, "BENCH SCALE")
    per_series = -(-size.scale_count // size.scale_series)

    def files() -> Iterator[bytes]:
        left = size.scale_count
        for series in range(size.scale_series):
            count = min(per_series, left)
            left -= count
            yield from synth.tiny_instances(spec, count, size=size.tiny_bytes, series_number=100 + series,
                                            seed=7004 + series)
    return Dataset("scale", f"{size.scale_count} small instances of about {size.tiny_bytes // 1024} KB "
                   f"in {size.scale_series} series", files, size.scale_count)


# "scale" is only run when asked for (--datasets scale): about 20 minutes of peer store alone.
BUILDERS: Dict[str, Callable[[DatasetSize], Dataset]] = {"ct": _ct, "tiny": _tiny, "large": _large,
                                                           "scale": _scale}


def dataset(name: str, size: DatasetSize) -> Dataset:
    try:
        return BUILDERS[name](size)
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(BUILDERS)}") from None
