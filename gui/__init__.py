"""Orthanc Transfers: fast, verified, all-or-nothing transfers between Orthanc servers."""

__version__ = "0.1.0"


def _map_checkout_resources() -> None:
    """Imported straight from a source checkout, make its top-level
    ``resources/`` folder the package ``gui.resources``, as the build does
    (pyproject.toml, package-dir). An installed or frozen ``gui`` has a real
    ``gui/resources/`` and is left alone; so is any other layout, where
    importing ``gui.resources`` then fails and names the package."""
    import importlib.util
    import os
    import sys

    if "gui.resources" in sys.modules:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "resources")):
        return
    root = os.path.dirname(here)
    init = os.path.join(root, "resources", "__init__.py")
    if not (os.path.isfile(init) and os.path.isfile(os.path.join(root, "pyproject.toml"))):
        return
    # This checkout's folder, not the one an editable install of another
    # checkout (a git worktree) would map.
    spec = importlib.util.spec_from_file_location(
        "gui.resources", init, submodule_search_locations=[os.path.dirname(init)])
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["gui.resources"] = module
    spec.loader.exec_module(module)
    globals()["resources"] = module


_map_checkout_resources()
