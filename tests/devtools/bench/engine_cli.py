"""Run this project's ``send`` command as a subprocess and measure it.

The engine is measured through its command-line contract (``python -m
gui.cli send ... --json``), like any script would use it, so that its peak
memory and CPU time are its own and not the benchmark's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil

CLI_MODULE = "gui.cli"


@dataclass
class EngineRun:
    report: Optional[Dict[str, Any]]   # the --json answer, None when stdout was not JSON
    returncode: int
    seconds: float                     # wall clock, process start to exit
    peak_rss_bytes: int
    cpu_seconds: float
    stderr_tail: str
    db_bytes: Optional[int] = None     # the engine's job database after the run
    staging_peak_bytes: int = 0        # most bytes in the engine's own staging directory (pull spills)

    @property
    def problem(self) -> Optional[str]:
        """What went wrong, in one line, or None."""
        if self.report is None:
            return f"the engine exited with status {self.returncode} without a JSON report: {self.stderr_tail}"
        if self.report.get("state") != "Success":
            failures = self.report.get("failures") or []
            detail = self.report.get("error") or (failures[0].get("reason") if failures else "")
            return f"engine state {self.report.get('state')}: {detail}".strip()
        return None


def _isolated_env(home: Path) -> Dict[str, str]:
    """The engine keeps jobs in its data directory: give each run a fresh one."""
    env = dict(os.environ)
    env["ORTHANC_TRANSFERS_CONFIG"] = str(home / "config.json")
    env["ORTHANC_TRANSFERS_DATA"] = str(home / "data")
    env["ORTHANC_TRANSFERS_KEYRING"] = "0"
    root = str(Path(__file__).resolve().parents[3])  # so "-m gui.cli" works from any directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def cli_command() -> List[str]:
    return [sys.executable, "-m", CLI_MODULE]


def availability() -> Optional[str]:
    """None when ``send`` is usable, else why not (one line)."""
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as home:
        try:
            done = subprocess.run(cli_command() + ["send", "--help"], capture_output=True, text=True,
                                  timeout=60, env=_isolated_env(Path(home)))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run {CLI_MODULE}: {exc}"
    text = done.stdout + done.stderr
    if done.returncode != 0 or "--mode" not in text:
        last = text.strip().splitlines()[-1:] or ["no output"]
        return f"'{CLI_MODULE} send' is not available yet ({last[0][:160]})"
    return None


def _high_water_rss(pid: int) -> int:
    """The kernel's peak RSS of this process image (VmHWM), in bytes; 0 if gone.

    Not ``ru_maxrss`` from wait4: Linux carries the parent's high-water mark
    over fork and exec, so a child started by a big benchmark process would
    report the benchmark's memory, not its own.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rss_tree(proc: psutil.Process) -> int:
    """Peak RSS of the process plus current RSS of its children, if any."""
    total = _high_water_rss(proc.pid) or proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def directory_bytes(root: Path, data_suffix: str = "", data: Optional[List[int]] = None) -> int:
    """Bytes of the regular files below ``root`` (0 if it does not exist); files
    that vanish while it is walked are skipped (a staging area changes all the time).
    ``data``: the sizes of the files whose name ends with ``data_suffix`` are appended to it."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            size = entry.stat(follow_symlinks=False).st_size
                            total += size
                            if data is not None and entry.name.endswith(data_suffix):
                                data.append(size)
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def run(args: List[str], timeout: float = 7200.0, command: Optional[List[str]] = None) -> EngineRun:
    """Run ``send`` with ``args`` (or ``command + args``, e.g. the queued-jobs
    driver); measure peak RSS and CPU seconds of the process tree."""
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as home_str:
        home = Path(home_str)
        out_path, err_path = home / "stdout", home / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.monotonic()
            proc = subprocess.Popen((command or cli_command() + ["send"]) + args, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, env=_isolated_env(home))
        peak = [0]
        staging_peak = [0]
        finished = threading.Event()

        def sample() -> None:
            # VmHWM only grows, so the last sample before exit holds nearly the whole peak.
            try:
                ps = psutil.Process(proc.pid)
                n = 0
                while True:
                    peak[0] = max(peak[0], _rss_tree(ps))
                    if n % 5 == 0:  # every 0.1 s: a directory walk costs more than /proc
                        staging_peak[0] = max(staging_peak[0], directory_bytes(home / "data" / "staging"))
                    n += 1
                    if finished.wait(0.02):
                        break
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = t0 + timeout
        status = None
        usage = None
        while status is None:
            pid, wait_status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = wait_status, ru
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        finished.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
        db = home / "data" / "jobs.sqlite3"
        db_bytes = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) if db.exists() else None
        stdout = out_path.read_text(errors="replace").strip()
        stderr = err_path.read_text(errors="replace").strip()
    report = None
    for line in reversed(stdout.splitlines()):
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        if isinstance(candidate, dict):
            report = candidate
            break
    if report is None and stdout.startswith("{"):
        try:
            report = json.loads(stdout)
        except ValueError:
            report = None
    assert usage is not None
    return EngineRun(report=report, returncode=proc.returncode, seconds=seconds,
                     peak_rss_bytes=peak[0],
                     cpu_seconds=usage.ru_utime + usage.ru_stime,
                     stderr_tail=" | ".join(stderr.splitlines()[-3:])[:400], db_bytes=db_bytes,
                     staging_peak_bytes=staging_peak[0])


BASELINE_PROBE = (
    "import gui.cli, gui.engine\n"
    "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n")


def baseline_rss_bytes() -> Optional[int]:
    """Peak RSS of the interpreter with the CLI and the engine imported and
    nothing done: the part of the engine's RSS that is not buffers."""
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as home:
        try:
            done = subprocess.run([sys.executable, "-c", BASELINE_PROBE], capture_output=True, text=True,
                                  timeout=60, env=_isolated_env(Path(home)))
            return int(done.stdout.strip()) * 1024 if done.returncode == 0 else None
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None
