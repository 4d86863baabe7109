"""``python -m tests.devtools.faults.load --minutes 30``: load held for a while.

Three real Orthanc servers (A and B run this project's plugin, C is stock),
ten routes between them in push, pull and plain modes, one engine keeping
ten jobs in flight: as soon as a job ends, the next one of its route
starts. Every route has a study of its own, so no two jobs race on one
study. The link towards B goes through the WAN proxy, re-armed every few
seconds with a reset after a random number of bytes or a corrupted byte
(``faults_injected`` counts those that fired, ``faults_armed`` all).

After each job its target must hold the study whole with the source's MD5s
(Success) or not at all (a clean failure, with a reason); anything else,
a partial study or a Success over a missing instance, is FAILED. A
successful study is then deleted from its target, so the next job sends it
again. At the end: jobs done, faults injected, outcomes per route, the
peak RSS of the engine's process and of each Orthanc, and the staging bytes
left behind (the plugins' staging areas and the engine's, which must be
0). Exit status 1 if anything was FAILED or staging bytes remain.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import psutil

from gui.config.settings import TransferOptions
from tests.devtools.faults.lab import Lab
from tests.devtools.netem.wan_proxy import Direction, Fault, FaultKind

# (source, target, mode): ten routes, every mode, B behind the faulty link.
ROUTES: List[Tuple[str, str, str]] = [
    ("A", "B", "push"), ("A", "C", "pull"), ("C", "B", "push"), ("C", "A", "push"), ("B", "C", "pull"),
    ("B", "A", "push"), ("A", "C", "plain"), ("C", "B", "plain"), ("B", "A", "plain"), ("A", "B", "pull"),
]


def _tree_bytes(root: Path, skip: Tuple[str, ...] = ()) -> int:
    total = 0
    if not root.exists():
        return 0
    for path in root.rglob("*"):
        if path.is_file() and not any(part in skip for part in path.relative_to(root).parts):
            total += path.stat().st_size
    return total


class Memory:
    """Peak RSS of this process and of each server, sampled every ``every`` seconds."""

    def __init__(self, servers: Dict[str, Any]) -> None:
        self.peaks: Dict[str, int] = collections.defaultdict(int)
        self.servers = servers
        self.curve: List[Dict[str, Any]] = []   # (time, jobs done, RSS MB of each process)

    def sample(self) -> None:
        self.peaks["engine"] = max(self.peaks["engine"], psutil.Process().memory_info().rss)
        for name, server in self.servers.items():
            if server.process is not None:
                try:
                    rss = psutil.Process(server.process.pid).memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[f"orthanc {name}"] = max(self.peaks[f"orthanc {name}"], rss)

    def point(self, seconds: float, done: int) -> None:
        """One point of the RSS curve: whether memory follows the job count or levels off."""
        row: Dict[str, Any] = {"s": round(seconds), "jobs": done,
                               "engine": round(psutil.Process().memory_info().rss / 2 ** 20)}
        for name, server in self.servers.items():
            if server.process is not None:
                try:
                    row[name] = round(psutil.Process(server.process.pid).memory_info().rss / 2 ** 20)
                except psutil.Error:
                    pass
        self.curve.append(row)


async def run_load(workdir: Path, minutes: float, jobs: int = 10, seed: int = 0,
                   log: Any = print) -> Dict[str, Any]:
    lab = Lab(workdir, seed)
    started = time.monotonic()
    try:
        servers = dict(zip("ABC", await asyncio.gather(lab.orthanc("A", True), lab.orthanc("B", True),
                                                       lab.orthanc("C", False))))
        proxy = await lab.proxy(servers["B"])
        urls = {"A": servers["A"].url, "B": proxy.url, "C": servers["C"].url}
        routes = ROUTES[:jobs]
        studies = []
        for n, (src, _dst, _mode) in enumerate(routes):
            studies.append(await lab.seed_study(servers[src], seed=seed * 100 + n))
        expected = [await asyncio.to_thread(_study_md5s, servers[src], study[0]["ID"])
                    for (src, _d, _m), study in zip(routes, studies)]
        options = TransferOptions(Threads=2, BucketSize=256, MaxHttpRetries=3, HttpTimeout=10,
                                  PeerCommitTimeout=60)
        from gui.engine import TransferEngine
        engine = TransferEngine(options, data_dir=workdir / "engine")
        await engine.start()
        memory = Memory(servers)
        outcomes: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        failed: List[str] = []
        reasons: collections.Counter = collections.Counter()
        done = 0
        deadline = time.monotonic() + minutes * 60
        curve_every = max(5, int(minutes * 60 / 30))  # about 30 points whatever the length

        async def faults() -> None:
            # Armed on every new connection until one fires (the next
            # connection alone is often a tiny probe that never reaches the
            # byte), then cleared until the next one.
            while True:
                await asyncio.sleep(lab.rng.uniform(2, 6))
                kind = FaultKind.CORRUPT if lab.rng.random() < 0.3 else FaultKind.RESET
                fired = proxy.stats.faults_fired
                proxy.arm(Fault(kind, lab.rng.choice([Direction.UP, Direction.DOWN]),
                                after_bytes=lab.rng.randint(5_000, 300_000), every_connection=True))
                lab.faults_injected += 1
                for _ in range(50):
                    if proxy.stats.faults_fired > fired:
                        break
                    await asyncio.sleep(0.1)
                proxy.clear_faults()

        async def sampler() -> None:
            ticks = 0
            while True:
                memory.sample()
                if ticks % curve_every == 0:
                    memory.point(time.monotonic() - started, done)
                    log(f"rss {memory.curve[-1]}")
                ticks += 1
                await asyncio.sleep(1.0)

        async def route(n: int) -> None:
            nonlocal done
            src, dst, mode = routes[n]
            key = f"{src}->{dst} {mode}"
            while time.monotonic() < deadline:
                job = await engine.submit(lab.peer(src, urls[src]), lab.peer(dst, urls[dst]), studies[n],
                                          options, mode=mode)
                report = await asyncio.wait_for(job.wait(), 600)
                done += 1
                mine = await asyncio.to_thread(_held, servers[dst], list(expected[n]))
                if report.state.value == "Success" and mine == expected[n]:
                    outcome = "completed-verified"
                elif report.state.value != "Success" and not mine and report.error:
                    outcome = "unchanged-clean-failure"
                    reasons[report.error[:120]] += 1
                else:
                    outcome = "FAILED"
                    failed.append(f"{key}: {report.state.value}, {len(mine)} of {len(expected[n])} "
                                  f"instances on the target: {report.error}")
                outcomes[key][outcome] += 1
                log(f"{time.monotonic() - started:7.1f}s {key:14} {outcome}")
                if mine:   # the next job of this route sends it again
                    await asyncio.to_thread(_delete, servers[dst], list(mine))

        background = [asyncio.ensure_future(faults()), asyncio.ensure_future(sampler())]
        try:
            await asyncio.gather(*(route(n) for n in range(len(routes))))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await engine.close()
        memory.sample()
        left = {name: _tree_bytes(server.storage_dir / "transfers-staging", skip=("jobs",))
                for name, server in servers.items() if server.with_accelerator}
        left["engine"] = _tree_bytes(workdir / "engine", skip=("jobs.sqlite3", "jobs.sqlite3-wal",
                                                                "jobs.sqlite3-shm"))
        totals: collections.Counter = collections.Counter()
        for counts in outcomes.values():
            totals.update(counts)
        return {"minutes": round((time.monotonic() - started) / 60, 1), "jobs_at_once": len(routes),
                "jobs_done": done, "faults_armed": lab.faults_injected,
                "faults_injected": proxy.stats.faults_fired, "outcomes": dict(totals),
                "per_route": {k: dict(v) for k, v in sorted(outcomes.items())},
                "clean_failure_reasons": dict(reasons.most_common(8)),
                "peak_rss_mb": {k: round(v / 2 ** 20, 1) for k, v in sorted(memory.peaks.items())},
                "rss_curve_mb": memory.curve,
                "staging_bytes_left": left, "failed": failed}
    finally:
        await lab.aclose()


def _study_md5s(server: Any, study: str) -> Dict[str, str]:
    ids = [i["ID"] for i in server.request("GET", f"/studies/{study}/instances")]
    every = server.instance_md5s()
    return {i: every[i] for i in ids}


def _held(server: Any, ids: List[str]) -> Dict[str, str]:
    """The MD5s of those of ``ids`` the server holds (other routes delete meanwhile)."""
    import urllib.error
    out = {}
    for instance_id in ids:
        try:
            out[instance_id] = server.request("GET", f"/instances/{instance_id}/attachments/dicom/md5",
                                              raw=True).decode().strip()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
    return out


def _delete(server: Any, ids: List[str]) -> None:
    for instance_id in ids:
        server.request("DELETE", f"/instances/{instance_id}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.devtools.faults.load")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=10, help="jobs at once (routes), at most 10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="transfers-load-") as tmp:
        result = asyncio.run(run_load(Path(tmp), args.minutes, min(10, args.jobs), args.seed))
    text = json.dumps(result, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    ok = not result["failed"] and not any(result["staging_bytes_left"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("ORTHANC_TRANSFERS_KEYRING", "0")
    sys.exit(main())
