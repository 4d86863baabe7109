"""The auto compression policy, with real data and real servers."""

from __future__ import annotations

import asyncio
import io
import os

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from gui.engine import compression as gz
from gui.engine.compression import PullCompressionPolicy, decide_push
from gui.engine.push_mode import PushTransport
from gui.sandbox import synthetic_studies as synth
from tests.transports.helpers import Recorder, client_for, infos_of, make_ctx, run

SLOW_LINK = 1e6      # 1 MB/s: a WAN
FAST_LINK = 10e9     # 10 GB/s: faster than any gzip


def jpeg_like_files(count: int, size: int = 300_000) -> list:
    """DICOM files whose pixel data is as incompressible as JPEG: random bytes,
    labelled with a JPEG transfer syntax (encapsulated fragments)."""
    from pydicom.encaps import encapsulate
    spec = synth.make_study_spec(31, "XA JPEG")
    series = generate_uid()
    out = []
    for n in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = synth.SECONDARY_CAPTURE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName = spec.patient_id, spec.patient_name
        ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, series
        ds.Modality, ds.InstanceNumber = "OT", n + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([os.urandom(size)])
        ds["PixelData"].VR = "OB"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def test_decision_from_real_samples(ct_study_files):
    async def measure(data):
        return await gz.measure(data)

    ct = asyncio.run(measure(b"".join(ct_study_files[:2])))
    jpeg = asyncio.run(measure(b"".join(jpeg_like_files(2))))
    print(f"\nCT-like: ratio {ct.ratio:.2f} at {ct.rate / 1e6:.0f} MB/s; "
          f"JPEG-like: ratio {jpeg.ratio:.3f} at {jpeg.rate / 1e6:.0f} MB/s")
    assert decide_push(jpeg, SLOW_LINK, 4).compression == "none"
    assert decide_push(ct, SLOW_LINK, 4).compression == "gzip"
    assert decide_push(ct, FAST_LINK, 4).compression == "none"


def test_pull_policy_follows_the_faster_choice():
    policy = PullCompressionPolicy("auto", probe_every=5)
    # Uncompressed first, then gzip once it is measured.
    assert policy.choose() == "none"
    policy.observe("none", 4_000_000, 4_000_000, 4.0)   # 1 MB/s uncompressed
    assert policy.choose() == "gzip"
    policy.observe("gzip", 4_000_000, 2_000_000, 2.0)   # 2 MB/s with gzip
    choices = [policy.choose() for _ in range(30)]
    # Mostly gzip, still probing; twice slower, so four times less often than probe_every.
    assert choices.count("gzip") >= 27 and "none" in choices
    # Data that stops shrinking turns gzip off.
    policy.observe("gzip", 4_000_000, 3_990_000, 1.0)
    policy.observe("gzip", 40_000_000, 39_900_000, 1.0)
    assert {policy.choose() for _ in range(10)} == {"none"}


def test_pull_policy_does_not_pay_for_gzip_probes_on_a_fast_link():
    """Threads GETs start together: none of them is a gzip probe, and on a
    LAN gzip is never tried (each probe costs a bucket compressed by the
    source, far slower than sending it)."""
    policy = PullCompressionPolicy("auto", probe_every=8)
    assert [policy.choose() for _ in range(4)] == ["none"] * 4
    policy.observe("none", 4_000_000, 4_000_000, 0.02)  # 200 MB/s: a LAN
    assert {policy.choose() for _ in range(64)} == {"none"}


def test_pull_policy_probes_gzip_once_at_a_time_and_rarely_when_slower():
    policy = PullCompressionPolicy("auto", probe_every=8)
    policy.choose()
    policy.observe("none", 4_000_000, 4_000_000, 0.2)   # 20 MB/s
    assert [policy.choose() for _ in range(3)] == ["gzip", "none", "none"]  # one probe in flight
    policy.observe("gzip", 4_000_000, 2_800_000, 1.0)   # 4 MB/s: the source's gzip is the bottleneck
    choices = [policy.choose() for _ in range(64)]
    # The slower choice is re-tried, but rarely (it costs a whole bucket).
    assert 1 <= choices.count("gzip") <= 2


def test_pull_policy_starts_compressed_from_a_distant_source():
    policy = PullCompressionPolicy("auto", probe_every=8, start_with_gzip=True)
    assert [policy.choose() for _ in range(4)] == ["gzip"] * 4   # nothing measured yet
    for _ in range(4):
        policy.observe("gzip", 4_000_000, 2_000_000, 0.4)   # 10 MB/s raw through a 5 MB/s link
    # The first four sent together: uncompressed is tried once as many again have finished.
    assert [policy.choose() for _ in range(4)] == ["gzip"] * 4
    for _ in range(4):
        policy.observe("gzip", 4_000_000, 2_000_000, 0.4)
    assert [policy.choose() for _ in range(3)] == ["none", "gzip", "gzip"]  # one probe of the other
    policy.observe("none", 4_000_000, 4_000_000, 0.8)   # 5 MB/s
    choices = [policy.choose() for _ in range(64)]
    assert choices.count("gzip") >= 60


def test_pull_policy_from_a_distant_source_is_not_turned_by_fast_uncompressed_gets():
    """While the source compresses its first answers the link idles, and an
    uncompressed GET then looks faster than gzip; with the link shared, one
    GET's own rate does not show that it takes twice the link. A CT retrieve
    over the WAN sent a fifth of its slices uncompressed that way (15.5 s
    against 13.1–13.6 s with gzip throughout, docs/benchmark.md)."""
    policy = PullCompressionPolicy("auto", probe_every=8, start_with_gzip=True)
    assert [policy.choose() for _ in range(8)] == ["gzip"] * 8
    policy.observe("gzip", 500_000, 250_000, 0.7)        # 0.7 MB/s per GET, ratio 2
    # Nothing uncompressed until the first eight (sent together) and as many again finished.
    assert [policy.choose() for _ in range(8)] == ["gzip"] * 8
    for _ in range(15):
        policy.observe("gzip", 500_000, 250_000, 0.7)
    for seconds in (0.17, 0.4, 0.45):                    # 2.9, 1.25, 1.1 MB/s
        window = [policy.choose() for _ in range(4)]
        assert window == ["none", "gzip", "gzip", "gzip"]  # one uncompressed GET at a time
        policy.observe("none", 500_000, 500_000, seconds)
    # Median 1.25 MB/s per GET: faster than gzip's 0.7, not by the ratio (1.4 MB/s).
    choices = [policy.choose() for _ in range(100)]
    assert choices.count("gzip") >= 85                   # gzip stays, probes apart
    # An uncompressed GET that is faster by more than the ratio wins (a slow source on a fast link).
    for _ in range(6):
        policy.observe("none", 500_000, 500_000, 0.1)    # 5 MB/s
    assert [policy.choose() for _ in range(20)].count("none") >= 18


def test_gunzip_is_bounded():
    bomb = gz.gzip_bytes(b"\0" * 10_000_000)
    with pytest.raises(gz.DecompressionError, match="more than"):
        gz.gunzip_bounded(bomb, 1000)
    with pytest.raises(gz.DecompressionError, match="truncated"):
        gz.gunzip_bounded(gz.gzip_bytes(b"x" * 5000)[:-10], 5000)
    assert gz.gunzip_bounded(gz.gzip_bytes(b"abc"), 3) == b"abc"


@pytest.mark.parametrize("kind,link,expected", [("ct", SLOW_LINK, "gzip"), ("jpeg", SLOW_LINK, "none"),
                                                ("ct", FAST_LINK, "none")])
def test_auto_push_chooses_and_delivers(orthanc_factory, ct_study_files, tmp_path, kind, link, expected):
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    files = ct_study_files if kind == "ct" else jpeg_like_files(4)
    instances = infos_of(files, source)
    recorder = Recorder()
    transport = PushTransport(link_rate=link)

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, compression="auto")
            await transport.run(ctx, transport.plan(ctx))
            return ctx

    ctx = run(go())
    print(f"\n{kind} at {link / 1e6:.0f} MB/s: {ctx.compression_used} ({transport.last_pusher.decision_reason})")
    assert ctx.compression_used == expected
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}


def test_auto_push_measures_the_link_when_unknown(orthanc_factory, ct_study_files, tmp_path):
    """Without an estimate the first bucket's PUT measures the link; either way
    the study arrives whole (and the estimate is kept for the next job)."""
    from gui.engine.push_mode import bucket_pusher
    from gui.config.settings import TransferOptions
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    instances = infos_of(ct_study_files, source)
    recorder = Recorder()
    transport = PushTransport()
    bucket_pusher._LINK_RATES.pop(target.url, None)

    async def go():
        async with client_for(source) as src, client_for(target) as dst:
            ctx = make_ctx(src, dst, instances, tmp_path / "staging", recorder, compression="auto",
                           options=TransferOptions(BucketSize=256))
            await transport.run(ctx, transport.plan(ctx))
            return ctx

    ctx = run(go())
    print(f"\nloopback probe: {ctx.compression_used} ({transport.last_pusher.decision_reason})")
    assert ctx.compression_used in ("gzip", "none")
    assert target.url in bucket_pusher._LINK_RATES
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}


def _auto_push_through(orthanc_factory, files, tmp_path, bucket_kb, target_config=None, **link):
    """Push ``files`` with ``auto`` compression to a plugin target behind an
    emulated link (``link``: WanProxy settings; none at all: the target
    itself, as near as it gets). Returns the context, the pusher, the bytes
    sent up the link, the target and the instances."""
    from gui.config.settings import TransferOptions
    from gui.engine.push_mode import bucket_pusher
    from tests.devtools.netem import ThreadedWanProxy
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True, extra_config=target_config or {})
    instances = infos_of(files, source)
    transport = PushTransport()
    with ThreadedWanProxy("127.0.0.1", target.http_port, **link) as proxy:
        # Near: the target itself (a Python proxy adds its own delays on a busy machine).
        reached = type(target)(name=target.name, http_port=proxy.port if link else target.http_port)
        bucket_pusher._LINK_RATES.pop(reached.url, None)

        async def go():
            async with client_for(source) as src, client_for(reached) as dst:
                ctx = make_ctx(src, dst, instances, tmp_path / "staging", Recorder(), compression="auto",
                               options=TransferOptions(BucketSize=bucket_kb))
                await transport.run(ctx, transport.plan(ctx))
                return ctx

        ctx = run(go())
        up = proxy.stats.bytes_up
    pusher = transport.last_pusher
    print(f"\n{link}: {ctx.compression_used} ({pusher.decision_reason}); {up} bytes up")
    assert target.instance_md5s() == {i.id: i.md5 for i in instances}
    return ctx, pusher, up, instances


def test_auto_push_to_a_distant_target_starts_compressed(orthanc_factory, ct_study_files, tmp_path):
    """Across a WAN (round trip 20 ms, 20 Mbit/s) the first bucket already
    goes gzip-compressed: the link probe confirms it and no bucket is sent
    twice; the study arrives whole."""
    ctx, pusher, up, instances = _auto_push_through(orthanc_factory, ct_study_files, tmp_path, 256,
                                                    latency_ms=10, bandwidth_mbit=20)
    assert ctx.compression_used == "gzip" and not pusher.switched_compression
    assert up < 0.75 * sum(i.size for i in instances)  # every bucket went compressed, none twice


@pytest.mark.parametrize("latency_ms,expected", [(0, "none"), (30, "gzip")])
def test_auto_push_of_one_bucket_follows_the_round_trip(orthanc_factory, ct_study_files, tmp_path,
                                                        latency_ms, expected):
    """Too short a transfer to measure the link: near target, no gzip (it
    would only cost CPU on a LAN); distant target, gzip."""
    link = {"latency_ms": latency_ms / 2} if latency_ms else {}
    ctx, pusher, _up, _instances = _auto_push_through(orthanc_factory, ct_study_files, tmp_path,
                                                      64 * 1024, **link)
    assert len(pusher.buckets) == 1
    assert ctx.compression_used == expected


def test_auto_push_reverses_a_wrong_guess_after_the_first_bucket(orthanc_factory, tmp_path, monkeypatch):
    """The round trip says "near" (a LAN) but the link is slow (32 Mbit/s):
    the transfer starts uncompressed, the first bucket's PUT shows the link
    is slower than gzip, and the transaction is made again compressed. The
    study still arrives whole."""
    from gui.engine.push_mode import bucket_pusher

    async def near(client):
        return False

    monkeypatch.setattr(bucket_pusher, "is_distant", near)
    files = list(synth.ct_series(synth.make_study_spec(71, "CT SWITCH"), 20, seed=71))
    ctx, pusher, up, instances = _auto_push_through(orthanc_factory, files, tmp_path, 2048, bandwidth_mbit=32)
    assert len(pusher.buckets) > 2 and pusher.buckets[0].total_size >= bucket_pusher.PROBE_MIN_BYTES
    assert pusher.switched_compression and ctx.compression_used == "gzip"
    # Compressed (ratio about 2), plus the first bucket sent uncompressed in vain.
    assert up < sum(i.size for i in instances) / 1.8 + 1.1 * pusher.buckets[0].total_size


def test_auto_push_uses_the_codec_only_where_the_target_announces_it(orthanc_factory, ct_study_files, tmp_path):
    """Towards our plugin, a push that chose gzip offers the codecs and gets
    the strongest, split16-rle: fewer bytes on the link for the same study.
    Towards a plugin of ours that knows only split16-gzip ("Codecs":
    ["split16-gzip"], as plugins before split16-rle) it gets that one; towards
    a server that announces none (our plugin with "Codecs": [], as the C++
    plugin behaves) the same push goes as plain gzip. All verified."""
    from gui.protocol import wire
    link = {"latency_ms": 10, "bandwidth_mbit": 20}
    ctx, pusher, rle_up, _ = _auto_push_through(orthanc_factory, ct_study_files, tmp_path / "a", 256, **link)
    assert ctx.compression_used == "gzip" and pusher.codec_used == wire.CODEC_SPLIT16_RLE
    ctx, pusher, split_up, _ = _auto_push_through(orthanc_factory, ct_study_files, tmp_path / "c", 256,
                                                  target_config={"Transfers": {"Codecs": [wire.CODEC_SPLIT16]}},
                                                  **link)
    assert ctx.compression_used == "gzip" and pusher.codec_used == wire.CODEC_SPLIT16
    ctx, pusher, gzip_up, _ = _auto_push_through(orthanc_factory, ct_study_files, tmp_path / "b", 256,
                                                 target_config={"Transfers": {"Codecs": []}}, **link)
    assert ctx.compression_used == "gzip" and pusher.codec_used is None
    assert rle_up < 0.97 * split_up < 0.93 * gzip_up


def test_codec_sample_prefers_gzip_where_splitting_does_not_pay():
    """8-bit or random data: no codec is asked for (gzip is as good)."""
    ct = asyncio.run(gz.measure(b"".join(synth.ct_series(synth.make_study_spec(72, "CT"), 2, seed=72))))
    jpeg = asyncio.run(gz.measure(b"".join(jpeg_like_files(2))))
    assert ct.codec == "split16-rle" and ct.codecs == ("split16-rle", "split16-gzip")
    assert jpeg.codec is None and jpeg.codecs == ()


def test_a_link_faster_than_a_receiver_inflates_gets_no_gzip():
    """A PUT at 100 MB/s is bound by the receiver, even if the sender could
    compress faster still: gzip would only add inflating there."""
    fast_compressor = gz.Sample(raw=4_000_000, compressed=2_000_000, seconds=0.01)  # 400 MB/s, ratio 2
    assert decide_push(fast_compressor, 100e6, 4).compression == "none"
    assert decide_push(fast_compressor, 5e6, 4).compression == "gzip"  # a WAN still compresses


def _record_puts(monkeypatch):
    """(bucket index, start, end) of every PUT of a push transaction."""
    import time

    from gui.engine.push_mode import push_transaction
    puts = []
    original = push_transaction.PushTransaction.put

    async def put(self, index, body, on_progress, on_retry=None):
        start = time.perf_counter()
        await original(self, index, body, on_progress, on_retry)
        puts.append((index, start, time.perf_counter()))

    monkeypatch.setattr(push_transaction.PushTransaction, "put", put)
    return puts


def test_auto_push_to_a_distant_target_sends_no_bucket_alone(orthanc_factory, ct_study_files, tmp_path,
                                                             monkeypatch):
    """Across a WAN the workers start together with the guessed gzip: a
    second bucket is on the link before the first one's PUT has ended (no
    lone first bucket to measure the link), the measurement made on all of
    them confirms gzip, and nothing is sent twice."""
    puts = _record_puts(monkeypatch)
    ctx, pusher, up, instances = _auto_push_through(orthanc_factory, ct_study_files, tmp_path, 256,
                                                    latency_ms=10, bandwidth_mbit=20)
    assert ctx.compression_used == "gzip" and not pusher.switched_compression
    assert "link is being measured" not in pusher.decision_reason   # the measurement was made
    first = next(p for p in puts if p[0] == 0)
    assert any(start < first[2] for index, start, _end in puts if index != 0)
    assert sorted(p[0] for p in puts) == list(range(len(pusher.buckets)))   # each bucket once
    assert up < 0.75 * sum(i.size for i in instances)


def test_auto_push_switches_off_gzip_when_all_buckets_together_show_a_fast_link(orthanc_factory, tmp_path,
                                                                                monkeypatch):
    """The round trip says "distant" but the buckets sent at once show a link
    that gzip cannot help (here: any link, by lowering the threshold): the
    transaction is made again uncompressed and the study still arrives whole."""
    from gui.engine.push_mode import bucket_pusher

    async def far(client):
        return True

    monkeypatch.setattr(bucket_pusher, "is_distant", far)
    monkeypatch.setattr(gz, "GZIP_NEVER_FASTER", 1.0)
    files = list(synth.ct_series(synth.make_study_spec(73, "CT SWITCH OFF"), 20, seed=73))
    ctx, pusher, _up, _instances = _auto_push_through(orthanc_factory, files, tmp_path, 1024)
    assert len(pusher.buckets) > 2
    assert pusher.switched_compression and ctx.compression_used == "none"


def test_auto_push_keeps_its_guess_when_the_probe_ends_after_most_buckets_went(orthanc_factory, tmp_path,
                                                                                monkeypatch):
    """A few buckets only, all sent in the probe's first round: even if the
    link then says gzip was not worth it, making the transaction again would
    send everything twice. The guess stays and each bucket goes once."""
    from gui.engine.push_mode import bucket_pusher

    async def far(client):
        return True

    monkeypatch.setattr(bucket_pusher, "is_distant", far)
    monkeypatch.setattr(gz, "GZIP_NEVER_FASTER", 1.0)   # any link is "too fast for gzip"
    files = list(synth.ct_series(synth.make_study_spec(74, "CT FEW BUCKETS"), 6, seed=74))
    ctx, pusher, _up, instances = _auto_push_through(orthanc_factory, files, tmp_path, 1024)
    assert 2 < len(pusher.buckets) <= 4   # one round of the default four workers
    assert not pusher.switched_compression and ctx.compression_used == "gzip"
    assert "kept gzip" in pusher.decision_reason
    assert pusher.wire_bytes < 0.75 * sum(i.size for i in instances)   # sent once, compressed
