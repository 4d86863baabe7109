"""PyInstaller hook for PySide6.QtGui: PyInstaller's own, without the Qt plugins
the app does not use (packaging/qt_selection.py). The file name says which
module it is for; orthanc_transfers_gui.spec puts this folder in hookspath."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qt_selection import filtered_qt_dependencies  # noqa: E402

hiddenimports, binaries, datas = filtered_qt_dependencies(__file__)
