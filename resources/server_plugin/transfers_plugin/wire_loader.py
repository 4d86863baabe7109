"""Find the wire-format module shared with the desktop app.

Three layouts are supported:

- an admin copied this folder elsewhere together with ``transfers_wire.py``
  (a copy of ``gui/protocol/wire.py``, see ``install_wire.py``; the
  PyInstaller bundle carries one too): that copy, next to the entry script,
  wins;
- the plugin runs from a source checkout: ``../../gui/protocol/wire.py``;
- the plugin runs from an installed app (wheel), where this folder is
  ``gui/resources/server_plugin``: ``../../protocol/wire.py``.

The module is loaded by file path. The ``gui`` package itself is never
imported: it would pull in httpx and Qt, which Orthanc's embedded Python
does not have.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import List

MODULE_NAME = "transfers_wire"
# The wire format this plugin is written for (gui/protocol/wire.py's
# WIRE_FORMAT_VERSION): a copy of another version is refused, since a plugin
# that parses buckets by other rules than the sender would corrupt imports.
EXPECTED_WIRE_FORMAT = 3


def candidates(plugin_dir: str) -> List[str]:
    return [
        os.path.join(plugin_dir, MODULE_NAME + ".py"),
        os.path.normpath(os.path.join(plugin_dir, "..", "..", "gui", "protocol", "wire.py")),
        os.path.normpath(os.path.join(plugin_dir, "..", "..", "protocol", "wire.py")),
    ]


def load_wire(plugin_dir: str) -> ModuleType:
    for path in candidates(plugin_dir):
        if not os.path.isfile(path):
            continue
        spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        # dataclasses look the module up in sys.modules while the file runs.
        sys.modules[MODULE_NAME] = module
        spec.loader.exec_module(module)
        version = getattr(module, "WIRE_FORMAT_VERSION", None)
        if version != EXPECTED_WIRE_FORMAT:
            del sys.modules[MODULE_NAME]
            raise ImportError("transfers plugin: %s is a stale copy of the wire-format module (version %s,"
                              " this plugin needs version %d); copy gui/protocol/wire.py there again"
                              " (python3 install_wire.py)" % (path, version if version is not None else "none",
                                                              EXPECTED_WIRE_FORMAT))
        return module
    raise ImportError("transfers plugin: the wire-format module was not found; looked for %s. Copy"
                      " gui/protocol/wire.py next to transfers_accelerator.py as transfers_wire.py"
                      % ", ".join(candidates(plugin_dir)))
