"""The load soak's short version (issue item 4): ten jobs at once between
three real servers, push, pull and plain, the link to one of them faulty.
The 30-minute run is ``python -m tests.devtools.faults.load --minutes 30``
(figures in docs/reliability.md); this one holds the load for 20 seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.devtools.faults.load import run_load

pytestmark = pytest.mark.timeout(300)


def test_ten_jobs_at_once_for_a_while_end_whole_or_unchanged_and_leave_no_staging(tmp_path: Path) -> None:
    result = asyncio.run(run_load(tmp_path, minutes=20 / 60, jobs=10, seed=5, log=lambda line: None))
    assert result["failed"] == [], result["failed"]
    assert result["jobs_done"] >= 10
    assert set(result["outcomes"]) <= {"completed-verified", "unchanged-clean-failure"}
    assert result["outcomes"].get("completed-verified", 0) >= 10
    assert result["faults_injected"] >= 1
    assert result["staging_bytes_left"] == {"A": 0, "B": 0, "engine": 0}
    assert all(mb > 0 for mb in result["peak_rss_mb"].values()) and len(result["peak_rss_mb"]) == 4
