"""Installing the plugin outside the source tree, and restarting Orthanc."""

from __future__ import annotations

import runpy
import shutil

import pytest

from gui.protocol import wire
from gui.sandbox.orthanc_process import PYTHON_PLUGIN, OrthancProcess, resource_path
from tests.server.conftest import study
from tests.server.push_helpers import PluginHttp, plan_push

WIRE_SOURCE = resource_path("server_plugin").parents[1] / "gui" / "protocol" / "wire.py"


def test_copied_plugin_folder_with_installed_wire_module_works(orthanc_factory, tmp_path):
    # An admin copies the folder alone: the wire module must come with it.
    source = resource_path("server_plugin")
    target = tmp_path / "opt" / "transfers"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "transfers_wire.py"))
    install = runpy.run_path(str(target / "install_wire.py"))
    written = install["install_wire"](str(WIRE_SOURCE), str(target / "transfers_wire.py"))
    assert (target / "transfers_wire.py").read_bytes() == WIRE_SOURCE.read_bytes()
    server = orthanc_factory("copied", extra_config={
        "Plugins": [PYTHON_PLUGIN], "PythonScript": str(target / "transfers_accelerator.py")})
    answer = server.request("POST", wire.URI_LOOKUP, b"[]")
    assert answer["Instances"] == [] and written.endswith("transfers_wire.py")


def test_copied_plugin_folder_without_wire_module_says_why_in_the_log(tmp_path):
    target = tmp_path / "transfers"
    shutil.copytree(resource_path("server_plugin"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "transfers_wire.py"))
    server = OrthancProcess(name="nowire", extra_config={
        "Plugins": [PYTHON_PLUGIN], "PythonScript": str(target / "transfers_accelerator.py")})
    try:
        try:
            server.start(timeout=20)
        except Exception:
            pass  # Orthanc may refuse to start without its script: either way the log must say why
        log = server.log_path.read_text(errors="replace")
        assert "wire-format module was not found" in log and "transfers_wire.py" in log
    finally:
        server.stop()


def test_restart_keeps_staged_transactions(orthanc_factory):
    """Staged transactions come back after a restart (recovery.py; more in
    tests/reliability/test_plugin_restart.py) and leave nothing once committed."""
    server = orthanc_factory("restart", with_accelerator=True)
    http = PluginHttp(server)
    try:
        plan = plan_push(study(500, tiny=2), 64 * 1024)
        tid = http.send_all(plan)
        assert (server.storage_dir / "transfers-staging" / tid).is_dir()
        server.restart()
        http.client.base_url = server.url
        assert http.commit(tid).status_code == 200
        assert sorted(http.instance_ids()) == sorted(plan.ids())
        assert list((server.storage_dir / "transfers-staging").iterdir()) == []
    finally:
        http.close()


def test_bad_option_values_are_logged_and_replaced_by_defaults(orthanc_factory):
    server = orthanc_factory("badopts", with_accelerator=True, extra_config={
        "Transfers": {"CacheSize": "big", "GzipLevel": 42, "MaxPushTransactions": True}})
    assert server.request("POST", wire.URI_LOOKUP, b"[]")["Instances"] == []
    log = server.log_path.read_text(errors="replace")
    for name in ("CacheSize", "GzipLevel", "MaxPushTransactions"):
        assert f"transfers: Transfers.{name}: expected a number" in log


def test_a_stale_wire_module_beside_the_plugin_is_refused_with_a_clear_log_line(tmp_path):
    """An admin updated the plugin but kept an old transfers_wire.py: the
    plugin must not parse buckets by other rules than the sender's."""
    target = tmp_path / "transfers"
    shutil.copytree(resource_path("server_plugin"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "transfers_wire.py"))
    stale = WIRE_SOURCE.read_text(encoding="utf-8").replace(
        f"WIRE_FORMAT_VERSION = {wire.WIRE_FORMAT_VERSION}", "WIRE_FORMAT_VERSION = 1")
    (target / "transfers_wire.py").write_text(stale, encoding="utf-8")
    server = OrthancProcess(name="stalewire", extra_config={
        "Plugins": [PYTHON_PLUGIN], "PythonScript": str(target / "transfers_accelerator.py")})
    try:
        try:
            server.start(timeout=20)
        except Exception:
            pass  # Orthanc may refuse to start without its script: either way the log must say why
        log = server.log_path.read_text(errors="replace")
        assert "stale copy of the wire-format module (version 1" in log
        assert "transfers_wire.py" in log
        if server.process is not None:
            # Started without the accelerator: it must not answer the protocol.
            import urllib.error
            with pytest.raises(urllib.error.HTTPError):
                server.request("POST", wire.URI_LOOKUP, b"[]")
    finally:
        server.stop()
