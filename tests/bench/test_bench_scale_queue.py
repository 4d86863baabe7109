"""The benchmark's scale and queued-jobs rows, in a tiny mode.

Real Orthanc servers and proxies; a 40-instance patient of several studies
for the scale dataset, ten studies of ten instances for the queue. No
figure is asserted, only what the rows must say: the scale dataset runs on
the LAN and is skipped with its reason elsewhere, it is moved as a patient
with the target's staging measured, and the ten queued jobs never ran more
at once than the engine's limit and all finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.devtools.bench.__main__ import main

pytestmark = pytest.mark.timeout(300)


def test_scale_and_queue_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results"
    status = main(["--quick", "--datasets", "scale,queue", "--scale-count", "40", "--links", "lan,wan",
                   "--paths", "builtin,push", "--no-stall-probe", "--out", str(out)])
    assert status == 0
    capsys.readouterr()
    data = json.loads((out / "latest.json").read_text())
    rows = {(r["dataset"], r["link"], r["path"]): r for r in data["measurements"]}

    skipped = rows[("scale", "wan", "skipped")]
    assert skipped["status"] == "skipped" and "LAN only" in skipped["note"]
    assert not [k for k in rows if k[0] == "scale" and k[1] == "wan" and k[2] != "skipped"]

    for path in ("builtin", "push"):
        row = rows[("scale", "lan", path)]
        assert row["status"] == "ok" and row["verified_count"] == row["instances"] == 40, row
    push = rows[("scale", "lan", "push")]
    # All or nothing: the target staged the patient's bytes, never more than its transaction announced.
    assert 0 < push["staging_data_mb"] <= push["staging_reserved_mb"] * 1.001
    assert push["staging_peak_mb"] >= push["staging_data_mb"]
    assert push["planning_seconds"] > 0 and push["db_mb"] > 0

    for link in ("lan", "wan"):
        for path in ("builtin", "push"):
            row = rows[("queue", link, path)]
            assert row["status"] == "ok" and row["verified_count"] == row["instances"] == 100, row
            queue = row["queue"]
            assert queue["jobs"] == 10 and not queue["starved"]
            assert 1 <= queue["max_running"] <= queue["limit"]
            assert sorted(queue["finish_order"]) == list(range(10))
        assert rows[("queue", link, "push")]["queue"]["limit"] == 2   # MaxConcurrentJobs' default

    names = {t["name"]: t for t in data["targets"]}
    assert names["Ten jobs queued at once"]["verdict"] in ("met", "missed")
    # A 40-instance run cannot claim the 20,000-instance targets.
    assert names["Scale, planning 20,000 instances"]["verdict"] in ("not measured", "missed")
    table = (out / "latest.md").read_text()
    assert "Queued jobs" in table and "| staging MB |" in table
