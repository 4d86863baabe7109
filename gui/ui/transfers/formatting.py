"""Human-readable sizes, rates and durations for the transfers views."""

from __future__ import annotations

from typing import Optional

_UNITS = ("B", "KB", "MB", "GB", "TB")


def human_bytes(value: Optional[float]) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # unreachable, keeps type checkers calm


def human_rate(bytes_per_second: Optional[float]) -> str:
    if not bytes_per_second:
        return "–"
    return human_bytes(bytes_per_second) + "/s"


def human_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def human_ratio(ratio: Optional[float]) -> str:
    return f"{ratio:.2f}×" if ratio else "–"
