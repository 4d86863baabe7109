"""Sizes for people, shared by the command line and the window (Qt-free)."""

from __future__ import annotations

from typing import Optional

_UNITS = ("B", "KB", "MB", "GB", "TB")


def human_bytes(value: Optional[float]) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1024); None -> ``–``."""
    if value is None:
        return "–"
    size = float(value)
    for unit in _UNITS[:-1]:
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} {_UNITS[-1]}"
