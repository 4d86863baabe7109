"""One rule for the app's non-code files: resources/, in a source tree and frozen."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from gui.resource_paths import resource_path

ROOT = Path(__file__).resolve().parents[2]


def test_source_tree_resources_are_under_the_top_level_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "_MEIPASS", raising=False)
    assert resource_path() == ROOT / "resources"
    for parts in (("style.qss",), ("icons", "orthanc-transfers.svg"),
                  ("server_plugin", "transfers_accelerator.py"), ("orthanc-transfers-gui.desktop",)):
        assert resource_path(*parts).is_file(), f"{'/'.join(parts)} is missing from resources/"


def test_frozen_resources_are_under_the_bundles_resources_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "_internal"), raising=False)
    assert resource_path("icons", "orthanc-transfers.svg") == \
        tmp_path / "_internal" / "resources" / "icons" / "orthanc-transfers.svg"


def test_the_sandbox_and_the_ui_use_the_same_rule() -> None:
    from gui.sandbox import orthanc_process
    assert orthanc_process.resource_path is resource_path
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
