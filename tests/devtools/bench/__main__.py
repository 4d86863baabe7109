"""``python -m tests.devtools.bench``: measure every transfer path through the same emulated links.

Examples::

    python -m tests.devtools.bench --quick
    python -m tests.devtools.bench --links wan --datasets ct,tiny --out bench-results/
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

from tests.devtools.bench.datasets import BUILDERS, FULL, QUICK
from tests.devtools.bench.links import LINKS
from tests.devtools.bench.paths import PATHS


def _names(text: str, known: object, what: str) -> List[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]  # type: ignore[operator]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")  # type: ignore
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.devtools.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small datasets (20 CT slices, 100 tiny, 2 x 16 MB)")
    p.add_argument("--links", default="lan,wan,poorwan", type=lambda t: _names(t, LINKS, "link"),
                   help="comma-separated: " + ",".join(LINKS))
    p.add_argument("--datasets", default="ct,tiny,large", type=lambda t: _names(t, BUILDERS, "dataset"),
                   help="comma-separated: " + ",".join(BUILDERS))
    p.add_argument("--paths", default=",".join(PATHS), type=lambda t: _names(t, PATHS, "path"),
                   help="comma-separated: " + ",".join(PATHS))
    p.add_argument("--out", default="bench-results", type=Path, help="directory for the .md and .json")
    p.add_argument("--ct-slices", type=int, help="override the CT study's slice count")
    p.add_argument("--tiny-count", type=int, help="override the number of tiny instances")
    p.add_argument("--large-mb", type=float, help="override the size of each multi-frame instance")
    p.add_argument("--scale-count", type=int,
                   help="override the scale dataset's instance count (one patient, 5 studies, 20 series)")
    p.add_argument("--queue-count", type=int,
                   help="override the tiny instances in each of the queued dataset's 10 studies (200)")
    p.add_argument("--no-stall-probe", action="store_true",
                   help="skip the in-process engine run that measures event-loop stalls")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    size = QUICK if args.quick else FULL
    overrides = {k: v for k, v in (("ct_slices", args.ct_slices), ("tiny_count", args.tiny_count),
                                   ("large_mb", args.large_mb), ("scale_count", args.scale_count),
                                   ("queue_count", args.queue_count))
                 if v is not None}
    for key, value in overrides.items():
        if value <= 0:
            print(f"--{key.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    size = replace(size, **overrides)

    # Imported here so that --help works even when a dependency is missing.
    from tests.devtools.bench import report
    from tests.devtools.bench.runner import Runner
    from gui.sandbox.orthanc_process import OrthancStartError

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    runner = Runner(args.datasets, args.links, args.paths, size, echo=echo,
                    stall_probe=not args.no_stall_probe)
    try:
        result = runner.run()
    except OrthancStartError as exc:
        print(f"benchmark: could not start Orthanc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark: interrupted; servers stopped", file=sys.stderr)
        return 130
    md_path, json_path = report.write(result, args.out)
    print(report.markdown(result))
    echo(f"written: {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
