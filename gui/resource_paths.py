"""Where the app's non-code files live: the package ``gui.resources``.

One rule for every caller (stylesheet, window icon, server plugin, desktop
files), found with ``importlib.resources`` in every mode: the build installs
the repository's top-level ``resources/`` folder as ``gui.resources``
(pyproject.toml), a source checkout maps the same folder (gui/__init__.py),
and the PyInstaller bundle carries it as ``gui/resources/`` beside the
frozen package. Standard library only, so importing it costs nothing.

A missing file is an error that names it: the app never runs without its
stylesheet, nor the demo without its server plugin, without saying so.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["MissingResourceError", "resource_path", "resources_root"]

PACKAGE = "gui.resources"


class MissingResourceError(FileNotFoundError):
    """A file the app ships is not where the installation should have put it."""


def resources_root() -> Path:
    """The folder of the ``gui.resources`` package on disk."""
    try:
        root = files(PACKAGE)
    except ModuleNotFoundError as exc:
        raise MissingResourceError(
            f"the package {PACKAGE} (the app's resources/ folder) is not installed: {exc}") from exc
    # Orthanc loads the server plugin by file name and Qt opens icons by file
    # name, so the resources must be real files (not inside a zip archive).
    if not isinstance(root, Path):
        raise MissingResourceError(f"the package {PACKAGE} is not a folder on disk ({root!r})")
    return root


def resource_path(*parts: str) -> Path:
    """``resources/<parts...>``, which must exist (file or folder);
    :class:`MissingResourceError` naming it otherwise."""
    root = resources_root()
    path = root.joinpath(*parts)
    if not path.exists():
        raise MissingResourceError(f"resource {'/'.join(parts) or '.'} is missing (looked in {root})")
    return path
