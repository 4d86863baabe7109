"""The benchmark in a tiny mode: it keeps working, and its outputs are complete.

Real Orthanc servers, the real proxies, 3 CT slices, the LAN and the WAN
link. No figure is asserted: only that every path ran, that every instance
arrived intact, and that the table and JSON carry every column.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import fields
from pathlib import Path

import pytest

from tests.devtools.bench.__main__ import main
from tests.devtools.bench.runner import Measurement

pytestmark = pytest.mark.timeout(240)

ENGINE_CLI_PRESENT = importlib.util.find_spec("gui.cli") is not None


def test_tiny_benchmark_writes_complete_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results"
    status = main(["--datasets", "ct", "--ct-slices", "3", "--links", "lan,wan",
                   "--paths", "builtin,naive,plain,ceiling", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out

    data = json.loads((out / "latest.json").read_text())
    rows = data["measurements"]
    assert [(r["link"], r["path"]) for r in rows] == [
        ("lan", "builtin"), ("lan", "naive"), ("lan", "plain"), ("lan", "ceiling"),
        ("wan", "builtin"), ("wan", "naive"), ("wan", "plain"), ("wan", "ceiling")]
    expected_keys = {f.name for f in fields(Measurement)}
    for row in rows:
        assert set(row) == expected_keys
        if row["path"] == "plain" and not ENGINE_CLI_PRESENT:
            assert row["status"] == "unavailable" and "gui.cli" in row["note"]
            continue
        # Every path that ran moved the 3 slices intact (MD5 source == target).
        assert row["status"] == "ok", row
        assert row["verified"] is True and row["verified_count"] == row["instances"] == 3
        assert row["seconds"] > 0 and row["mb_per_s"] > 0
        assert row["wire_bytes"] >= row["data_bytes"] * 0.3   # the data did cross the proxy
        if row["link"] == "lan":
            assert row["utilization"] is None
        else:
            assert 0 < row["utilization"] <= 1.5
        if row["path"] == "builtin":
            assert row["speedup"] == pytest.approx(1.0)
        else:
            assert row["speedup"] > 0
        if row["path"] == "plain":
            assert row["peak_rss_mb"] > 0 and row["cpu_seconds"] > 0
            # The job's own seconds, within the process's (interpreter start-up added).
            assert row["seconds"] == row["engine_seconds"] <= row["process_seconds"]
        else:
            assert row["process_seconds"] is None
        if row["path"] == "ceiling":
            # The target's ingest alone, tried with each client count; the best is kept.
            assert "4 clients" in row["note"] and "16 clients" in row["note"] and "best:" in row["note"]

    assert data["machine"]["orthanc"] and data["machine"]["nproc"] >= 1
    assert {t["name"] for t in data["targets"]} >= {"WAN, CT study", "WAN, tiny instances",
                                                     "Event loop during a transfer"}
    assert all(t["verdict"] in ("met", "missed", "not measured") for t in data["targets"])
    assert "max_ms" in data["stall"] or "note" in data["stall"]

    table = (out / "latest.md").read_text()
    assert table in printed + "\n" or table.strip() in printed
    assert "| dataset | link | path | seconds | process s | MB/s | wire MB | link use | speed-up" in table
    assert table.count("| ct | ") == 8
    plain_ct_lan = next(t for t in data["targets"] if t["name"] == "Plain, ct, LAN")
    assert "ingest ceiling" in plain_ct_lan["measured"]


def test_unknown_names_are_refused_with_the_choices(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--links", "moon"])
    assert exit_info.value.code == 2
    assert "choose from lan, wan, poorwan" in capsys.readouterr().err
