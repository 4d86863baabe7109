"""Runs the benchmark matrix: datasets x links x paths, one bed, one run."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from tests.devtools.bench import engine_cli, inprocess
from tests.devtools.bench.bed import BenchBed, StagingSampler
from tests.devtools.bench.datasets import Dataset, DatasetSize, dataset
from tests.devtools.bench.links import Link, link
from tests.devtools.bench.paths import ENGINE_PATHS, PathSpec, Unavailable, Work, path
from gui.sandbox.orthanc_process import ORTHANC_BINARY

log = logging.getLogger(__name__)
MB = 1_000_000  # rates in the table are decimal megabytes, like link speeds


@dataclass
class Measurement:
    dataset: str
    link: str
    path: str
    label: str
    status: str                    # "ok" | "failed" | "unavailable" | "skipped" (dataset not on this link)
    instances: int
    data_bytes: int                # DICOM bytes of the dataset
    seconds: Optional[float] = None
    mb_per_s: Optional[float] = None
    wire_bytes: Optional[int] = None
    wire_up: Optional[int] = None
    wire_down: Optional[int] = None
    utilization: Optional[float] = None   # None on the LAN (no bandwidth to divide by)
    speedup: Optional[float] = None       # vs the built-in peer store, same link and dataset
    peak_rss_mb: Optional[float] = None   # engine paths only
    cpu_seconds: Optional[float] = None   # engine paths only
    engine_seconds: Optional[float] = None  # what the engine itself reported
    process_seconds: Optional[float] = None  # engine paths: the send process, start to exit
    planning_seconds: Optional[float] = None  # engine paths: the job's planning, as it reported
    db_mb: Optional[float] = None            # engine paths: its job database after the run
    # Paths to a plugin target: the most bytes in its staging directory during the run,
    # and the most its open transactions had announced (reserved) at once.
    staging_peak_mb: Optional[float] = None
    staging_data_mb: Optional[float] = None     # of which the staged instance files (the rest: manifests)
    staging_reserved_mb: Optional[float] = None
    engine_staging_mb: Optional[float] = None  # engine paths: most bytes in the engine's own staging dir
    queue: Optional[Dict[str, Any]] = None     # queued jobs: the queue's figures (queued.summarize)
    verified: Optional[bool] = None
    verified_count: Optional[int] = None
    note: str = ""


@dataclass
class BenchResult:
    started: str
    machine: Dict[str, Any]
    sizes: Dict[str, Any]
    datasets: Dict[str, str] = field(default_factory=dict)   # name -> description
    links: Dict[str, str] = field(default_factory=dict)
    measurements: List[Measurement] = field(default_factory=list)
    stall: Optional[Dict[str, Any]] = None
    memory_bound: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        return data


def machine_info() -> Dict[str, Any]:
    try:
        version = subprocess.run([ORTHANC_BINARY, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.splitlines()[0].split()[-1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        version = "unknown"
    return {"nproc": os.cpu_count(), "arch": platform.machine(), "system": platform.system(),
            "python": platform.python_version(), "orthanc": version,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


class Runner:
    def __init__(self, datasets: Sequence[str], links: Sequence[str], paths: Sequence[str],
                 size: DatasetSize, echo: Callable[[str], None] = print, stall_probe: bool = True) -> None:
        self.datasets = [dataset(n, size) for n in datasets]
        self.links: List[Link] = [link(n) for n in links]
        self.paths: List[PathSpec] = [path(n) for n in paths]
        # The speed-up column needs the reference on every link and dataset.
        if self.paths and self.paths[0].name != "builtin":
            self.paths.sort(key=lambda p: p.name != "builtin")
        self.size = size
        self.echo = echo
        # The stall probe runs once, at full speed: on the LAN with the CT study when chosen.
        self.stall_pair = ((("ct" if "ct" in datasets else datasets[0]) if datasets else None),
                           (("lan" if "lan" in links else links[0]) if links else None)) if stall_probe else None
        self.stall: Optional[Dict[str, Any]] = None

    def run(self) -> BenchResult:
        result = BenchResult(started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                             machine=machine_info(), sizes=asdict(self.size),
                             datasets={d.name: d.description for d in self.datasets},
                             links={ln.name: ln.description for ln in self.links})
        engine_problem: Optional[str] = None
        if any(p.name in ENGINE_PATHS for p in self.paths):
            engine_problem = engine_cli.availability()
            if engine_problem:
                self.echo(f"engine paths unavailable: {engine_problem}")
        accelerated = any(p.accelerated_servers for p in self.paths) and not engine_problem
        self.echo("starting Orthanc servers and proxies ...")
        with BenchBed(stock=True, accelerated=accelerated) as bed:
            if bed.accelerated_problem:
                self.echo(f"accelerated paths unavailable: {bed.accelerated_problem}")
            for ds in self.datasets:
                result.measurements += self._dataset(bed, ds, engine_problem)
            if engine_problem is None:
                result.memory_bound = self._memory_bound(result.measurements)
            if self.stall_pair is not None:
                result.stall = self.stall or {"note": engine_problem or "not run"}
        return result

    def _dataset(self, bed: BenchBed, ds: Dataset, engine_problem: Optional[str]) -> List[Measurement]:
        self.echo(f"[{ds.name}] generating and uploading {ds.description} ...")
        bed.clear_sources()
        uploaded = bed.upload(ds.files())
        dataset_md5 = uploaded.digests
        assert bed.stock_source is not None
        work = self._work(ds, uploaded.studies, uploaded.patients)
        instances: List[str] = []
        data_bytes = 0
        for resource in work.resources:
            level = {"Patient": "patients", "Study": "studies"}[resource["Level"]]
            listing = bed.stock_source.request("GET", f"/{level}/{resource['ID']}/instances")
            instances += [i["ID"] for i in listing]
            data_bytes += sum(int(i["FileSize"]) for i in listing)
        work.instances = instances
        source_md5 = bed.md5s(bed.stock_source, instances)
        if set(dataset_md5) != set(instances):
            raise RuntimeError(f"dataset {ds.name}: the source holds other instances than uploaded")
        rows: List[Measurement] = []
        for ln in self.links:
            if ds.only_links and ln.name not in ds.only_links:
                row = Measurement(ds.name, ln.name, "skipped", "every path", "skipped", len(instances),
                                  data_bytes, note=ds.skip_reason)
                self.echo(f"[{ds.name} / {ln.name}] skipped: {ds.skip_reason}")
                rows.append(row)
                continue
            bed.set_link(ln)
            reference: Optional[float] = None
            for spec in self.paths:
                row = Measurement(ds.name, ln.name, spec.name, spec.label, "unavailable",
                                  len(instances), data_bytes)
                problem = engine_problem if spec.name in ENGINE_PATHS else None
                if problem:
                    row.note = problem
                else:
                    reference_md5 = dataset_md5 if spec.rewrites_file_meta else source_md5
                    try:
                        self._measure(bed, spec, work, reference_md5, ln, row)
                    except Exception as exc:  # one broken path must not lose the others' figures
                        row.status, row.note = "failed", _short(f"{type(exc).__name__}: {exc}")
                if spec.name == "builtin" and row.status == "ok":
                    reference = row.seconds
                if reference and row.seconds and row.status == "ok":
                    row.speedup = reference / row.seconds
                self.echo(f"[{ds.name} / {ln.name}] {spec.label}: " + _one_line(row))
                rows.append(row)
            if self.stall_pair == (ds.name, ln.name) and engine_problem is None:
                self._stall_probe(bed, ds, ln, work.resources[0])
        return rows

    @staticmethod
    def _work(ds: Dataset, studies: List[str], patients: List[str]) -> Work:
        """The resources the jobs move: the patient, the study, or one study per queued job."""
        if ds.level == "Patient":
            if len(patients) != 1:
                raise RuntimeError(f"dataset {ds.name}: expected one patient, the upload made {len(patients)}")
            return Work([{"Level": "Patient", "ID": patients[0]}])
        if len(studies) != ds.jobs:
            raise RuntimeError(f"dataset {ds.name}: expected {ds.jobs} studies, the upload made {len(studies)}")
        return Work([{"Level": "Study", "ID": s} for s in studies])

    def _stall_probe(self, bed: BenchBed, ds: Dataset, ln: Link, resource: Dict[str, str]) -> None:
        """One more engine transfer, in this process, with the stall probe on its loop."""
        if bed.accel_target is not None and bed.accel_source is not None:
            mode, source, target = "push", bed.accel_source.url, bed.proxies["accel-push"].url
            bed.clear(bed.accel_target)
        else:
            assert bed.stock_source is not None and bed.stock_target is not None
            mode, source, target = "plain", bed.stock_source.url, bed.proxies["stock-http"].url
            bed.clear(bed.stock_target)
        where = f"engine {mode} in-process, {ds.name} over {ln.name}"
        self.echo(f"[{ds.name} / {ln.name}] stall probe during {where} ...")
        self.stall = inprocess.measure(source, target, resource, mode, where)
        self.echo(f"[{ds.name} / {ln.name}] stall probe: {self.stall}")

    def _measure(self, bed: BenchBed, spec: PathSpec, work: Work,
                 source_md5: Dict[str, Optional[str]], ln: Link, row: Measurement) -> None:
        instances = work.instances
        try:
            target = spec.target(bed)
            spec.source(bed)
        except Unavailable as exc:
            row.note = str(exc)
            return
        bed.clear(target)
        # Each row starts with the disk's write-back settled: what the previous
        # row (or the dataset's upload) left dirty in the page cache is
        # otherwise flushed during this one, and every Orthanc commit waits
        # for an fdatasync (one per stored instance, measured with strace).
        os.sync()
        bed.reset_counters()
        sampler = StagingSampler(target) if spec.accelerated_servers else None
        try:
            if sampler is not None:
                with sampler:
                    outcome = spec.run(bed, work)
                row.staging_peak_mb = sampler.peak_bytes / MB
                row.staging_data_mb = sampler.peak_data_bytes / MB
                row.staging_reserved_mb = sampler.peak_reserved / MB
            else:
                outcome = spec.run(bed, work)
        except Unavailable as exc:
            row.note = str(exc)
            return
        row.queue = outcome.queue
        up, down = bed.wire_bytes()
        seconds = outcome.seconds
        if outcome.engine is not None:
            row.peak_rss_mb = outcome.engine.peak_rss_bytes / 2**20
            row.cpu_seconds = outcome.engine.cpu_seconds
            row.process_seconds = outcome.seconds
            planning = (outcome.engine.report or {}).get("planning_seconds")
            row.planning_seconds = float(planning) if isinstance(planning, (int, float)) else None
            if outcome.engine.db_bytes is not None:
                row.db_mb = outcome.engine.db_bytes / MB
            row.engine_staging_mb = outcome.engine.staging_peak_bytes / MB
            report = outcome.engine.report or {}
            reported = report.get("command_seconds", report.get("seconds"))
            if isinstance(reported, (int, float)) and 0 < reported <= outcome.seconds:
                # The command from its request to its verified report (the
                # look-ups and the planning before the job included), as in
                # the app, where the interpreter and the job database are
                # already up; the process's own start-up is in process_seconds.
                row.engine_seconds = seconds = float(reported)
        row.seconds = seconds
        row.wire_up, row.wire_down, row.wire_bytes = up, down, up + down
        row.mb_per_s = row.data_bytes / seconds / MB if seconds > 0 else None
        if ln.bandwidth_bytes_s and seconds > 0:
            # Each direction has its own capacity: the busier one is the link's load.
            row.utilization = max(up, down) / (ln.bandwidth_bytes_s * seconds)
        target_md5 = bed.dataset_md5s(target, instances) if spec.rewrites_file_meta \
            else bed.md5s(target, instances)
        row.verified_count = sum(1 for i in instances if target_md5.get(i) and target_md5[i] == source_md5[i])
        row.verified = row.verified_count == len(instances)
        row.status = "ok" if outcome.problem is None and row.verified else "failed"
        notes = [outcome.problem] if outcome.problem else []
        if outcome.note:
            notes.append(outcome.note)
        if spec.rewrites_file_meta and row.verified:
            notes.append("verified on the dataset: C-STORE rewrites the file meta group")
        if not row.verified:
            notes.append(f"{row.verified_count}/{len(instances)} instances verified on the target")
        row.note = _short("; ".join(notes))

    def _memory_bound(self, rows: List[Measurement]) -> Dict[str, Any]:
        """The issue's bound for the engine: CacheSize + Threads x 2 x BucketSize
        (plugin defaults), on top of the interpreter's own footprint."""
        cache_mb, threads, bucket_kb = 512, 4, 4096
        buffers = cache_mb + threads * 2 * bucket_kb / 1024
        baseline = engine_cli.baseline_rss_bytes()
        baseline_mb = baseline / 2**20 if baseline else None
        peak = max((r.peak_rss_mb for r in rows if r.peak_rss_mb is not None), default=None)
        return {"cache_mb": cache_mb, "threads": threads, "bucket_kb": bucket_kb,
                "buffers_mb": buffers, "interpreter_mb": baseline_mb,
                "bound_mb": buffers + (baseline_mb or 0), "peak_rss_mb": peak}


def _short(text: str, limit: int = 300) -> str:
    """Errors can quote whole URLs of thousands of IDs: keep the table readable."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(row: Measurement) -> str:
    if row.status in ("unavailable", "skipped"):
        return f"{row.status} ({row.note})"
    parts = [f"{row.seconds:.2f} s" if row.seconds is not None else "",
             f"{row.mb_per_s:.1f} MB/s" if row.mb_per_s else "",
             f"wire {row.wire_bytes / MB:.1f} MB" if row.wire_bytes is not None else "",
             f"x{row.speedup:.2f}" if row.speedup else "",
             f"planning {row.planning_seconds:.2f} s" if row.planning_seconds is not None else "",
             f"RSS {row.peak_rss_mb:.0f} MB" if row.peak_rss_mb is not None else "",
             f"staging peak {row.staging_peak_mb:.1f} MB" if row.staging_peak_mb is not None else "",
             (f"max running {row.queue.get('max_running')}/{row.queue.get('limit')}"
              if row.queue else ""),
             f"verified {row.verified_count}/{row.instances}" if row.verified_count is not None else ""]
    text = ", ".join(p for p in parts if p)
    return text + (f" -- {row.status}: {row.note}" if row.note else "")
