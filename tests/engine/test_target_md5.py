"""The MD5s of a job's instances on a target, asked in few round trips
(``gui.engine.target_md5``): whatever the way, every instance gets the
target's MD5 or None when absent."""

from __future__ import annotations

import hashlib

import pytest

from gui.engine.target_md5 import md5s_on
from tests.transports.helpers import client_for, run


@pytest.mark.parametrize("accelerated", [True, False])
def test_md5s_of_present_and_absent_instances(orthanc_factory, small_study_files, accelerated):
    target = orthanc_factory("dst", with_accelerator=accelerated)
    source = orthanc_factory("src")
    every = [source.upload(f)["ID"] for f in small_study_files]
    study = source.request("GET", f"/instances/{every[0]}/study")["ID"]
    # Half the study is on the target already.
    present = {target.upload(f)["ID"]: hashlib.md5(f).hexdigest() for f in small_study_files[::2]}
    expected = {i: present.get(i) for i in every}
    resources = [{"Level": "Study", "ID": study}]

    async def ask(**kwargs):
        async with client_for(target) as client:
            return await md5s_on(client, every, concurrency=4, **kwargs)

    # One instance by one; the protocol's lookup (which fails as a whole on
    # an absent instance and falls back); listing below the study first.
    assert run(ask(bulk=False)) == expected
    assert run(ask(bulk=accelerated)) == expected
    assert run(ask(bulk=accelerated, resources=resources)) == expected


def test_a_fresh_target_needs_no_question_per_instance(orthanc_factory, small_study_files):
    """The study is not on the target: one listing says so for every instance."""
    target = orthanc_factory("dst", with_accelerator=True)
    source = orthanc_factory("src")
    every = [source.upload(f)["ID"] for f in small_study_files]
    study = source.request("GET", f"/instances/{every[0]}/study")["ID"]
    asked = []

    async def ask():
        async with client_for(target) as client:
            original = client.instance_md5_or_none

            async def counting(instance_id):
                asked.append(instance_id)
                return await original(instance_id)

            client.instance_md5_or_none = counting
            return await md5s_on(client, every, bulk=True, concurrency=4,
                                 resources=[{"Level": "Study", "ID": study}])

    assert run(ask()) == {i: None for i in every}
    assert asked == []


def test_planning_asks_the_target_while_the_source_lists_the_job(orthanc_factory, small_study_files):
    """The target's listing below the job's study goes out while the source
    is still being asked (its listing and its lookup, also at once): the
    plan costs the slower of them, not their sum. Half the study is on the
    target already, and the plan still says which half."""
    import time

    from gui.engine import planner
    source = orthanc_factory("src", with_accelerator=True)
    target = orthanc_factory("dst", with_accelerator=True)
    every = [source.upload(f)["ID"] for f in small_study_files]
    study = source.request("GET", f"/instances/{every[0]}/study")["ID"]
    for data in small_study_files[::2]:
        target.upload(data)
    spans = {}

    def timed(client, name):
        original = client.request

        async def request(method, path, **kwargs):
            start = time.perf_counter()
            try:
                return await original(method, path, **kwargs)
            finally:
                spans.setdefault(f"{name} {method} {path.split('/')[1]}", (start, time.perf_counter()))
        client.request = request

    async def plan():
        async with client_for(source) as src, client_for(target) as dst:
            timed(src, "source")
            timed(dst, "target")
            return await planner.make_plan(src, dst, [{"Level": "Study", "ID": study}], use_protocol=True,
                                           concurrency=4, target_speaks=True)

    made = run(plan())
    assert len(made.present) == len(small_study_files[::2])
    assert len(made.to_send) == len(every) - len(made.present)
    lookup = spans["source POST transfers"]
    assert spans["target GET studies"][0] < lookup[1]
    assert spans["source GET studies"][0] < lookup[1] and lookup[0] < spans["source GET studies"][1]
