"""``python -m tests.devtools.faults.matrix``: run every cell of the fault matrix once and
write the table into ``docs/reliability.md``.

Results are kept per cell in ``docs/reliability-results.json``, so a partial
run (``--only reset-upload --transport push``) updates its cells and the
table is regenerated from everything known. The table sits between two
marker comments in the document; the prose around it is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.devtools.faults.checker import Outcome
from tests.devtools.faults.cell import run_isolated
from tests.devtools.faults.registry import TRANSPORTS, CellResult, Scenario, cells, load_all

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "reliability.md"
RESULTS = ROOT / "docs" / "reliability-results.json"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"
COLUMNS = ("push", "pull", "plain", "delegate", "any")
SHORT = {Outcome.COMPLETED_VERIFIED.value: "completed-verified",
         Outcome.UNCHANGED_CLEAN_FAILURE.value: "unchanged-clean-failure",
         Outcome.FAILED.value: "**FAILED**"}


def isolate_user_dirs(base: Path) -> None:
    """Never touch the user's own config, jobs or keyring from a fault run."""
    os.environ["ORTHANC_TRANSFERS_CONFIG"] = str(base / "config" / "config.json")
    os.environ["ORTHANC_TRANSFERS_DATA"] = str(base / "data")
    os.environ["ORTHANC_TRANSFERS_KEYRING"] = "0"


def stop_on_sigterm() -> None:
    """SIGTERM ends a run like Ctrl-C: the running cell's servers are cleaned up."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def load_results(path: Path = RESULTS) -> Dict[str, dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def cell_key(scenario: str, transport: str) -> str:
    return f"{scenario}/{transport}"


def record(results: Dict[str, dict], cell: CellResult) -> None:
    results[cell_key(cell.scenario, cell.transport)] = {
        "outcome": cell.verdict.outcome.value, "detail": cell.verdict.detail,
        "faults_injected": cell.verdict.faults_injected, "seconds": round(cell.seconds, 1),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def render_table(results: Dict[str, dict]) -> str:
    scenarios = load_all()
    lines = ["| scenario | " + " | ".join(COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    notes: List[str] = []      # distinct reasons for n/a, numbered in order of appearance
    failures: List[str] = []
    for group in ("faults", "bad input", "security"):
        lines.append(f"| *{group}* |" + " |" * len(COLUMNS))
        for item in scenarios.values():
            if item.group != group:
                continue
            row = [item.title]
            for column in COLUMNS:
                row.append(_cell_text(item, column, results, notes, failures))
            lines.append("| " + " | ".join(row) + " |")
    out = "\n".join(lines)
    if notes:
        out += "\n\nn/a — not applicable here:\n\n" + "\n".join(
            f"{n}. {reason}" for n, reason in enumerate(notes, 1))
    if failures:
        out += "\n\nFAILED cells (what happened):\n\n" + "\n".join(failures)
    stamps = sorted(r["when"] for r in results.values() if "when" in r)
    if stamps:
        out += f"\n\nLast run of these cells: {stamps[0]} to {stamps[-1]}."
    return out


def _cell_text(item: Scenario, column: str, results: Dict[str, dict], notes: List[str],
               failures: List[str]) -> str:
    if column in item.not_applicable:
        reason = item.not_applicable[column]
        if reason not in notes:
            notes.append(reason)
        return f"n/a ({notes.index(reason) + 1})"
    if column not in item.transports:
        return ""
    result = results.get(cell_key(item.key, column))
    if result is None:
        return "not run"
    if result["outcome"] == Outcome.FAILED.value:
        failures.append(f"- {item.key} / {column}: {result['detail']}")
    return SHORT.get(result["outcome"], result["outcome"])


def write_doc(results: Dict[str, dict], doc: Path = DOC) -> None:
    table = render_table(results)
    text = doc.read_text() if doc.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def selected(only: Optional[List[str]], transports: Optional[List[str]]):
    for item, transport in cells():
        if transport in item.not_applicable:
            continue
        if only and item.key not in only:
            continue
        if transports and transport not in transports:
            continue
        yield item, transport


def run(only: Optional[List[str]], transports: Optional[List[str]], seed: int,
        results_path: Path, doc: Path) -> int:
    results = load_results(results_path)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as tmp:
        isolate_user_dirs(Path(tmp))
        for n, (item, transport) in enumerate(selected(only, transports)):
            cell = run_isolated(item.key, transport, Path(tmp) / f"cell{n}", seed)
            record(results, cell)
            failed += cell.verdict.outcome is Outcome.FAILED
            print(f"{item.key:28} {transport:8} {cell.verdict.outcome.value:24} "
                  f"{cell.seconds:5.1f} s  {cell.verdict.detail[:90]}", flush=True)
            results_path.write_text(json.dumps(results, indent=1, sort_keys=True))
    write_doc(results, doc)
    print(f"table written to {doc}")
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.devtools.faults.matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="scenario key (repeatable)")
    parser.add_argument("--transport", action="append", choices=TRANSPORTS, help="column (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="fault positions (default 0)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    args = parser.parse_args(argv)
    if args.list:
        for item, transport in selected(args.only, args.transport):
            print(f"{item.key} {transport}")
        return 0
    stop_on_sigterm()
    return run(args.only, args.transport, args.seed, args.results, args.doc)


if __name__ == "__main__":
    sys.exit(main())
