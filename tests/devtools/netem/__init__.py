"""WAN emulation for tests and the benchmark: a shaping, fault-injecting TCP proxy."""

from tests.devtools.netem.wan_proxy import Direction, Fault, FaultKind, LinkStats, ThreadedWanProxy, WanProxy

__all__ = ["Direction", "Fault", "FaultKind", "LinkStats", "ThreadedWanProxy", "WanProxy"]
