"""``python -m tests.devtools.faults.soak --minutes 30``: the fault matrix on repeat.

Each run picks a cell at random and a fresh seed, so the faults strike at
other byte positions and other moments each time. At the end (or on Ctrl-C)
it prints how many runs, how many faults were injected, and the outcomes per
cell; the exit status is 1 if any run ended in another state than
completed-verified or unchanged-clean-failure.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.devtools.faults.checker import Outcome
from tests.devtools.faults.cell import run_isolated
from tests.devtools.faults.matrix import isolate_user_dirs, selected, stop_on_sigterm
from tests.devtools.faults.registry import TRANSPORTS


class Tally:
    def __init__(self) -> None:
        self.runs = 0
        self.faults = 0
        self.outcomes: collections.Counter = collections.Counter()
        self.per_cell: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.failures: List[str] = []

    def add(self, cell: str, outcome: Outcome, faults: int, detail: str, seed: int) -> None:
        self.runs += 1
        self.faults += faults
        self.outcomes[outcome.value] += 1
        self.per_cell[cell][outcome.value] += 1
        if outcome is Outcome.FAILED:
            self.failures.append(f"{cell} (seed {seed}): {detail}")

    def summary(self, seconds: float) -> dict:
        return {"runs": self.runs, "faults_injected": self.faults, "minutes": round(seconds / 60, 1),
                "outcomes": dict(self.outcomes),
                "per_cell": {k: dict(v) for k, v in sorted(self.per_cell.items())},
                "failures": self.failures}

    def text(self, seconds: float) -> str:
        lines = [f"soak: {self.runs} runs in {seconds / 60:.1f} min, {self.faults} faults injected",
                 "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))]
        for cell, counts in sorted(self.per_cell.items()):
            lines.append(f"  {cell:38} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        lines += [f"FAILED {f}" for f in self.failures]
        return "\n".join(lines)


def soak(tally: Tally, minutes: float, seed: Optional[int], only: Optional[List[str]],
               transports: Optional[List[str]], max_runs: Optional[int]) -> Tally:
    pool = list(selected(only, transports))
    if not pool:
        raise SystemExit("no cell matches the selection")
    rng = random.Random(seed)
    deadline = time.monotonic() + minutes * 60
    with tempfile.TemporaryDirectory(prefix="fault-soak-") as tmp:
        isolate_user_dirs(Path(tmp))
        while time.monotonic() < deadline and (max_runs is None or tally.runs < max_runs):
            item, transport = rng.choice(pool)
            run_seed = rng.randrange(1, 1 << 30)
            workdir = Path(tmp) / f"run{tally.runs}"
            cell = run_isolated(item.key, transport, workdir, run_seed)
            name = f"{item.key}/{transport}"
            tally.add(name, cell.verdict.outcome, cell.verdict.faults_injected, cell.verdict.detail, run_seed)
            print(f"[{tally.runs:4}] {name:38} seed {run_seed:<10} {cell.verdict.outcome.value:24} "
                  f"{cell.seconds:5.1f} s", flush=True)
            _remove(workdir)
    return tally


def _remove(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)   # a long soak must not fill the disk


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.devtools.faults.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None, help="reproduce a soak (default: random)")
    parser.add_argument("--only", action="append", help="scenario key (repeatable)")
    parser.add_argument("--transport", action="append", choices=TRANSPORTS)
    parser.add_argument("--max-runs", type=int, default=None)
    parser.add_argument("--report", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tally = Tally()
    try:
        stop_on_sigterm()
        soak(tally, args.minutes, args.seed, args.only, args.transport, args.max_runs)
    except KeyboardInterrupt:
        print("interrupted: summary of the runs so far", file=sys.stderr)
    seconds = time.monotonic() - started
    print(tally.text(seconds))
    if args.report:
        args.report.write_text(json.dumps(tally.summary(seconds), indent=1))
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
