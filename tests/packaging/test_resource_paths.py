"""One rule for the app's non-code files: the package gui.resources, which is
the top-level resources/ folder in a source tree (the wheel and the bundle
are checked in test_wheel.py and scripts/smoke_bundle.sh)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gui.resources
from gui.resource_paths import MissingResourceError, resource_path, resources_root

ROOT = Path(__file__).resolve().parents[2]


def test_source_tree_resources_are_the_top_level_folder_of_this_checkout() -> None:
    assert resources_root() == ROOT / "resources"
    assert Path(gui.resources.__file__) == ROOT / "resources" / "__init__.py"
    for parts in (("style.qss",), ("icons", "orthanc-transfers.svg"),
                  ("server_plugin", "transfers_accelerator.py"), ("orthanc-transfers-gui.desktop",)):
        assert resource_path(*parts).is_file(), f"{'/'.join(parts)} is missing from resources/"


def test_the_checkout_wins_over_another_checkouts_editable_install(tmp_path: Path) -> None:
    """A git worktree imported through PYTHONPATH uses its own resources/,
    even when the environment's editable install maps another checkout."""
    out = subprocess.run([sys.executable, "-c", "from gui.resource_paths import resources_root;"
                          "print(resources_root())"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert Path(out.strip()) == ROOT / "resources"


def test_a_missing_resource_is_an_error_naming_it() -> None:
    with pytest.raises(MissingResourceError, match="icons/absent.svg"):
        resource_path("icons", "absent.svg")


def test_the_sandbox_and_the_ui_use_the_same_rule() -> None:
    from gui.sandbox import orthanc_process
    assert orthanc_process.accelerator_plugin_script() == \
        resource_path("server_plugin", "transfers_accelerator.py")


def test_the_app_applies_the_stylesheet_from_resources(qapp: Any) -> None:
    """What the user sees: the app's look comes from resources/style.qss."""
    from gui import app as app_module
    previous = qapp.styleSheet()
    try:
        app_module._apply_look(qapp)
        assert qapp.styleSheet() == resource_path("style.qss").read_text(encoding="utf-8")
        assert not qapp.windowIcon().isNull()
    finally:
        qapp.setStyleSheet(previous)


def test_the_app_refuses_to_start_without_its_stylesheet(qapp: Any, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from gui import app as app_module
    from gui import resource_paths
    (tmp_path / "icons").mkdir()
    monkeypatch.setattr(resource_paths, "resources_root", lambda: tmp_path)
    with pytest.raises(MissingResourceError, match="icons/orthanc-transfers.svg|style.qss"):
        app_module._apply_look(qapp)
