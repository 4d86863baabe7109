"""Work-arounds for defects of the installed Qt binding.

PySide6 6.12.0: ``SignalInstance.emit()`` and ``SignalInstance.disconnect()``
return ``True`` without taking a reference to it. Every call from Python
then steals one reference of the ``True`` singleton; after a few thousand
signal emissions its count reaches zero and the interpreter aborts with
"Fatal Python error: bool_dealloc". A live transfer emits many signals, so
this is not hypothetical.

``apply()`` checks whether the running binding has the defect (it emits a
signal a few times and watches the count) and, only then, wraps the two
methods to give back the missing reference. A fixed binding is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any, Callable

log = logging.getLogger(__name__)

_PROBES = 16
_applied = False


def _incref() -> Callable[[Any], None]:
    function = ctypes.pythonapi.Py_IncRef
    function.argtypes = [ctypes.py_object]
    function.restype = None
    return function


def _steals_true(call: Callable[[], Any]) -> bool:
    before = sys.getrefcount(True)
    for _ in range(_PROBES):
        call()
    stolen = before - sys.getrefcount(True) >= _PROBES
    if stolen:
        incref = _incref()
        for _ in range(_PROBES):
            incref(True)  # give back what the probe itself took
    return stolen


def _probe_emit() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    return _steals_true(probe.ping.emit)


def _probe_disconnect() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()

    def slot() -> None:
        pass

    def connect_disconnect() -> None:
        probe.ping.connect(slot)
        probe.ping.disconnect(slot)
    return _steals_true(connect_disconnect)


def _returning_reference(method: Callable[..., Any]) -> Callable[..., Any]:
    incref = _incref()

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        if result is True:
            incref(result)  # the reference the binding forgot to take
        return result
    wrapper.__name__ = getattr(method, "__name__", "wrapper")
    wrapper.__doc__ = getattr(method, "__doc__", None)
    return wrapper


def apply() -> None:
    """Install the work-arounds the running binding needs (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True
    try:
        from PySide6.QtCore import SignalInstance
    except ImportError:
        return
    try:
        if _probe_emit():
            SignalInstance.emit = _returning_reference(SignalInstance.emit)
            log.debug("PySide6 SignalInstance.emit reference work-around installed")
        if _probe_disconnect():
            SignalInstance.disconnect = _returning_reference(SignalInstance.disconnect)
            log.debug("PySide6 SignalInstance.disconnect reference work-around installed")
    except (TypeError, AttributeError) as exc:  # an immutable type in some other version
        log.warning("cannot install the PySide6 signal work-around: %s", exc)
