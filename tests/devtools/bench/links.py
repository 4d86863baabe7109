"""The emulated links the benchmark measures every path through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Link:
    name: str
    description: str
    one_way_ms: float               # a round trip is twice this
    bandwidth_mbit: Optional[float]  # per direction; None = unshaped

    @property
    def bandwidth_bytes_s(self) -> Optional[float]:
        return None if self.bandwidth_mbit is None else self.bandwidth_mbit * 1_000_000 / 8


LINKS: Dict[str, Link] = {
    "lan": Link("lan", "LAN (proxy, no shaping)", 0.0, None),
    "wan": Link("wan", "WAN (40 ms round trip, 50 Mbit/s)", 20.0, 50.0),
    "poorwan": Link("poorwan", "poor WAN (150 ms round trip, 10 Mbit/s)", 75.0, 10.0),
}


def link(name: str) -> Link:
    try:
        return LINKS[name]
    except KeyError:
        raise ValueError(f"unknown link {name!r}; choose from {', '.join(LINKS)}") from None
