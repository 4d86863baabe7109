"""The Qt user interface (PySide6 on the qasync event loop)."""
