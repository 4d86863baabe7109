"""Which transport a job uses, and the accelerated ones through the scheduler."""

from __future__ import annotations

import pytest

from gui.engine import JobState, TransferMode
from gui.engine.planner import PlanningError, choose_mode
from tests.engine.helpers import make_engine, peer, run, study_resource, upload_files

ALL = {TransferMode.PUSH: True, TransferMode.PULL: True, TransferMode.DELEGATE: True}


@pytest.mark.parametrize("source, target, expected", [
    (False, False, TransferMode.PLAIN),
    (True, False, TransferMode.PULL),
    (False, True, TransferMode.PUSH),
    (True, True, TransferMode.PUSH),
])
def test_auto_mode(source, target, expected):
    assert choose_mode("auto", source_speaks=source, target_speaks=target, available=ALL)[0] is expected


def test_auto_never_delegates_and_falls_back_without_the_modules():
    assert choose_mode("auto", source_speaks=True, target_speaks=True, available={})[0] is TransferMode.PLAIN
    with pytest.raises(PlanningError, match="push mode is not available"):
        choose_mode("push", source_speaks=True, target_speaks=True, available={})


@pytest.mark.parametrize("mode, message", [
    ("push", "push mode needs the transfers accelerator on the target"),
    ("pull", "pull mode needs the transfers accelerator on the source"),
    ("delegate", "delegate mode needs the transfers plugin on the source"),
    ("fast", "unknown mode"),
])
def test_explicit_modes_need_their_peer(mode, message):
    with pytest.raises(PlanningError, match=message):
        choose_mode(mode, source_speaks=False, target_speaks=False, available=ALL)


def test_auto_uses_push_then_pull_with_accelerated_peers(orthanc_factory, tmp_path, mixed_study_files):
    stock = orthanc_factory("stock")
    accelerated = orthanc_factory("accelerated", with_accelerator=True)
    study = next(iter(upload_files(stock, mixed_study_files).values()))

    async def go():
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            pushed = await (await engine.submit(peer(stock), peer(accelerated), study_resource(study))).wait()
            # Back the other way: the source speaks the protocol, the target does not.
            for instance in stock.instance_md5s():
                stock.request("DELETE", f"/instances/{instance}")
            pulled = await (await engine.submit(peer(accelerated), peer(stock), study_resource(study))).wait()
            refused = await (await engine.submit(peer(accelerated), peer(stock), study_resource(study),
                                                 mode="push")).wait()
            return pushed, pulled, refused
        finally:
            await engine.close()

    pushed, pulled, refused = run(go())
    assert (pushed.state, pushed.mode) == (JobState.SUCCESS, TransferMode.PUSH)
    assert pushed.verified == len(mixed_study_files)
    assert (pulled.state, pulled.mode) == (JobState.SUCCESS, TransferMode.PULL)
    assert pulled.verified == len(mixed_study_files)
    assert refused.state is JobState.FAILURE and "push mode needs" in refused.error
    assert stock.instance_md5s() == accelerated.instance_md5s()


def test_auto_delegates_only_when_delegable():
    chosen, why = choose_mode("auto", source_speaks=True, target_speaks=True, available=ALL, delegable=True)
    assert chosen is TransferMode.DELEGATE and "far from this computer" in why
    assert choose_mode("auto", source_speaks=True, target_speaks=True, available=ALL)[0] is TransferMode.PUSH
    # A stale "delegable" never delegates from a source without the plugin.
    assert choose_mode("auto", source_speaks=False, target_speaks=True, available=ALL,
                       delegable=True)[0] is TransferMode.PUSH
