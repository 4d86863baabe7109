"""Plain mode from a stock source asks the source's MD5s beside the transfer,
not before it: only the instances the target already holds need theirs to plan."""

from __future__ import annotations

import asyncio
from typing import List

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine import JobState, planner
from gui.engine.source_md5 import CONCURRENCY, PENDING, DeferredSourceMd5s
from gui.sandbox import synthetic_studies as synth
from tests.engine.helpers import make_engine, peer, run, study_resource, upload_files
from tests.transports.helpers import client_for


class CountingClient(OrthancClient):
    """A real client that remembers which instances it was asked the MD5 of."""

    asked: List[str]

    async def instance_md5(self, instance_id: str) -> str:
        self.asked.append(instance_id)
        return await super().instance_md5(instance_id)


def run_plain_job(tmp_path, source, target, study):
    """One plain-mode job of ``study`` from ``source`` to ``target``, to its report."""
    async def go():
        async with make_engine(tmp_path / "data") as engine:
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode="plain")
            return await job.wait()

    return run(go())


def test_planning_asks_the_source_only_the_md5s_it_compares(stock_pair, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files[:4])
    study = next(iter(ids.values()))
    held = sorted(upload_files(target, ct_study_files[:1]))

    async def go():
        src = CountingClient(client_for(source).peer)
        src.asked = []
        async with src, client_for(target) as dst:
            plan = await planner.make_plan(src, dst, study_resource(study), use_protocol=False,
                                           concurrency=4, defer_md5s=True)
            return plan, src.asked

    plan, asked = run(go())
    assert asked == held
    assert [i.id for i in plan.present] == held
    assert plan.present[0].md5 == source.instance_md5s()[held[0]]
    assert len(plan.to_send) == 3 and all(i.md5 == PENDING for i in plan.to_send)


def test_the_report_holds_every_source_md5_fetched_beside_the_transfer(stock_pair, tmp_path, ct_study_files):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files[:5])
    study = next(iter(ids.values()))

    async def go():
        async with make_engine(tmp_path / "data") as engine:
            summary = await engine.plan(peer(source), peer(target), study_resource(study), mode="plain")
            assert all(i.md5 == PENDING for i in summary.prepared.plan.to_send)
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode="plain",
                                      plan=summary)
            return await job.wait()

    report = run(go())
    assert report.state is JobState.SUCCESS, report.error
    expected = source.instance_md5s()
    assert {v.instance_id: v.source_md5 for v in report.instances} == expected
    assert all(v.verified for v in report.instances)
    assert target.instance_md5s() == expected


def test_a_source_that_cannot_give_an_md5_fails_the_job_and_leaves_the_target_as_it_was(
        stock_pair, tmp_path, ct_study_files, monkeypatch):
    source, target = stock_pair
    ids = upload_files(source, ct_study_files[:4])
    study = next(iter(ids.values()))
    broken = sorted(ids)[2]
    real = OrthancClient.instance_md5

    async def failing(self, instance_id):
        # Only the source's MD5 route fails (a condition a real server does
        # not produce on demand); the target's read-backs answer as usual.
        if instance_id == broken and self.peer.url == source.url:
            raise OrthancError("HTTP 500 on GET .../md5", status=500)
        return await real(self, instance_id)

    monkeypatch.setattr(OrthancClient, "instance_md5", failing)

    report = run_plain_job(tmp_path, source, target, study)
    assert report.state is JobState.FAILURE
    assert broken in (report.error or "") and "MD5" in (report.error or "")
    assert target.instance_md5s() == {}


def test_the_source_md5s_are_asked_many_at_once_and_no_more_than_the_bound(stock_pair):
    """Over a WAN each look-up is a round trip: 2,000 small instances asked
    16 at a time kept a retrieve waiting 3 s for them."""
    source, _target = stock_pair
    spec = synth.make_study_spec(31, "MANY SMALL")
    ids = sorted(upload_files(source, list(synth.tiny_instances(spec, CONCURRENCY + 8, size=2048, seed=31))))
    in_flight = [0, 0]     # now, most

    class FarClient(OrthancClient):
        async def instance_md5(self, instance_id: str) -> str:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
            try:
                await asyncio.sleep(0.05)    # a far server's round trip
                return await super().instance_md5(instance_id)
            finally:
                in_flight[0] -= 1

    async def go():
        async with FarClient(client_for(source).peer) as src:
            found = DeferredSourceMd5s(src, ids, retries=0)
            found.start()
            try:
                return await found.all()
            finally:
                await found.close()

    assert run(go()) == source.instance_md5s()
    assert in_flight[1] == CONCURRENCY >= 32     # bounded, and enough for 800 per second at 40 ms


def test_the_source_md5s_wait_for_the_link_probes(stock_pair, tmp_path, ct_study_files, monkeypatch):
    """Hundreds of look-ups in flight made a near server look distant to the
    probe that decides compression (8.8 ms on the LAN, then 16 requests more
    to confirm): they start once the probes have answered."""
    from gui.engine import plain_mode

    source, target = stock_pair
    ids = upload_files(source, ct_study_files[:4])
    study = next(iter(ids.values()))
    order: List[str] = []
    real_probe = plain_mode.confirmed_distant
    real_md5 = OrthancClient.instance_md5

    async def probe(client):
        order.append(f"probe {client.peer.name}")
        try:
            return await real_probe(client)
        finally:
            order.append(f"probed {client.peer.name}")

    async def md5(self, instance_id):
        order.append("md5 source" if self.peer.url == source.url else "md5 target")
        return await real_md5(self, instance_id)

    monkeypatch.setattr(plain_mode, "confirmed_distant", probe)
    monkeypatch.setattr(OrthancClient, "instance_md5", md5)

    report = run_plain_job(tmp_path, source, target, study)
    assert report.state is JobState.SUCCESS, report.error
    probes = [i for i, step in enumerate(order) if step.startswith("probe ")]
    assert len(probes) == 2
    last_probe_answer = max(i for i, step in enumerate(order) if step.startswith("probed"))
    assert order.index("md5 source") > last_probe_answer
