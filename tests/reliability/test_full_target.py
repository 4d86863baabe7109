"""A full target: Orthanc's MaximumStorageSize / MaximumPatientCount.

Orthanc 1.10.1 has no "refuse when full" mode: it recycles (deletes) its
oldest patients. These tests pin down what that does to a transfer, against
real servers, and what the app does about it: our plugin announces its
limits (``GET /transfers/storage``), the plan warns when a transfer would
recycle, a stock target gets no claim at all, a commit that could only
recycle and then fail is refused before importing anything, and a full
target's failure says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from gui.client.orthanc_client import OrthancClient
from gui.engine.target_capacity import storage_status
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess
from tests.engine.helpers import make_engine, peer, run, small_options, study_resource

pytestmark = pytest.mark.timeout(240)


def patient_files(seed: int, count: int, side: int = 512) -> List[bytes]:
    """One patient, one study, ``count`` CT slices (512²: about 0.5 MB each)."""
    spec = synth.make_study_spec(seed, "FULL %d" % seed)
    return list(synth.ct_series(spec, count, rows=side, cols=side, seed=seed))


def upload(server: OrthancProcess, files: List[bytes]) -> dict:
    answers = [server.upload(f) for f in files]
    return {"patient": answers[0]["ParentPatient"], "study": answers[0]["ParentStudy"]}


def servers(tmp_path: Path, *, source_plugin: bool, target_plugin: bool, limits: dict):
    source = OrthancProcess(name="source", with_accelerator=source_plugin,
                            workdir=tmp_path / "source").start()
    target = OrthancProcess(name="target", with_accelerator=target_plugin, extra_config=limits,
                            workdir=tmp_path / "target").start()
    return source, target


def transfer(tmp_path: Path, source: OrthancProcess, target: OrthancProcess, study: str, mode: str,
             **options: object):
    async def go():
        engine = make_engine(tmp_path / "engine", small_options(BucketSize=1024, MaxHttpRetries=2, **options))
        await engine.start()
        try:
            plan = await engine.plan(peer(source), peer(target), study_resource(study), mode=mode)
            job = await engine.submit(peer(source), peer(target), study_resource(study), mode=mode)
            return plan, await job.wait()
        finally:
            await engine.close()
    return run(go())


def test_plugin_announces_its_limits_and_use_a_stock_server_says_nothing(tmp_path: Path) -> None:
    limits = {"MaximumStorageSize": 40, "MaximumPatientCount": 3}
    source, target = servers(tmp_path, source_plugin=False, target_plugin=True, limits=limits)
    try:
        upload(target, patient_files(1, 2))
        status = target.request("GET", "/transfers/storage")
        assert status["MaximumStorageSize"] == str(40 * 1024 * 1024)
        assert status["MaximumPatientCount"] == 3
        assert status["CountPatients"] == 1
        assert int(status["StorageSize"]) == int(target.request("GET", "/statistics")["TotalDiskSize"])

        async def ask(server: OrthancProcess):
            async with OrthancClient(peer(server)) as client:
                return await storage_status(client)
        seen = run(ask(target))
        assert seen is not None and seen.max_patients == 3 and seen.patients == 1
        assert run(ask(source)) is None      # stock Orthanc: unknown, not "no limit"
    finally:
        source.stop()
        target.stop()


@pytest.mark.parametrize("target_plugin", [True, False], ids=["plugin-target", "stock-target"])
def test_a_transfer_that_recycles_is_warned_where_it_can_be_known(tmp_path: Path,
                                                                 target_plugin: bool) -> None:
    """What Orthanc does: a new patient on a server at MaximumPatientCount
    deletes the oldest one, and the job still succeeds. The plan warns when
    the target runs our plugin; for a stock target it claims nothing."""
    source, target = servers(tmp_path, source_plugin=False, target_plugin=target_plugin,
                             limits={"MaximumPatientCount": 1})
    try:
        old = upload(target, patient_files(1, 2, side=256))
        new = upload(source, patient_files(2, 2, side=256))
        plan, report = transfer(tmp_path, source, target, new["study"], "auto")
        if target_plugin:
            assert len(plan.warnings) == 1
            assert "MaximumPatientCount 1" in plan.warnings[0] and "delete" in plan.warnings[0]
        else:
            assert plan.warnings == []
        assert report.state.value == "Success", report.error
        # The measured behaviour the warning is about: the other patient is gone.
        assert target.request("GET", "/patients") == [new["patient"]]
        assert old["patient"] != new["patient"]
    finally:
        source.stop()
        target.stop()


def test_no_warning_when_the_transfer_fits(tmp_path: Path) -> None:
    source, target = servers(tmp_path, source_plugin=False, target_plugin=True,
                             limits={"MaximumPatientCount": 5, "MaximumStorageSize": 100})
    try:
        upload(target, patient_files(1, 1, side=256))
        new = upload(source, patient_files(2, 2, side=256))
        plan, report = transfer(tmp_path, source, target, new["study"], "push")
        assert plan.warnings == []
        assert report.state.value == "Success", report.error
    finally:
        source.stop()
        target.stop()


def test_a_commit_that_cannot_fit_is_refused_before_anything_is_deleted(tmp_path: Path) -> None:
    """Measured without the plugin's check: MaximumStorageSize 3 MB holding
    a 1.5 MB patient, a 3.7 MB study pushed: Orthanc recycles the old
    patient for the third instance, refuses the sixth ("Cannot recycle more
    patients"), the rollback removes the five imported ones and the target
    ends empty. With the check, nothing is imported and nothing deleted."""
    source, target = servers(tmp_path, source_plugin=False, target_plugin=True,
                             limits={"MaximumStorageSize": 3})
    try:
        old = upload(target, patient_files(1, 3))
        before = target.instance_md5s()
        new = upload(source, patient_files(2, 7))
        plan, report = transfer(tmp_path, source, target, new["study"], "push")
        assert plan.warnings and "cannot hold this transfer" in plan.warnings[0]
        assert report.state.value == "Failure"
        assert "the target is full" in report.error
        assert target.instance_md5s() == before
        assert target.request("GET", "/patients") == [old["patient"]]
    finally:
        source.stop()
        target.stop()


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_import_as_it_arrives_that_cannot_fit_is_refused_before_anything_is_deleted(tmp_path: Path,
                                                                                     mode: str) -> None:
    """The same full target with "import as it arrives": without a check at
    the transaction's creation, the instances imported as their buckets
    arrive make Orthanc recycle the old patient before the commit's check
    runs. With it, the push request is refused (507, the target is full):
    nothing imported, nothing deleted."""
    source, target = servers(tmp_path, source_plugin=mode == "pull", target_plugin=True,
                             limits={"MaximumStorageSize": 3})
    try:
        old = upload(target, patient_files(1, 3))
        before = target.instance_md5s()
        new = upload(source, patient_files(2, 7))
        plan, report = transfer(tmp_path, source, target, new["study"], mode, ImportAsItArrives=True)
        assert plan.warnings and "cannot hold this transfer" in plan.warnings[0]
        assert report.state.value == "Failure"
        assert "the target is full" in report.error, report.error
        assert target.instance_md5s() == before
        assert target.request("GET", "/patients") == [old["patient"]]
    finally:
        source.stop()
        target.stop()


@pytest.mark.parametrize("mode,source_plugin", [("plain", False), ("pull", True)])
def test_a_full_stock_target_fails_cleanly_saying_it_is_full(tmp_path: Path, mode: str,
                                                             source_plugin: bool) -> None:
    """A stock target whose MaximumStorageSize (1 MB) is below the study
    (2 MB) and holds nothing else: Orthanc refuses with FullStorage midway;
    the job fails, what it imported is removed, and the message says the
    target is full (not retried: retrying a full storage cannot help)."""
    source, target = servers(tmp_path, source_plugin=source_plugin, target_plugin=False,
                             limits={"MaximumStorageSize": 1})
    try:
        new = upload(source, patient_files(2, 4))
        plan, report = transfer(tmp_path, source, target, new["study"], mode)
        assert plan.warnings == []
        assert report.state.value == "Failure"
        assert "the target is full" in report.error, report.error
        assert target.instance_md5s() == {}
    finally:
        source.stop()
        target.stop()


def test_the_command_line_warns_on_stderr_before_a_transfer_that_recycles(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys
    source, target = servers(tmp_path, source_plugin=False, target_plugin=True,
                             limits={"MaximumPatientCount": 1})
    try:
        upload(target, patient_files(1, 1, side=256))
        new = upload(source, patient_files(2, 1, side=256))
        env = dict(os.environ, ORTHANC_TRANSFERS_DATA=str(tmp_path / "cli-data"),
                   ORTHANC_TRANSFERS_CONFIG=str(tmp_path / "cli-config.json"), ORTHANC_TRANSFERS_KEYRING="0")
        done = subprocess.run([sys.executable, "-m", "gui.cli", "send", "--from", source.url, "--to", target.url,
                               "--study", new["study"], "--json"], env=env, capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 0, done.stderr[-2000:]
        assert "warning:" in done.stderr and "MaximumPatientCount 1" in done.stderr
        assert json.loads(done.stdout)["state"] == "Success"
    finally:
        source.stop()
        target.stop()
