"""Fixtures for the server-plugin tests: Orthanc servers running the Python plugin."""

from __future__ import annotations

from typing import Iterator, List

import pytest

from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess
from tests.server.push_helpers import PluginHttp


@pytest.fixture(scope="module")
def plugin_server() -> Iterator[OrthancProcess]:
    """One plugin-equipped Orthanc shared by a test module (starting one per
    test would cost more than the tests). Tests that need a pristine or
    specially configured server use ``orthanc_factory`` instead."""
    server = OrthancProcess(name="plugin", with_accelerator=True).start()
    yield server
    server.stop()


@pytest.fixture
def http(plugin_server) -> Iterator[PluginHttp]:
    client = PluginHttp(plugin_server)
    yield client
    client.close()


def study(seed: int, tiny: int = 0, ct: int = 0, ct_size: int = 128) -> List[bytes]:
    """A small study: ``ct`` CT slices of ct_size² pixels and ``tiny`` 4 KB instances."""
    spec = synth.make_study_spec(seed, "CT TEST %d" % seed)
    files = list(synth.ct_series(spec, ct, seed=seed, rows=ct_size, cols=ct_size)) if ct else []
    if tiny:
        files += list(synth.tiny_instances(spec, tiny, size=4096, seed=seed))
    return files
