"""Pull's encoding of each chunk GET, chosen from the data and the link
(gui/engine/pull_mode/codec_choice.py), against real plugin servers behind
an emulated link.

Every chunk GET the engine makes is recorded with what it asked for and
what the answer was in (``TransfersApi.chunks``, wrapped)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import pytest

from gui.config.settings import TransferOptions
from gui.engine import compression as gz
from gui.engine.pull_mode import PullTransport
from gui.engine.pull_mode.codec_choice import ChunkCodecPolicy
from gui.protocol import wire
from gui.sandbox import synthetic_studies as synth
from tests.transports.helpers import Recorder, client_for, infos_of, make_ctx, run
from tests.transports.test_compression import jpeg_like_files

WAN = {"latency_ms": 10, "bandwidth_mbit": 20}


@dataclass
class Get:
    size: int
    compression: str
    codec: Optional[str]
    answer: str

    @property
    def asked(self) -> str:
        return self.codec if self.compression == "gzip" and self.codec else self.compression


@pytest.fixture(scope="module")
def ct_files() -> List[bytes]:
    return list(synth.ct_series(synth.make_study_spec(81, "CT PULL CODEC"), 12, seed=81))


@pytest.fixture
def chunk_gets(monkeypatch) -> List[Get]:
    from gui.client.transfers_api import TransfersApi
    gets: List[Get] = []
    original = TransfersApi.chunks

    async def chunks(self, bucket, compression, limit, *, codec=None):
        answer = await original(self, bucket, compression, limit, codec=codec)
        gets.append(Get(bucket.total_size, compression, codec, answer.codec))
        return answer

    monkeypatch.setattr(TransfersApi, "chunks", chunks)
    return gets


def pull_through(orthanc_factory, files, tmp_path, *, source_config=None, compression="auto",
                 bucket_kb=256, **link):
    """Pull ``files`` from a plugin source behind an emulated link (none: the
    source itself) to a plugin target; returns the transport, the bytes
    that came down the link and the buckets planned. Verified on the target."""
    from tests.devtools.netem import ThreadedWanProxy
    source = orthanc_factory("src", with_accelerator=True, extra_config=source_config or {})
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(files, source)
    transport = PullTransport()
    with ThreadedWanProxy("127.0.0.1", source.http_port, **link) as proxy:
        reached = type(source)(name=source.name, http_port=proxy.port if link else source.http_port)

        async def go():
            async with client_for(reached) as src, client_for(target) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression=compression,
                               options=TransferOptions(BucketSize=bucket_kb), target_accelerated=True)
                buckets = transport.plan(ctx)
                await transport.run(ctx, buckets)
                return buckets

        buckets = run(go(), timeout=240)
        down = proxy.stats.bytes_down
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    print(f"\n{link}: {transport.last_policy.answers} ({transport.last_policy.reason}); {down} bytes down")
    return transport, down, buckets


def whole_buckets(gets: List[Get], buckets) -> List[Get]:
    """The GETs of whole buckets (not the first, small sample)."""
    sizes = {b.total_size for b in buckets}
    return [g for g in gets if g.size in sizes]


def test_from_a_distant_source_every_bucket_comes_in_the_codec(orthanc_factory, ct_files, tmp_path, chunk_gets):
    """Across a WAN, 16-bit CT: the data is sampled first (one small
    uncompressed GET), then every bucket is asked for in the codec and
    comes in it; no bucket is fetched uncompressed to try the link."""
    transport, down, buckets = pull_through(orthanc_factory, ct_files, tmp_path, **WAN)
    fetched = whole_buckets(chunk_gets, buckets)
    # (A bucket may be fetched twice: delivery can start over, e.g. when the
    # push to the near target changes its own compression.)
    assert len(fetched) >= len(buckets) > 8
    assert {g.asked for g in fetched} == {wire.CODEC_SPLIT16_RLE}
    assert {g.answer for g in fetched} == {wire.CODEC_SPLIT16_RLE}
    assert chunk_gets[0].compression == "none" and chunk_gets[0].size < buckets[0].total_size
    assert down < sum(len(f) for f in ct_files) / 2.15   # about 2.2:1 (2.05 in split16-gzip), none uncompressed


def test_a_source_that_knows_only_split16_gzip_answers_in_it(orthanc_factory, ct_files, tmp_path, chunk_gets):
    """A plugin of ours from before split16-rle ("Codecs": ["split16-gzip"]
    behaves as one) gets the same GETs, which also name split16-gzip: it
    answers in that, the engine decodes it, and the study arrives intact."""
    transport, down, buckets = pull_through(orthanc_factory, ct_files, tmp_path,
                                            source_config={"Transfers": {"Codecs": [wire.CODEC_SPLIT16]}}, **WAN)
    fetched = whole_buckets(chunk_gets, buckets)
    assert {g.asked for g in fetched} == {wire.CODEC_SPLIT16_RLE}
    assert {g.answer for g in fetched} == {wire.CODEC_SPLIT16}
    assert down < sum(len(f) for f in ct_files) / 1.95


def test_a_source_that_does_not_announce_the_codec_gets_gzip(orthanc_factory, ct_files, tmp_path, chunk_gets):
    """The same pull from a source that does not honour the codec (our
    plugin with "Codecs": [], as the C++ plugin): every answer is gzip,
    never the codec, and the study arrives intact."""
    transport, _down, buckets = pull_through(orthanc_factory, ct_files, tmp_path,
                                             source_config={"Transfers": {"Codecs": []}}, **WAN)
    fetched = whole_buckets(chunk_gets, buckets)
    assert {g.answer for g in fetched} == {"gzip"}
    assert transport.last_fetcher.codec_answers == 0


def test_a_source_running_the_cpp_plugin_is_never_asked_for_the_codec(orthanc_factory, ct_files, tmp_path,
                                                                      chunk_gets, monkeypatch):
    """A source that shows the C++ plugin in /plugins (faked here: no server
    runs it) gets plain protocol GETs: gzip or none, no codec argument."""
    from gui.client.orthanc_client import AcceleratorInfo, OrthancClient
    original = OrthancClient.accelerator

    async def accelerator(self, *, cached=False):
        info = await original(self, cached=cached)
        return AcceleratorInfo(info.available, info.plugins, "transfers")

    monkeypatch.setattr(OrthancClient, "accelerator", accelerator)
    _transport, _down, buckets = pull_through(orthanc_factory, ct_files, tmp_path, **WAN)
    assert chunk_gets and all(g.codec is None for g in chunk_gets)
    assert {g.answer for g in whole_buckets(chunk_gets, buckets)} == {"gzip"}


def test_jpeg_data_from_a_distant_source_is_never_compressed(orthanc_factory, tmp_path, chunk_gets):
    """JPEG pixel data does not shrink: even across a WAN, where the first
    GETs would otherwise be compressed, no GET asks for compression."""
    transport, _down, buckets = pull_through(orthanc_factory, jpeg_like_files(8), tmp_path, **WAN)
    assert len(whole_buckets(chunk_gets, buckets)) >= len(buckets) > 4
    assert {g.compression for g in chunk_gets} == {"none"}
    assert "does not shrink" in transport.last_policy.reason


def test_on_a_fast_link_nothing_is_compressed(orthanc_factory, ct_files, tmp_path, chunk_gets):
    """A near source (no delay, 1 Gbit/s): no GET is compressed, not even
    to try (the earlier policy tried gzip when its GETs ran under 32 MB/s)."""
    # 1 MB buckets (two slices each): large enough to measure the link.
    _transport, _down, buckets = pull_through(orthanc_factory, ct_files, tmp_path, bucket_kb=1024,
                                              bandwidth_mbit=1000)
    assert len(whole_buckets(chunk_gets, buckets)) >= len(buckets)
    assert {g.compression for g in chunk_gets} == {"none"}


# --- the choice itself, on measured figures -------------------------------------------

CT = gz.Sample(raw=1_000_000, compressed=500_000, seconds=0.02, split16_compressed=430_000,
               split16_seconds=0.02)    # 50 MB/s one thread, 2.0:1, codec 2.33:1
JPEG = gz.Sample(raw=1_000_000, compressed=1_000_300, seconds=0.01, split16_compressed=1_000_400,
                 split16_seconds=0.01)


def _policy(sample, **kwargs) -> ChunkCodecPolicy:
    policy = ChunkCodecPolicy("auto", codecs=wire.CODECS, threads=4, cores=2, round_trip=0.02, **kwargs)
    policy.add_sample(sample)
    return policy


def test_choice_follows_the_link_and_the_data():
    slow = _policy(CT, distant=True)
    assert slow.choose() == wire.CODEC_SPLIT16            # distant, link not measured yet
    slow.observe(wire.CODEC_SPLIT16, 4_000_000, 1_720_000, 1.3)   # 1.7 MB through a shared 20 Mbit/s
    assert {slow.choose() for _ in range(50)} == {wire.CODEC_SPLIT16}   # no uncompressed probe

    fast_wan = _policy(CT, distant=True)                  # a long round trip, but 1 Gbit/s
    fast_wan.observe(wire.CODEC_SPLIT16, 4_000_000, 1_720_000, 0.2)
    assert fast_wan.choose() == "none"

    near = _policy(CT)
    assert near.choose() == "none"
    near.observe("none", 4_000_000, 4_000_000, 1.3)       # slow GETs on a LAN: CPU, not the wire
    assert {near.choose() for _ in range(50)} == {"none"}
    assert not near.wants_sample()

    assert _policy(JPEG, distant=True).choose() == "none"


def test_codec_only_where_the_source_may_honour_it_and_it_shrinks_more():
    cpp = ChunkCodecPolicy("auto", distant=True, codecs=())
    cpp.add_sample(CT)
    assert cpp.choose() == "gzip"
    eight_bit = _policy(gz.Sample(1_000_000, 500_000, 0.02, 505_000, 0.02), distant=True)
    assert eight_bit.choose() == "gzip"
    forced = ChunkCodecPolicy("gzip", codecs=wire.CODECS)
    assert forced.choose() == "gzip"                         # nothing sampled yet
    forced.add_sample(CT)
    assert forced.choose() == wire.CODEC_SPLIT16
    assert ChunkCodecPolicy("none", codecs=wire.CODECS).choose() == "none"


def test_a_source_that_looks_distant_once_is_asked_again():
    """A loaded machine: the first answers of a near server took 15 ms (a
    condition a real server here cannot be made to produce on demand, hence
    the stand-in client); one more round trip that answers at once makes it near."""
    import asyncio
    import time as clock
    from types import SimpleNamespace

    from gui.engine.link_probe import confirmed_round_trip

    class SlowAtFirst:
        peer = SimpleNamespace(name="loaded")
        fastest_small_request, small_requests = 0.015, 3
        delays = [0.0]

        async def request(self, method, path):
            await asyncio.sleep(self.delays.pop(0) if self.delays else 0.015)

    class Wan(SlowAtFirst):
        delays: list = []

    start = clock.perf_counter()
    assert asyncio.run(confirmed_round_trip(SlowAtFirst())) < 0.010
    assert asyncio.run(confirmed_round_trip(Wan())) >= 0.010
    assert clock.perf_counter() - start < 5


def test_a_distant_source_is_confirmed_with_requests_asked_at_once(orthanc_factory):
    """A real source across an emulated WAN: the round trips that confirm
    it is distant go out together (one round trip of waiting, not one per
    sample, before the first chunk GET), and it is still found distant."""
    from gui.engine.link_probe import CONFIRM_SAMPLES, confirmed_round_trip
    from tests.devtools.netem import ThreadedWanProxy
    source = orthanc_factory("src", with_accelerator=True)
    with ThreadedWanProxy("127.0.0.1", source.http_port, latency_ms=15) as proxy:
        reached = type(source)(name=source.name, http_port=proxy.port)

        async def go():
            async with client_for(reached) as client:
                in_flight = most = 0
                original = client.request

                async def request(method, path, **kwargs):
                    nonlocal in_flight, most
                    in_flight += 1
                    most = max(most, in_flight)
                    try:
                        return await original(method, path, **kwargs)
                    finally:
                        in_flight -= 1
                client.request = request
                seconds = await confirmed_round_trip(client)
                return seconds, most

        seconds, most = run(go(), timeout=60)
    assert seconds >= 0.010
    assert most >= CONFIRM_SAMPLES


def test_a_corrupted_split16_rle_answer_fails_the_pull_and_nothing_is_imported(orthanc_factory, ct_files, tmp_path,
                                                                               chunk_gets):
    """One byte flipped 200 KB into every connection from the source (inside
    a chunk answer in split16-rle): the engine refuses the answer, the pull
    fails with a clear error, and the target keeps none of the instances."""
    from gui.engine.transport_base import TransferFailed
    from tests.devtools.netem import Direction, Fault, FaultKind, ThreadedWanProxy
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_files, source)
    transport = PullTransport()
    with ThreadedWanProxy("127.0.0.1", source.http_port, **WAN) as proxy:
        proxy.arm(Fault(FaultKind.CORRUPT, Direction.DOWN, after_bytes=200_000, every_connection=True))
        reached = type(source)(name=source.name, http_port=proxy.port)

        async def go():
            async with client_for(reached) as src, client_for(target) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="auto",
                               options=TransferOptions(BucketSize=256, MaxHttpRetries=1), target_accelerated=True)
                await transport.run(ctx, transport.plan(ctx))

        with pytest.raises(TransferFailed) as failed:
            run(go(), timeout=240)
    assert any(g.answer == wire.CODEC_SPLIT16_RLE for g in chunk_gets)
    assert "split16-rle" in str(failed.value)   # the answer itself is refused (its checksum)
    assert not set(target.instance_md5s()) & {i.id for i in instances}
