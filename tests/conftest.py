"""Test bed: real Orthanc servers on free loopback ports, synthetic studies.

Every test runs with its own config and data directories and without the
OS keyring, so nothing touches the developer's own settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["ORTHANC_TRANSFERS_KEYRING"] = "0"

from gui.sandbox.orthanc_process import OrthancProcess  # noqa: E402
from gui.sandbox import synthetic_studies as synth  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORTHANC_TRANSFERS_CONFIG", str(tmp_path / "config" / "config.json"))
    monkeypatch.setenv("ORTHANC_TRANSFERS_DATA", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def orthanc_factory() -> Iterator[Callable[..., OrthancProcess]]:
    """Start any number of Orthanc servers; all are stopped at the end of the test."""
    started: List[OrthancProcess] = []

    def start(name: str = "orthanc", **kwargs) -> OrthancProcess:
        server = OrthancProcess(name=name, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def stock_pair(orthanc_factory):
    """Two stock Orthanc servers (no accelerator): (source, target)."""
    return orthanc_factory("source"), orthanc_factory("target")


@pytest.fixture(scope="session")
def ct_study_files() -> List[bytes]:
    """One small CT-like study: 6 slices of 512x512x16 bit."""
    spec = synth.make_study_spec(7, "CT CHEST")
    return list(synth.ct_series(spec, 6, seed=7))


@pytest.fixture(scope="session")
def mixed_study_files() -> List[bytes]:
    """One study with CT slices, tiny instances and one 6 MB multi-frame instance."""
    spec = synth.make_study_spec(8, "CT MIXED")
    files = list(synth.ct_series(spec, 4, seed=8))
    files += list(synth.tiny_instances(spec, 12, size=4096, seed=8))
    files.append(synth.multiframe_instance(spec, 6, seed=8))
    return files


def upload_all(server: OrthancProcess, files: List[bytes]) -> List[str]:
    """Upload files; return the Orthanc IDs of the instances."""
    return [server.upload(f)["ID"] for f in files]


def study_id_of(server: OrthancProcess, files: List[bytes]) -> str:
    answer = server.upload(files[0])
    return answer["ParentStudy"]
