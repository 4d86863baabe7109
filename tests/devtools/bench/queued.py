"""Ten jobs queued at once: ``python -m tests.devtools.bench.queued --from URL --to URL --mode M --study ID ...``

One engine (``TransferEngine``, the app's, with the default options, so
``MaxConcurrentJobs`` 2), one job per ``--study``, all submitted in one go,
in the order given. The engine's events say when each job started running
(it got a place) and when it finished. Printed on stdout as one JSON object
(the shape of ``send --json`` where the benchmark reads it: ``state``,
``seconds``, ``planning_seconds``), plus the queue's own figures: the most
jobs running at once, each job's wait and run time, the finishing order.

Run as a subprocess by the benchmark (``engine_cli.run(..., command=...)``)
so that its memory, CPU and job database are measured like ``send``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence


def order_displacement(submitted: Sequence[str], finished: Sequence[str]) -> int:
    """How far a job finished from its place in the submission order, at most (0: FIFO)."""
    place = {job: n for n, job in enumerate(submitted)}
    return max((abs(place[job] - n) for n, job in enumerate(finished)), default=0)


def summarize(jobs: List[Dict[str, Any]], limit: int, max_running: int) -> Dict[str, Any]:
    """The queue's figures from each job's submitted / started / finished times (s)."""
    for job in jobs:
        job["wait"] = None if job.get("started") is None else round(job["started"] - job["submitted"], 3)
        job["run"] = None if job.get("started") is None or job.get("finished") is None \
            else round(job["finished"] - job["started"], 3)
    done = [j for j in jobs if j.get("finished") is not None]
    by_finish = [j["index"] for j in sorted(done, key=lambda j: j["finished"])]
    runs = [j["run"] for j in jobs if j["run"] is not None]
    waits = [j["wait"] for j in jobs if j["wait"] is not None]
    return {
        "jobs": len(jobs), "limit": limit, "max_running": max_running,
        "finish_order": by_finish,
        "order_displacement": order_displacement([j["index"] for j in jobs], by_finish),
        "wait_min": min(waits, default=None), "wait_max": max(waits, default=None),
        "run_min": min(runs, default=None), "run_median": statistics.median(runs) if runs else None,
        "run_max": max(runs, default=None),
        "starved": [j["index"] for j in jobs if j.get("finished") is None],
        "per_job": jobs,
    }


async def _run(source_url: str, target_url: str, mode: str, studies: List[str]) -> Dict[str, Any]:
    from gui.client.peer import Peer
    from gui.config.settings import TransferOptions
    from gui.engine import TransferEngine
    from gui.engine.events import JobFinished, JobProgress, JobState

    options = TransferOptions()
    engine = TransferEngine(options)
    await engine.start()
    t0 = time.monotonic()
    running: set = set()
    max_running = 0
    started: Dict[str, float] = {}
    finished: Dict[str, float] = {}
    reports: Dict[str, Any] = {}

    def on_event(event: object) -> None:
        nonlocal max_running
        now = time.monotonic() - t0
        if isinstance(event, JobProgress):
            if event.state is JobState.RUNNING:
                running.add(event.job_id)
                started.setdefault(event.job_id, now)
            elif event.job_id in running and event.state is not JobState.RUNNING:
                running.discard(event.job_id)
            max_running = max(max_running, len(running))
        elif isinstance(event, JobFinished):
            running.discard(event.job_id)
            finished.setdefault(event.job_id, now)
            reports[event.job_id] = event.report

    engine.subscribe(on_event)
    try:
        source, target = Peer(name="bench source", url=source_url), Peer(name="bench target", url=target_url)
        jobs = []
        submitted: List[float] = []
        for study in studies:   # at once: nothing awaited between them but the submission itself
            submitted.append(time.monotonic() - t0)
            jobs.append(await engine.submit(source, target, [{"Level": "Study", "ID": study}], mode=mode))
        await asyncio.gather(*(job.wait() for job in jobs))
        seconds = time.monotonic() - t0
    finally:
        await engine.close()
    rows = []
    for n, job in enumerate(jobs):
        report = reports.get(job.id) or job.report
        rows.append({"index": n, "submitted": round(submitted[n], 3), "started": started.get(job.id),
                     "finished": finished.get(job.id),
                     "state": report.state.value if report is not None else None,
                     "instances": report.planned if report is not None else None,
                     "verified": report.verified if report is not None else None,
                     "planning_seconds": report.planning_seconds if report is not None else None,
                     "error": report.error if report is not None else None})
    queue = summarize(rows, engine.max_concurrent_jobs, max_running)
    failed = [r for r in rows if r["state"] != JobState.SUCCESS.value]
    plannings = [r["planning_seconds"] for r in rows if r["planning_seconds"] is not None]
    return {"state": "Failure" if failed else "Success", "seconds": round(seconds, 3),
            "planning_seconds": max(plannings) if plannings else None,
            "error": (f"{len(failed)} of {len(rows)} jobs did not succeed: {failed[0]['error']}"
                      if failed else None),
            "queue": queue}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.devtools.bench.queued", description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", required=True, metavar="URL")
    p.add_argument("--to", dest="target", required=True, metavar="URL")
    p.add_argument("--mode", default="auto", choices=["auto", "push", "pull", "plain"])
    p.add_argument("--study", action="append", required=True, metavar="ID", help="one job per study (repeat)")
    args = p.parse_args(argv)
    result = asyncio.run(_run(args.source, args.target, args.mode, args.study))
    print(json.dumps(result))
    return 0 if result["state"] == "Success" else 1


if __name__ == "__main__":
    sys.exit(main())
