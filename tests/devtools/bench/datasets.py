"""The benchmark's datasets, generated with the synthetic study generator.

Each dataset is moved by one job (a study, or the scale dataset's patient),
except ``queue``: ten studies moved by ten jobs submitted at once. Files are
produced lazily so the 200 MB multi-frame instances are never all in memory
at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

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
    scale_studies: int = 5        # the scale dataset's patient has this many studies (of the series)
    queue_jobs: int = 10          # the queued dataset: this many studies, one job each
    queue_count: int = 200        # tiny instances in each of them


FULL = DatasetSize()
QUICK = DatasetSize(ct_slices=20, tiny_count=100, large_count=2, large_mb=16.0, scale_count=400,
                    queue_count=10)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: Callable[[], Iterator[bytes]]
    count: int
    level: str = "Study"          # what one job moves: the study, or (scale) the patient
    jobs: int = 1                 # queue: one job per study, submitted at once
    # Links it is not run on, and why (the runner says so in the table).
    only_links: Optional[Tuple[str, ...]] = None
    skip_reason: str = ""


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
    """One patient of many small instances: several studies of several series
    (issue 17: "several studies of a patient"); the job moves the patient."""
    spec = synth.make_study_spec(7004, "BENCH SCALE")
    studies = max(1, min(size.scale_studies, size.scale_series))
    per_series = -(-size.scale_count // size.scale_series)

    def files() -> Iterator[bytes]:
        left = size.scale_count
        for series in range(size.scale_series):
            count = min(per_series, left)
            left -= count
            # Series spread over the studies round-robin: same patient, other study UIDs.
            study = series % studies
            study_spec = spec if study == 0 else dataclasses.replace(
                synth.make_study_spec(7004 + 100 * study, f"BENCH SCALE {study + 1}"),
                patient_id=spec.patient_id, patient_name=spec.patient_name)
            yield from synth.tiny_instances(study_spec, count, size=size.tiny_bytes,
                                            series_number=100 + series, seed=7004 + series)
    return Dataset("scale", f"one patient of {size.scale_count} small instances of about "
                   f"{size.tiny_bytes // 1024} KB in {studies} studies of {size.scale_series} series in all",
                   files, size.scale_count, level="Patient", only_links=("lan",),
                   skip_reason=f"{size.scale_count} instances: LAN only, the peer store's one round trip "
                               "per instance would take about half an hour at 40 ms (run it with --links lan)")


def _queue(size: DatasetSize) -> Dataset:
    """Ten studies of tiny instances, ten jobs submitted to one engine at once."""
    def files() -> Iterator[bytes]:
        for n in range(size.queue_jobs):
            spec = synth.make_study_spec(7100 + n, f"BENCH QUEUE {n + 1}")
            yield from synth.tiny_instances(spec, size.queue_count, size=size.tiny_bytes, seed=7100 + n)
    return Dataset("queue", f"{size.queue_jobs} studies of {size.queue_count} tiny instances, "
                   f"one job each, submitted at once", files, size.queue_jobs * size.queue_count,
                   jobs=size.queue_jobs)


# "scale" and "queue" are only run when asked for (--datasets scale,queue): the scale
# dataset is about 6 minutes of peer store on the LAN alone.
BUILDERS: Dict[str, Callable[[DatasetSize], Dataset]] = {"ct": _ct, "tiny": _tiny, "large": _large,
                                                           "scale": _scale, "queue": _queue}


def dataset(name: str, size: DatasetSize) -> Dataset:
    try:
        return BUILDERS[name](size)
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(BUILDERS)}") from None
