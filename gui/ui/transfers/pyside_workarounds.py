"""Guards against a reference-counting bug of PySide6 6.12 on CPython < 3.12.

When a Python ``QAbstractItemModel.data()`` override returns ``None`` (the
normal answer for a role the model does not serve) and Qt calls it from C++
(every repaint of every view), PySide releases one reference to ``None``
too many. ``None`` starts with a few thousand references, so after a few
thousand such calls the interpreter aborts with "deallocating None". Every
model returns ``None`` for unserved roles, so no model code can avoid it.

CPython 3.12 made ``None`` immortal, so the extra releases do nothing there.
On older interpreters we give ``None`` a reference count so large that the
extra releases can never bring it to zero; holding extra references to
``None`` is harmless (it is never freed anyway).
"""

from __future__ import annotations

import ctypes
import sys

_HEADROOM = 1 << 48   # far more releases than a process can ever perform
_applied = False


def protect_none_refcount() -> bool:
    """Apply once per process; True when the guard is active."""
    global _applied
    if _applied:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    # ob_refcnt is the first field of every CPython object (Py_ssize_t).
    refcount = ctypes.c_ssize_t.from_address(id(None))
    refcount.value += _HEADROOM
    _applied = True
    return True
