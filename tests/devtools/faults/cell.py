"""Run one matrix cell in a child process (used by the matrix and the soak).

``python -m tests.devtools.faults.cell KEY TRANSPORT WORKDIR SEED`` prints the verdict
as one JSON line. A child process means a cell that hangs or eats memory
(a bug under test) can be stopped without taking the whole run with it;
:func:`run_isolated` then also kills the Orthanc servers the cell started,
found by their configuration path inside the cell's directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from tests.devtools.faults.checker import Outcome, Verdict
from tests.devtools.faults.registry import CellResult, load_all, run_cell_async

ROOT = Path(__file__).resolve().parents[3]


def run_isolated(key: str, transport: str, workdir: Path, seed: int,
                 time_limit: float = 180.0) -> CellResult:
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "tests.devtools.faults.cell", key, transport, str(workdir),
                              str(seed)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        kill_servers_under(workdir)
        return CellResult(key, transport, Verdict(Outcome.FAILED, f"the cell did not end within "
                                                  f"{time_limit:.0f} s (killed)"),
                          time.monotonic() - started)
    kill_servers_under(workdir)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        data = json.loads(lines[-1])
        verdict = Verdict(Outcome(data["outcome"]), data["detail"], data["faults_injected"])
    except (IndexError, ValueError, KeyError):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        verdict = Verdict(Outcome.FAILED, f"the cell process ended with status {child.returncode}: "
                          + " | ".join(tail))
    return CellResult(key, transport, verdict, time.monotonic() - started)


def kill_servers_under(workdir: Path) -> List[int]:
    """Kill leftover Orthanc processes whose configuration lives under ``workdir``."""
    import psutil
    marker = str(workdir.resolve())
    killed = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(marker in part for part in cmdline[1:2]):
            try:
                process.kill()
                killed.append(process.info["pid"])
            except psutil.Error:
                pass
    return killed


def main(argv: List[str]) -> int:
    key, transport, workdir, seed = argv[0], argv[1], Path(argv[2]), int(argv[3])
    item = load_all()[key]
    result = asyncio.run(run_cell_async(item, transport, workdir, seed))
    print(json.dumps({"outcome": result.verdict.outcome.value, "detail": result.verdict.detail,
                      "faults_injected": result.verdict.faults_injected}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
