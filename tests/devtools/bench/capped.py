"""Does a capped transfer stay at its cap? ``python -m tests.devtools.bench.capped``

Two stock Orthanc servers on loopback (far faster than any cap measured
here), one CT study, this project's ``send --limit-rate`` in plain mode
(every byte through this computer: down from the source, up to the
target, both spent on the job's cap). The engine's report says what went
through the job's token bucket and over which span (``speed_limit``); the
check is that the achieved rate stays within 5% of the cap, below it or
above it. Each cap runs ``--repeat`` times (a shared machine: repeat
before believing a figure).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from gui.cli import parse_rate
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess
from tests.devtools.bench import engine_cli

TOLERANCE = 0.05


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.devtools.bench.capped", description=__doc__.splitlines()[0])
    p.add_argument("--caps", default="2M,8M", help="comma-separated rates as for --limit-rate (default 2M,8M)")
    p.add_argument("--slices", type=int, default=40, help="CT slices of 512 KB (default 40: 20 MB)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", type=Path, help="write the rows here too")
    args = p.parse_args(argv)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-capped-") as work:
        source = OrthancProcess("capped-source", workdir=Path(work) / "s").start()
        target = OrthancProcess("capped-target", workdir=Path(work) / "t").start()
        try:
            study = ""
            for data in synth.ct_series(synth.make_study_spec(91, "CT CAPPED"), args.slices, seed=91):
                study = source.upload(data)["ParentStudy"]
            for text in args.caps.split(","):
                cap = parse_rate(text) * 1024
                for n in range(args.repeat):
                    run = engine_cli.run(["--from", source.url, "--to", target.url, "--study", study,
                                          "--mode", "plain", "--force", "--new", "--limit-rate", text, "--json"])
                    record = (run.report or {}).get("speed_limit") or {}
                    achieved = record.get("achieved") or 0
                    ratio = achieved / cap if cap else 0.0
                    # Independent of the bucket's own clock: its bytes over the job's whole
                    # running time as the report gives it (planning and the final check included).
                    job_seconds = (run.report or {}).get("seconds") or 0
                    end_to_end = (record.get("bytes") or 0) / job_seconds if job_seconds else 0.0
                    row = {"end_to_end": round(end_to_end), "job_seconds": job_seconds, "cap": cap,
                           "run": n + 1, "problem": run.problem, "bytes": record.get("bytes"),
                           "seconds": record.get("seconds"), "achieved": achieved, "ratio": round(ratio, 4),
                           "within": abs(ratio - 1) <= TOLERANCE and run.problem is None}
                    rows.append(row)
                    print(f"cap {cap / 1048576:6.2f} MB/s  run {n + 1}: {achieved / 1048576:6.2f} MB/s "
                          f"({ratio:.3f} of the cap) over {record.get('seconds')} s, "
                          f"{(record.get('bytes') or 0) / 1048576:.1f} MB through the job's bucket; "
                          f"{end_to_end / cap if cap else 0:.3f} of the cap over the job's {job_seconds} s"
                          f"{'' if run.problem is None else '  PROBLEM: ' + run.problem}", flush=True)
        finally:
            source.stop()
            target.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    ok = all(r["within"] for r in rows)
    print("every capped run within 5% of its cap" if ok else "some run is more than 5% off its cap")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
