"""``python -m tests.devtools.push_timeline``: where an accelerated transfer spends its time.

Starts the benchmark's servers (the accelerated pair loads the plugin through
``tests/devtools/plugin_trace.py``, which timestamps its bucket PUTs,
verification and imports), uploads one dataset, then runs the engine in this
process for each asked mode and prints one timeline per run: the engine's
phases and requests, and the target plugin's work, on one clock (seconds
from the job's submission). With ``--pyspy DIR`` the target Orthanc (its
embedded Python) and this process are sampled by py-spy during each run;
the collapsed stacks go to DIR and their heaviest frames are printed.

Examples::

    python -m tests.devtools.push_timeline --dataset tiny --modes push,pull
    python -m tests.devtools.push_timeline --dataset large --modes push --pyspy /tmp/spy
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tests.devtools.bench.bed import BenchBed
from tests.devtools.bench.datasets import BUILDERS, FULL
from tests.devtools.bench.links import LINKS
from tests.devtools.bench.paths import Work, builtin_peer_store

TRACE_SCRIPT = Path(__file__).with_name("plugin_trace.py")
PY_SPY = Path(sys.executable).with_name("py-spy")


class TracedBed(BenchBed):
    """The benchmark's bed, the plugin servers loading it through the trace script."""

    def _server(self, name, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("with_accelerator"):
            config = dict(kwargs.get("extra_config") or {})
            config["PythonScript"] = str(TRACE_SCRIPT)
            config.update(self.extra_accel_config)
            kwargs["extra_config"] = config
        return super()._server(name, **kwargs)

    extra_accel_config: Dict[str, Any] = {}


@dataclass
class Run:
    mode: str
    t0: float
    seconds: float = 0.0
    state: str = ""
    phases: List[Tuple[float, str]] = field(default_factory=list)
    requests: List[Tuple[float, float, str, str, int]] = field(default_factory=list)
    logs: List[Tuple[float, str]] = field(default_factory=list)
    buckets: Dict[int, Dict[str, float]] = field(default_factory=dict)
    report: Dict[str, Any] = field(default_factory=dict)


def _kind(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    parts = path.strip("/").split("/")
    if parts[:2] == ["transfers", "push"] and len(parts) == 4:
        return f"{method} /transfers/push/*/{'commit' if parts[3] == 'commit' else 'N'}"
    if parts[:2] == ["transfers", "chunks"]:
        return f"{method} /transfers/chunks/*"
    if parts[0] == "instances" and len(parts) >= 2:
        return f"{method} /instances/*/" + "/".join(parts[2:])
    if parts[0] in ("studies", "series", "patients") and len(parts) >= 2:
        return f"{method} /{parts[0]}/*/" + "/".join(parts[2:])
    return f"{method} {path}"


def _install_request_trace(run: Run) -> None:
    from gui.client import orthanc_client

    cls = orthanc_client.OrthancClient
    if not hasattr(cls, "_timeline_original"):
        cls._timeline_original = (cls.request, cls.fast_request)  # type: ignore[attr-defined]
    request, fast_request = cls._timeline_original  # type: ignore[attr-defined]

    def size(content: Any) -> int:
        return len(content) if isinstance(content, (bytes, bytearray, memoryview)) else 0

    async def traced(self, method, path, **kwargs):  # type: ignore[no-untyped-def]
        start = time.time()
        try:
            return await request(self, method, path, **kwargs)
        finally:
            length = int((kwargs.get("headers") or {}).get("Content-Length", 0) or size(kwargs.get("content")))
            run.requests.append((start, time.time(), self.peer.name, _kind(method, path), length))

    async def traced_fast(self, method, path, **kwargs):  # type: ignore[no-untyped-def]
        start = time.time()
        try:
            return await fast_request(self, method, path, **kwargs)
        finally:
            run.requests.append((start, time.time(), self.peer.name, _kind(method, path) + " (lean)",
                                 size(kwargs.get("content"))))

    cls.request = traced  # type: ignore[method-assign]
    cls.fast_request = traced_fast  # type: ignore[method-assign]


class _LogKeeper(logging.Handler):
    def __init__(self, run: Run) -> None:
        super().__init__(logging.INFO)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.logs.append((record.created, f"{record.name.split('.')[-1]}: {record.getMessage()}"))


async def _transfer(run: Run, source_url: str, target_url: str, study: str, data_dir: Path,
                    extra: Dict[str, Any]) -> None:
    from gui.client.peer import Peer
    from gui.config.settings import TransferOptions
    from gui.engine import TransferEngine
    from gui.engine.events import BucketProgress, JobProgress

    # What an earlier run learnt about the link: each run starts fresh, as
    # the benchmark's one process per transfer does.
    from gui.engine import piece_size
    from gui.engine.push_mode import bucket_pusher
    bucket_pusher._LINK_RATES.clear()
    piece_size._REMEMBERED.clear()
    options = TransferOptions()
    if extra:
        options = replace(options, **extra)
    engine = TransferEngine(options, data_dir=data_dir)
    await engine.start()

    def observe(event: object) -> None:
        now = time.time()
        if isinstance(event, JobProgress):
            phase = getattr(event.phase, "value", None) or event.state.value
            if not run.phases or run.phases[-1][1] != phase:
                run.phases.append((now, str(phase)))
        elif isinstance(event, BucketProgress):
            run.buckets.setdefault(event.index, {}).setdefault(event.state.value, now)

    engine.subscribe(observe)
    try:
        run.t0 = time.time()
        mode = {"arrive": "push", "retrieve": "plain"}.get(run.mode, run.mode)
        source, target = Peer(name="source", url=source_url), Peer(name="target", url=target_url)
        resources = [{"Level": "Study", "ID": study}]
        # What the command line does before it submits: describe, then plan
        # (the job starts from that plan), timed as phases of their own.
        from gui.cli import describe
        await describe(source, resources, float(options.HttpTimeout))
        run.phases.append((time.time(), "cli: described"))
        plan = await engine.plan(source, target, resources, options, mode=mode)
        run.phases.append((time.time(), "cli: planned"))
        job = await engine.submit(source, target, resources, options, mode=mode, plan=plan)
        report = await job.wait()
        run.seconds = time.time() - run.t0
        run.state = report.state.value
        run.report = report.to_json()
    finally:
        await engine.close()


def _read_trace(server: Any, since: float) -> List[Tuple[float, str, str, str]]:
    path = Path(server.storage_dir) / "push-trace.log"
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) >= 3 and float(parts[0]) >= since:
            rows.append((float(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return rows


def _spans(rows: List[Tuple[float, str, str, str]], name: str) -> List[Tuple[float, float, str]]:
    """(begin, end, detail) of each traced call of ``name``, matched per thread."""
    open_calls: Dict[Tuple[str, str], List[float]] = collections.defaultdict(list)
    spans = []
    for at, thread, event, detail in rows:
        if event == name + ":begin":
            open_calls[(thread, detail)].append(at)
        elif event == name + ":end" and open_calls[(thread, detail)]:
            spans.append((open_calls[(thread, detail)].pop(), at, detail))
    return sorted(spans)


def _busy(spans: List[Tuple[float, float, Any]]) -> float:
    """Seconds during which at least one span was open."""
    total, end = 0.0, None
    for begin, finish, *_ in sorted(spans):
        if end is None or begin > end:
            total += finish - begin
            end = finish
        elif finish > end:
            total += finish - end
            end = finish
    return total


def print_timeline(run: Run, plugin_rows: List[Tuple[float, str, str, str]], out: Any = sys.stdout) -> None:
    t0 = run.t0

    def at(t: float) -> str:
        return f"{t - t0:7.3f}"

    print(f"\n=== {run.mode}: {run.seconds:.2f} s, {run.state}, report seconds {run.report.get('seconds')}, "
          f"planning {run.report.get('planning_seconds')}, compression {run.report.get('compression')}, "
          f"wire {run.report.get('wire_bytes')} B", file=out)
    print("-- engine phases", file=out)
    for t, phase in run.phases:
        print(f"  {at(t)}  {phase}", file=out)
    print("-- engine requests (first start, last end, count, busy s, MB sent)", file=out)
    groups: Dict[str, List[Tuple[float, float, str, str, int]]] = collections.defaultdict(list)
    for row in run.requests:
        groups[f"{row[2]:6} {row[3]}"].append(row)
    for name, rows in sorted(groups.items(), key=lambda kv: min(r[0] for r in kv[1])):
        first, last = min(r[0] for r in rows), max(r[1] for r in rows)
        longest = max(r[1] - r[0] for r in rows)
        print(f"  {at(first)} {at(last)}  {len(rows):5}x  busy {_busy([(r[0], r[1]) for r in rows]):6.3f}"
              f"  longest {longest:6.3f}  {sum(r[4] for r in rows) / 1e6:7.1f} MB  {name}", file=out)
    if os.environ.get("TIMELINE_REQUESTS"):   # every request, in order (first 60)
        for row in sorted(run.requests)[:60]:
            print(f"    {at(row[0])} {at(row[1])}  {row[2]:6} {row[3]}  {row[4]} B", file=out)
    if run.buckets:
        read = [b.get("reading") for b in run.buckets.values() if b.get("reading")]
        sent = [b.get("sending") for b in run.buckets.values() if b.get("sending")]
        done = [b.get("done") for b in run.buckets.values() if b.get("done")]
        print(f"-- buckets: {len(run.buckets)}; first reading {at(min(read)) if read else '-'}, "
              f"first sending {at(min(sent)) if sent else '-'}, last done {at(max(done)) if done else '-'}",
              file=out)
    if plugin_rows:
        print("-- target plugin (first begin, last end, count, busy s)", file=out)
        for name in ("put_bucket", "begin_commit", "verify_and_import", "verify", "import_all", "import_one",
                     "end_commit"):
            spans = _spans(plugin_rows, name)
            if spans:
                print(f"  {at(spans[0][0])} {at(max(s[1] for s in spans))}  {len(spans):5}x  busy "
                      f"{_busy(spans):6.3f}  sum {sum(s[1] - s[0] for s in spans):7.3f}  {name}", file=out)
    interesting = [(t, text) for t, text in run.logs if "auto compression" in text or "transaction" in text
                   or "chunk answers" in text or "round trip" in text]
    if interesting:
        print("-- engine log", file=out)
        for t, text in interesting[:20]:
            print(f"  {at(t)}  {text[:150]}", file=out)


def _pyspy_start(pid: int, path: Path) -> Optional["subprocess.Popen[bytes]"]:
    if not PY_SPY.exists():
        return None
    return subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                             "--output", str(path), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pyspy_stop(proc: Optional["subprocess.Popen[bytes]"]) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summarise_stacks(path: Path, top: int = 25, out: Any = sys.stdout) -> None:
    """The frames that are on the stack in most samples (inclusive), and the leaves (self)."""
    inclusive: Dict[str, int] = collections.Counter()
    leaves: Dict[str, int] = collections.Counter()
    threads: Dict[str, int] = collections.Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        print(f"  (no samples in {path})", file=out)
        return
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
        leaves[frames[-1]] += count
    print(f"  {path.name}: {total} samples (250/s); threads: "
          + ", ".join(f"{t[:40]} {n}" for t, n in threads.most_common(6)), file=out)
    print("  inclusive:", file=out)
    for frame, count in inclusive.most_common(top):
        print(f"    {count:6} {100 * count / max(total, 1):5.1f}%  {frame[:150]}", file=out)
    print("  self:", file=out)
    for frame, count in leaves.most_common(top):
        print(f"    {count:6} {100 * count / max(total, 1):5.1f}%  {frame[:150]}", file=out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.devtools.push_timeline", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiny", choices=sorted(BUILDERS))
    parser.add_argument("--modes", default="push,pull", help="comma-separated: push, pull, arrive, plain, retrieve")
    parser.add_argument("--link", default="lan", choices=sorted(LINKS))
    parser.add_argument("--runs", type=int, default=1, help="runs of each mode")
    parser.add_argument("--no-builtin", action="store_true", help="skip the peer store reference")
    parser.add_argument("--pyspy", type=Path, help="record the target Orthanc and this process with py-spy")
    parser.add_argument("--ct-slices", type=int)
    parser.add_argument("--tiny-count", type=int)
    parser.add_argument("--large-mb", type=float)
    parser.add_argument("--option", action="append", default=[],
                        help="engine TransferOptions field=value (e.g. Threads=8); repeatable")
    parser.add_argument("--plugin", action="append", default=[],
                        help="plugin Transfers option Name=value (e.g. CommitThreadsCount=8); repeatable")
    args = parser.parse_args(argv)
    size = FULL
    for key in ("ct_slices", "tiny_count", "large_mb"):
        if getattr(args, key) is not None:
            size = replace(size, **{key: getattr(args, key)})
    dataset = BUILDERS[args.dataset](size)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    extra: Dict[str, Any] = {}
    for item in args.option:
        key, _, value = item.partition("=")
        extra[key] = int(value) if value.isdigit() else value
    transfers: Dict[str, Any] = {}
    for item in args.plugin:
        key, _, value = item.partition("=")
        transfers[key] = int(value) if value.isdigit() else value
    TracedBed.extra_accel_config = {"Transfers": transfers} if transfers else {}
    logging.getLogger().setLevel(logging.INFO)
    need_stock = "plain" in modes or "retrieve" in modes or not args.no_builtin
    if args.pyspy:
        args.pyspy.mkdir(parents=True, exist_ok=True)
    with TracedBed(stock=need_stock, accelerated=True) as bed:
        bed.set_link(LINKS[args.link])
        print(f"uploading {dataset.description} ...", file=sys.stderr)
        uploaded = bed.upload(dataset.files())
        assert uploaded.studies, "the source reported no study"
        study = uploaded.studies[0]
        if not args.no_builtin:
            bed.clear(bed.stock_target)  # type: ignore[arg-type]
            outcome = builtin_peer_store(bed, Work([{"Level": "Study", "ID": study}]))
            print(f"peer store: {outcome.seconds:.2f} s {outcome.problem or ''}")
        for number in range(args.runs):
            for mode in modes:
                if mode == "plain":
                    source, target, server = bed.stock_source.url, bed.proxies["stock-http"].url, bed.stock_target  # type: ignore[union-attr]
                elif mode == "retrieve":
                    server = bed.stock_target  # type: ignore[assignment]
                    source, target = bed.proxies["stock-source-http"].url, server.url  # type: ignore[union-attr]
                elif mode == "pull":
                    source, target, server = bed.proxies["accel-pull"].url, bed.accel_target.url, bed.accel_target  # type: ignore[union-attr]
                else:
                    source, target, server = bed.accel_source.url, bed.proxies["accel-push"].url, bed.accel_target  # type: ignore[union-attr]
                bed.clear(server)  # type: ignore[arg-type]
                run = Run(mode, time.time())
                _install_request_trace(run)
                keeper = _LogKeeper(run)
                logging.getLogger().addHandler(keeper)
                spies = []
                if args.pyspy:
                    tag = f"{args.dataset}-{mode}-{number}"
                    spies = [(_pyspy_start(server.process.pid, args.pyspy / f"target-{tag}.txt"),  # type: ignore[union-attr]
                              args.pyspy / f"target-{tag}.txt"),
                             (_pyspy_start(os.getpid(), args.pyspy / f"engine-{tag}.txt"),
                              args.pyspy / f"engine-{tag}.txt")]
                    time.sleep(0.5)   # py-spy attaches
                data_dir = Path(tempfile.mkdtemp(prefix="timeline-engine-"))
                try:
                    opts = dict(extra)
                    if mode == "arrive":
                        opts["ImportAsItArrives"] = True
                    asyncio.run(_transfer(run, source, target, study, data_dir, opts))
                finally:
                    logging.getLogger().removeHandler(keeper)
                    shutil.rmtree(data_dir, ignore_errors=True)
                    for spy, _path in spies:
                        _pyspy_stop(spy)
                print_timeline(run, _read_trace(server, run.t0))
                for _spy, path in spies:
                    summarise_stacks(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
