"""A ``PythonScript`` for Orthanc that loads the accelerator plugin and traces it.

Used by ``python -m tests.devtools.push_timeline``: every bucket PUT, the
commit's verification, each import and the commit as a whole are written
as lines ``<wall-clock time> <event> <details>`` to ``push-trace.log`` in
the server's storage directory, so that the plugin's timeline can be laid
beside the engine's. Not part of the product: the plugin itself is loaded
unchanged, and only its methods are wrapped, after it installed itself.
"""

import json
import os
import sys
import threading
import time

import orthanc

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "resources", "server_plugin")
sys.path.insert(0, PLUGIN_DIR)

import transfers_accelerator  # noqa: E402  (installs the plugin)
from transfers_plugin import commit as commit_module  # noqa: E402
from transfers_plugin import plugin as plugin_module  # noqa: E402
from transfers_plugin import staging as staging_module  # noqa: E402

_storage = json.loads(orthanc.GetConfiguration()).get("StorageDirectory") or "."
_path = os.path.join(_storage, "push-trace.log")
_lock = threading.Lock()
_out = open(_path, "a", buffering=1)


def trace(event, detail=""):
    line = "%.6f %s %s %s\n" % (time.time(), threading.current_thread().name, event, detail)
    with _lock:
        _out.write(line)


def _wrap(owner, name, describe):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        detail = describe(*args, **kwargs)
        trace(name + ":begin", detail)
        try:
            return original(*args, **kwargs)
        finally:
            trace(name + ":end", detail)

    setattr(owner, name, wrapper)


_wrap(staging_module.TransactionStore, "put_bucket",
      lambda self, txn, index, body: "%s %d" % (index, len(body)))
_wrap(staging_module.TransactionStore, "begin_commit", lambda self, txn: txn.id)
_wrap(staging_module.TransactionStore, "end_commit", lambda self, txn, success: str(success))
_wrap(commit_module, "verify", lambda txn: str(len(txn.instances)))
_wrap(commit_module.Importer, "import_all",
      lambda self, txn, instances=None, created_before=(): str(len(instances) if instances is not None
                                                               else len(txn.instances)))
_wrap(commit_module.Importer, "import_one", lambda self, txn, info, existed=None: info.id[:8])
_wrap(plugin_module, "verify_and_import", lambda importer, txn, arrival=None: txn.id)
trace("loaded", transfers_accelerator.__name__)
