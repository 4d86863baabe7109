"""Orthanc Transfers: the accelerator protocol for stock Orthanc, via orthanc-python.

Load it with the Orthanc configuration::

    "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so"],
    "PythonScript": "/path/to/server_plugin/transfers_accelerator.py",
    "Transfers": { "MaxPushTransactions": 4, "CacheSize": 512 }

It serves POST /transfers/lookup, GET /transfers/chunks/..., the push
transactions under /transfers/push and GET /transfers/peers, exactly as the
C++ transfers plugin does (see docs/server-plugin.md). Standard library only.
"""

import os
import sys

import orthanc

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
if PLUGIN_DIR not in sys.path:
    sys.path.insert(0, PLUGIN_DIR)

from transfers_plugin.wire_loader import load_wire  # noqa: E402

try:
    # The wire module first: the plugin's modules use it (codec.py) as they load.
    WIRE = load_wire(PLUGIN_DIR)
    from transfers_plugin.plugin import install
    TRANSFERS = install(orthanc, WIRE)
except Exception as exc:  # say why in Orthanc's log rather than a bare traceback
    orthanc.LogError("transfers: the accelerator plugin could not start: %s" % exc)
    raise
