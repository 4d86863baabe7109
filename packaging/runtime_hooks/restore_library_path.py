"""PyInstaller run-time hook: programs the frozen app starts get the user's
library path, not the bundle's.

On Linux the bundle's loader puts its own ``_internal`` folder on
LD_LIBRARY_PATH (keeping any earlier value in LD_LIBRARY_PATH_ORIG). Child
processes inherit it, so Orthanc started for the demo loaded the bundle's
libpython into its Python plugin and failed ("No module named 'zlib'").
The running app does not need the variable any more: the dynamic loader read
it when the process started.
"""

import os
import sys

_bundle = getattr(sys, "_MEIPASS", None)
if _bundle and sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd", "sunos")):
    _original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if _original is not None:
        os.environ["LD_LIBRARY_PATH"] = _original
    else:
        _kept = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
                 if p and os.path.realpath(p) != os.path.realpath(_bundle)]
        if _kept:
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(_kept)
        else:
            os.environ.pop("LD_LIBRARY_PATH", None)
