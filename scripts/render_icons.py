"""Render the application icon's PNG sizes (and .ico/.icns) from its SVG.

    python scripts/render_icons.py

The one source is resources/icons/orthanc-transfers.svg: the icon the app
shows in its windows and the "scalable" icon for desktops. This writes
beside it, in resources/icons/, for desktops and installers:

- orthanc-transfers-<N>.png for N in 16, 32, 48, 64, 128, 256;
- orthanc-transfers.ico (Windows executables) and orthanc-transfers.icns
  (macOS), both as containers of PNG images, which every Windows since Vista
  and macOS since 10.7 read.

Rendering uses Qt's SVG renderer offscreen, so no display is needed. The
outputs are committed; run this again after changing the SVG.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Dict, Iterable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
ICON_NAME = "orthanc-transfers"
ICON_DIR = ROOT / "resources" / "icons"
SOURCE_SVG = ICON_DIR / f"{ICON_NAME}.svg"
PNG_SIZES = (16, 32, 48, 64, 128, 256)
ICO_SIZES = (16, 32, 48, 64, 128, 256)
# ICNS element types holding PNG data, by pixel size (the @2x types reuse sizes).
ICNS_TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09"}


def render_png(svg_path: Path, size: int) -> bytes:
    """The SVG drawn into a transparent size x size image, as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 - Qt needs one
    renderer = QSvgRenderer(str(svg_path))
    if not renderer.isValid():
        raise SystemExit(f"render_icons: {svg_path} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise SystemExit(f"render_icons: Qt could not encode the {size} px PNG")
    buffer.close()
    return bytes(data.data())


def ico_bytes(pngs: Dict[int, bytes], sizes: Iterable[int]) -> bytes:
    """A Windows .ico file whose images are PNGs."""
    sizes = list(sizes)
    header = struct.pack("<HHH", 0, 1, len(sizes))  # reserved, type 1 = icon, count
    directory = b""
    payload = b""
    offset = len(header) + 16 * len(sizes)
    for size in sizes:
        data = pngs[size]
        # Width and height 0 mean 256; 32 bits per pixel; 1 colour plane.
        side = 0 if size >= 256 else size
        directory += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset)
        payload += data
        offset += len(data)
    return header + directory + payload


def icns_bytes(pngs: Dict[int, bytes]) -> bytes:
    """A macOS .icns file whose images are PNGs."""
    elements = b"".join(ICNS_TYPES[size] + struct.pack(">I", 8 + len(data)) + data
                        for size, data in sorted(pngs.items()) if size in ICNS_TYPES)
    return b"icns" + struct.pack(">I", 8 + len(elements)) + elements


def main() -> int:
    svg = SOURCE_SVG
    if not svg.is_file():
        print(f"render_icons: {svg} is missing", file=sys.stderr)
        return 1
    pngs = {size: render_png(svg, size) for size in sorted(set(PNG_SIZES) | {512})}
    for size in PNG_SIZES:
        target = ICON_DIR / f"{ICON_NAME}-{size}.png"
        target.write_bytes(pngs[size])
        print(f"wrote {target.relative_to(ROOT)}")
    for target, data in ((ICON_DIR / f"{ICON_NAME}.ico", ico_bytes(pngs, ICO_SIZES)),
                         (ICON_DIR / f"{ICON_NAME}.icns", icns_bytes(pngs))):
        target.write_bytes(data)
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
