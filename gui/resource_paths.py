"""Where the app's non-code files live: the top-level ``resources/`` folder.

One rule for every caller (stylesheet, window icon, server plugin, desktop
files): in a source tree that is ``<repo>/resources/``; in a PyInstaller
bundle the spec copies the folder to ``sys._MEIPASS/resources/`` with the
same relative paths. Standard library only, so importing it costs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["resource_path"]

# gui/resource_paths.py -> the repository root is two levels up.
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def resource_path(*parts: str) -> Path:
    """``resources/<parts...>``: beside the ``gui`` package in a source tree,
    inside the bundle when frozen by PyInstaller. The path may not exist."""
    # Looked up on every call (not at import) so tests can set sys._MEIPASS.
    base = getattr(sys, "_MEIPASS", None)
    if base:
        return Path(base, "resources", *parts)
    return _SOURCE_ROOT.joinpath("resources", *parts)
