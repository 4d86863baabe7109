"""Memory stays bounded whatever the instance size."""

from __future__ import annotations

import tracemalloc

import pytest

from gui.config.settings import TransferOptions
from gui.engine.push_mode import PushTransport
from gui.sandbox import synthetic_studies as synth
from tests.transports.helpers import Recorder, client_for, infos_of, make_ctx, run

MB = 1024 * 1024
SLACK = 6 * MB   # interpreter, HTTP client, JSON bodies, event list


@pytest.fixture(scope="module")
def big_instance():
    return synth.multiframe_instance(synth.make_study_spec(41, "CINE"), 40, seed=41)


@pytest.mark.parametrize("source_accelerated", [True, False])
def test_push_of_a_40_mb_instance_stays_within_bounds(orthanc_factory, big_instance, tmp_path,
                                                      source_accelerated):
    """CacheSize 4 MB, 2 threads of 1 MB buckets: the 40 MB file is read per
    chunk (plugin source) or streamed to a temporary file (stock source),
    never held whole."""
    source = orthanc_factory("src", with_accelerator=source_accelerated)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of([big_instance], source)
    options = TransferOptions(BucketSize=1024, Threads=2, CacheSize=4)
    bound = options.cache_size_bytes + options.Threads * 2 * options.bucket_size_bytes + SLACK
    recorder = Recorder()

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, options=options,
                           source_accelerated=source_accelerated)
            transport = PushTransport()
            buckets = transport.plan(ctx)
            tracemalloc.start()
            try:
                await transport.run(ctx, buckets)
                return tracemalloc.get_traced_memory()[1], len(buckets)
            finally:
                tracemalloc.stop()

    peak, count = run(go(), timeout=240)
    print(f"\npeak {peak / MB:.1f} MB for {len(big_instance) / MB:.0f} MB in {count} buckets "
          f"(bound {bound / MB:.0f} MB)")
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    assert peak < bound
    assert not list((tmp_path / "staging").glob("*.dcm")), "the temporary copy is removed"
