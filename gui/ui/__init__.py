"""The Qt user interface (PySide6 on the qasync event loop)."""

from gui.ui import qt_compat as _qt_compat

# Before any widget or model emits a signal (see qt_compat for why).
_qt_compat.apply()
