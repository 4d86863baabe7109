"""Fixtures of the engine tests: synthetic studies of different shapes."""

from __future__ import annotations

from typing import List

import pytest

from gui.sandbox import synthetic_studies as synth


@pytest.fixture(scope="session")
def small_study_files() -> List[bytes]:
    """Only tiny instances (~4 KB): they travel grouped, several per ZIP."""
    spec = synth.make_study_spec(21, "SMALL")
    return list(synth.tiny_instances(spec, 20, size=4096, seed=21))


@pytest.fixture(scope="session")
def large_study_files() -> List[bytes]:
    """Two large multi-frame instances (~3 MB each): split into many buckets."""
    spec = synth.make_study_spec(22, "LARGE")
    return [synth.multiframe_instance(spec, 3, index=n, seed=22) for n in range(2)]


@pytest.fixture(scope="session")
def long_study_files() -> List[bytes]:
    """A longer CT series (~10 MB): long enough to interrupt half-way."""
    spec = synth.make_study_spec(23, "CT LONG")
    return list(synth.ct_series(spec, 20, seed=23))
