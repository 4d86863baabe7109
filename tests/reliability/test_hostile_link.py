"""A link that resets every connection after 3 MB (issue item 2).

Through the project's WAN proxy, every connection towards the target (the
upload side) or from the source (the download side) is reset once 3 MB
have crossed it. With the default 4 MB buckets every retry of a bucket dies
at the same point; the engine must send smaller pieces and still end
complete-verified in push, pull and plain modes with MaxHttpRetries 3.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gui.config.settings import TransferOptions
from gui.sandbox import synthetic_studies as synth
from tests.devtools.faults.lab import Lab
from tests.devtools.netem.wan_proxy import Direction, Fault, FaultKind

pytestmark = pytest.mark.timeout(240)

RESET_EVERY = 3 * 1024 * 1024


async def seed(lab: Lab, server) -> list:
    """About 9 MB: 16 CT slices of 512x512 (0.5 MB each) and a few tiny instances."""
    spec = synth.make_study_spec(77, "HOSTILE")
    files = list(synth.ct_series(spec, 16, rows=512, cols=512, seed=77))
    files += list(synth.tiny_instances(spec, 4, size=8192, seed=77))

    def upload() -> str:
        return [server.upload(f) for f in files][0]["ParentStudy"]
    return [{"Level": "Study", "ID": await asyncio.to_thread(upload)}]


async def scenario(tmp_path: Path, transport: str, side: str):
    lab = Lab(tmp_path, seed=3)
    try:
        source, target = await lab.pair(transport)
        resources = await seed(lab, source)
        checker = await lab.checker(source, target)
        direction = Direction.UP if side == "upload" else Direction.DOWN
        proxy = await lab.proxy(target if side == "upload" else source)
        proxy.arm(Fault(FaultKind.RESET, direction, after_bytes=RESET_EVERY, every_connection=True))
        source_url = proxy.url if side == "download" else source.url
        target_url = proxy.url if side == "upload" else target.url
        options = TransferOptions(Threads=2, BucketSize=4096, MaxHttpRetries=3, HttpTimeout=20,
                                  Compression="none")
        result = await lab.run_job(lab.peer("source", source_url), lab.peer("target", target_url),
                                   resources, transport, options, timeout=180)
        return await lab.classify(checker, result), result, proxy.stats.connections
    finally:
        await lab.aclose()


@pytest.mark.parametrize("transport,side", [("push", "upload"), ("pull", "download"), ("plain", "upload"),
                                            ("pull", "upload"), ("push", "download")])
def test_a_link_resetting_every_3_mb_still_gets_the_study_through(tmp_path: Path, transport: str,
                                                                  side: str) -> None:
    verdict, result, connections = asyncio.run(scenario(tmp_path, transport, side))
    assert verdict.outcome.value == "completed-verified", verdict.detail
    assert connections > 1   # the resets did happen


def test_split_buckets_carry_the_same_bytes_as_a_valid_plan() -> None:
    """Pieces of any size form a push request the plugin accepts, with the
    same byte ranges in the same order as the original buckets."""
    from gui.engine.piece_size import SplitPlan
    from gui.protocol import wire
    from gui.protocol.wire import InstanceInfo, plan_buckets
    instances = [InstanceInfo(f"{n:08x}-00000000-00000000-00000000-00000000", size, "0" * 32)
                 for n, size in enumerate([5_000, 700_000, 9_000_000, 40_000, 3_000_000, 123])]
    buckets = plan_buckets(instances, 4096 * 1024)
    sizes = {i.id: i.size for i in instances}

    def ranges(bs):
        out = []
        for b in bs:
            for c in b.chunks:
                if out and out[-1][0] == c.instance_id and out[-1][2] == c.offset:
                    out[-1] = (c.instance_id, out[-1][1], c.offset + c.size)
                else:
                    out.append((c.instance_id, c.offset, c.offset + c.size))
        return out
    for piece in (4096 * 1024, 1024 * 1024, 256 * 1024, 100_000):
        plan = SplitPlan(buckets)
        parts = plan.resplit(piece, sizes)
        assert all(p.total_size <= piece for p in parts)
        assert ranges(parts) == ranges(buckets)
        parsed = wire.parse_push_request(wire.build_push_request(instances, parts, "none"), 10**6, 10**6)
        assert len(parsed.buckets) == len(parts)
        assert [plan.owner[n] for n in range(len(parts))] == sorted(plan.owner)
