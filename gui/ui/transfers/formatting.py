"""Human-readable sizes, rates and durations for the transfers views
(``human_bytes`` is gui/formatting.py's, shared with the command line)."""

from __future__ import annotations

from typing import Optional

from gui.formatting import human_bytes

__all__ = ["human_bytes", "human_rate", "human_duration", "human_ratio", "compression_summary", "person_name",
           "dicom_date"]


def person_name(value: str) -> str:
    """DICOM ``Family^Given^Middle`` read as the panes show it: ``Family Given Middle``."""
    return " ".join(part for part in value.split("^") if part).strip()


def dicom_date(value: str) -> str:
    """``20250423`` -> ``2025-04-23``; anything else as it is."""
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


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


def compression_summary(mode: Optional[str], requested: Optional[str], used: Optional[str] = None) -> str:
    """One truthful sentence about compression, the same in the confirmation, the job's
    header and the Ratio column: what was chosen and why."""
    if mode in ("plain", "upload"):
        if mode == "upload":
            return "none (local files are uploaded as they are)"
        return ("HTTP gzip on downloads where it pays; uploads compressed (deflated ZIP or gzip) "
                "towards a distant target while the data shrinks, else as they are (plain REST)")
    if mode == "delegate":
        return "chosen by the source's transfers plugin"
    requested = requested or "auto"
    if requested != "auto":
        return f"{requested} (set in the transfer options)"
    if used:
        return f"{used} (auto: chosen by measuring the first bucket against the link speed)"
    return "auto: gzip or none, decided by measuring the first bucket against the link speed"
