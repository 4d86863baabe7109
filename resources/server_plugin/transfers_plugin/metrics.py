"""Counters published as Orthanc metrics (GET /tools/metrics-prometheus).

Admins see what the plugin is doing without reading logs: open transactions,
reserved staging bytes, cache use, storage reads for chunk GETs, commits.
"""

from __future__ import annotations

import threading
from typing import Any, Dict

NAMES = (
    "transfers_push_transactions",      # open push transactions
    "transfers_staged_bytes_reserved",  # bytes announced by open transactions
    "transfers_staged_bytes_reserved_peak",  # most bytes announced at once since start (to size MaxStagedSize)
    "transfers_staged_bytes_peak",      # most bytes of received buckets held at once since start
    "transfers_cache_bytes",            # instance files held for chunk GETs
    "transfers_storage_reads",          # instance files read from storage for chunk GETs
    "transfers_cache_hits",             # chunk GETs served from the cache
    "transfers_direct_reads",           # pieces of large instances read from the stored file itself
    "transfers_commits_succeeded",
    "transfers_commits_failed",
    "transfers_commit_imports_at_once",  # most instances the last commit imported at the same time
)


class Metrics:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.lock = threading.Lock()
        self.values: Dict[str, float] = {name: 0 for name in NAMES}
        self.enabled = hasattr(api, "SetMetricsValue") and hasattr(api, "MetricsType")
        for name in NAMES:
            self._publish(name, 0)

    def set(self, name: str, value: float) -> None:
        with self.lock:
            self.values[name] = value
        self._publish(name, value)

    def add(self, name: str, delta: float = 1) -> None:
        with self.lock:
            value = self.values[name] = self.values[name] + delta
        self._publish(name, value)

    def _publish(self, name: str, value: float) -> None:
        if not self.enabled:
            return
        try:
            self.api.SetMetricsValue(name, value, self.api.MetricsType.DEFAULT)
        except Exception:  # metrics are a convenience: never fail a request for them
            self.enabled = False
