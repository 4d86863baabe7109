"""Which parts of Qt go into the bundle.

Used twice by the PyInstaller build: by the hooks in packaging/hooks/, so
unwanted Qt plugins are never collected (and their libraries, e.g. GTK for
the GTK theme, never analysed), and by orthanc_transfers_gui.spec as a last
filter over everything collected. Standard library only, so the tests can
import it without PyInstaller; PyInstaller is imported only by
``filtered_qt_dependencies``, which the hooks call.

Paths are bundle paths with "/" or "\\" separators, in the layouts of the
PySide6 wheels: ``PySide6/Qt/plugins/<type>/libq*.so`` and
``PySide6/Qt/lib/libQt6*.so.6`` (Linux), ``PySide6/plugins/<type>/q*.dll`` and
``PySide6/Qt6*.dll`` (Windows), ``PySide6/Qt/lib/Qt*.framework/...`` (macOS).
"""

from __future__ import annotations

import os
import re
from typing import List, Tuple

# Plugin types we take, and which plugins of each (names without "lib" and
# extension). Covers Linux (xcb, wayland), Windows and macOS.
QT_PLUGINS_KEPT = {
    "platforms": {"qoffscreen", "qminimal", "qxcb", "qwayland", "qwayland-generic",
                  "qwayland-egl", "qwindows", "qcocoa"},
    "imageformats": {"qsvg", "qjpeg", "qico", "qgif"},
    "iconengines": {"qsvgicon"},
    # Desktop portal: native file dialogs under Flatpak and recent desktops.
    "platformthemes": {"qxdgdesktopportal"},
    # Dead keys and input methods when typing in text fields.
    "platforminputcontexts": {"composeplatforminputcontextplugin", "ibusplatforminputcontextplugin"},
    "wayland-shell-integration": {"xdg-shell"},
    "wayland-decoration-client": {"bradient", "adwaita"},
}
# Plugin types dropped whole: kiosk/embedded back ends, QML tooling, and
# modules the app does not use. Types in neither table ("styles" on Windows
# and macOS, "platforms/darwin", "xcbglintegrations"...) are kept whole.
QT_PLUGIN_TYPES_DROPPED = {
    "egldeviceintegrations", "generic", "qmltooling", "sqldrivers", "designer",
    "wayland-graphics-integration-server", "wayland-graphics-integration-client",
    "vectorimageformats", "networkinformation", "networkaccess", "bearer", "tls",
    "printsupport", "multimedia", "renderers", "sceneparsers", "geometryloaders",
    "position", "sensors", "texttospeech", "virtualkeyboard", "webview", "scenegraph",
}
# Qt libraries only needed by what is dropped above (matched on the module
# name: "Quick" in libQt6Quick.so.6, Qt6Quick.dll, QtQuick.framework).
QT_LIBRARIES_DROPPED = re.compile(
    r"^(Quick.*|Qml.*|LabsStyleKit|Pdf.*|VirtualKeyboard.*|WebEngine.*|WebChannel.*|WebSockets"
    r"|WebView.*|3D.*|Multimedia.*|SpatialAudio|ShaderTools|Designer.*|Help|UiTools|Sql"
    r"|Test|Charts.*|DataVisualization.*|Graphs.*|Positioning.*|Sensors.*|TextToSpeech"
    r"|WaylandCompositor.*|WaylandEgl.*|WlShellIntegration|EglFS.*|EglFs.*|Concurrent"
    r"|PrintSupport)$")
# Translations of Qt's own texts (7 MB): none. The app's interface is in
# English and installs no QTranslator, so Qt would never load them; keep
# "qt_*.qm" and "qtbase_*.qm" here the day it does.
QT_TRANSLATIONS_KEPT = re.compile(r"^$")

_PLUGIN_RE = re.compile(r"(?:^|/)plugins/([^/]+)/([^/]+)$")
_QT_LIB_RE = re.compile(
    r"(?:^|/)(?:lib)?Qt6?([A-Za-z0-9]+?)(?:\.framework(?:/.*)?|\.so(?:\.[0-9.]+)?|\.dll|\.dylib)$")
_TRANSLATION_RE = re.compile(r"(?:^|/)translations/([^/]+)$")


def _plugin_stem(filename: str) -> str:
    stem = filename.split(".")[0]
    if stem.startswith("lib"):
        stem = stem[3:]
    return stem.lower()


def keep_bundle_file(dest_name: str) -> bool:
    """Whether a collected file (its path inside the bundle) stays in it."""
    dest = dest_name.replace("\\", "/")
    if not dest.startswith("PySide6/") and "/PySide6/" not in dest:
        return True
    plugin = _PLUGIN_RE.search(dest)
    if plugin:
        kind, filename = plugin.groups()
        if kind in QT_PLUGIN_TYPES_DROPPED:
            return False
        if kind in QT_PLUGINS_KEPT:
            return _plugin_stem(filename) in QT_PLUGINS_KEPT[kind]
        return True
    translation = _TRANSLATION_RE.search(dest)
    if translation:
        return bool(QT_TRANSLATIONS_KEPT.match(translation.group(1)))
    library = _QT_LIB_RE.search(dest)
    if library and "/plugins/" not in dest:
        return not QT_LIBRARIES_DROPPED.match(library.group(1))
    return True


def filtered_qt_dependencies(hook_file: str) -> Tuple[List[str], list, list]:
    """PyInstaller's own Qt hook result for the module a hook file is named
    after (hook-PySide6.QtGui.py), minus what keep_bundle_file refuses."""
    from PyInstaller.utils.hooks.qt import add_qt6_dependencies

    hiddenimports, binaries, datas = add_qt6_dependencies(hook_file)

    def kept(entries: list) -> list:
        return [(src, dest_dir) for src, dest_dir in entries
                if keep_bundle_file(os.path.join(dest_dir, os.path.basename(src)))]

    return hiddenimports, kept(binaries), kept(datas)
