"""The transfer paths being compared. Each one moves the dataset's resources
(one study, a patient, or for the queued dataset ten studies as ten jobs at
once) from a source to a target across the bed's proxies and says how long
it took.

A path either runs (``Outcome``) or is unavailable (``Unavailable``
raised before anything is timed, e.g. the engine's CLI is not there yet).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import sys
import time
import urllib.parse
import urllib.error
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import httpx

from tests.devtools.bench import engine_cli
from tests.devtools.bench.bed import LONG_TIMEOUT_S, PEER_NAME, BenchBed
from gui.sandbox.orthanc_process import OrthancProcess


class Unavailable(Exception):
    """This path cannot run on this machine / in this tree; the message says why."""


@dataclass
class Work:
    """What one measurement moves: one resource per job, and every instance below them."""
    resources: List[Dict[str, str]]      # {"Level": ..., "ID": ...}, one per job
    instances: List[str] = field(default_factory=list)

    @property
    def queued(self) -> bool:
        return len(self.resources) > 1


@dataclass
class Outcome:
    seconds: float
    problem: Optional[str] = None            # None: the path reported success
    engine: Optional[engine_cli.EngineRun] = None
    queue: Optional[Dict[str, Any]] = None   # several jobs at once: their figures (queued.summarize)
    note: str = ""                           # what the row should say besides its figures


@dataclass(frozen=True)
class PathSpec:
    name: str
    label: str
    accelerated_servers: bool   # runs between the servers with the plugin
    run: Callable[[BenchBed, Work], Outcome]
    rewrites_file_meta: bool = False  # C-STORE: compare datasets, not whole files

    def target(self, bed: BenchBed) -> OrthancProcess:
        server = bed.accel_target if self.accelerated_servers else bed.stock_target
        if server is None:
            raise Unavailable(bed.accelerated_problem or "its servers were not started")
        return server

    def source(self, bed: BenchBed) -> OrthancProcess:
        server = bed.accel_source if self.accelerated_servers else bed.stock_source
        if server is None:
            raise Unavailable(bed.accelerated_problem or "its servers were not started")
        return server


def _orthanc_error(exc: Exception) -> str:
    """Orthanc's own message from an HTTP error, else the exception text."""
    if isinstance(exc, urllib.error.HTTPError):
        try:
            body = json.loads(exc.read() or b"{}")
            return f"HTTP {exc.code}: {body.get('Message', '')} {body.get('Details', '')}".strip()
        except ValueError:
            return f"HTTP {exc.code}"
    return str(exc) or type(exc).__name__


def _orthanc_job(source: OrthancProcess, uri: str, body: Dict) -> Outcome:
    """Run one of Orthanc's own store jobs synchronously and time it."""
    t0 = time.monotonic()
    try:
        source.request("POST", uri, json.dumps(body).encode(), timeout=LONG_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        return Outcome(time.monotonic() - t0, f"{uri} failed: {_orthanc_error(exc)}")
    return Outcome(time.monotonic() - t0)


def _orthanc_jobs_at_once(source: OrthancProcess, uri: str, resources: List[Dict[str, str]]) -> Outcome:
    """One asynchronous store job per resource, all submitted at once to
    Orthanc's job engine (its ``ConcurrentJobs`` run together), timed until
    the last one ends; the queue's figures as for the engine's jobs."""
    from tests.devtools.bench.queued import summarize
    t0 = time.monotonic()
    jobs: List[Dict[str, Any]] = []
    try:
        for n, resource in enumerate(resources):
            answer = source.request("POST", uri, json.dumps({"Resources": [resource["ID"]],
                                                             "Asynchronous": True}).encode())
            jobs.append({"index": n, "submitted": round(time.monotonic() - t0, 3), "id": answer["ID"],
                         "started": None, "finished": None, "state": None})
        max_running = 0
        while any(j["finished"] is None for j in jobs):
            # One request for every job's state (not one per job: the polling must not load the source).
            states = {j["ID"]: j["State"] for j in source.request("GET", "/jobs?expand")}
            now = round(time.monotonic() - t0, 3)
            running = 0
            for job in jobs:
                state = states.get(job["id"], "Pending")
                if job["finished"] is not None:
                    continue
                if state != "Pending" and job["started"] is None:
                    job["started"] = now
                if state == "Running":
                    running += 1
                elif state in ("Success", "Failure"):
                    job["finished"], job["state"] = now, state
            max_running = max(max_running, running)
            time.sleep(0.05)
    except (OSError, ValueError) as exc:
        return Outcome(time.monotonic() - t0, f"{uri} failed: {_orthanc_error(exc)}")
    seconds = time.monotonic() - t0
    limit = source.config().get("ConcurrentJobs")
    queue = summarize(jobs, limit, max_running)
    failed = [j for j in jobs if j["state"] != "Success"]
    return Outcome(seconds, f"{len(failed)} of {len(jobs)} store jobs failed" if failed else None, queue=queue)


def builtin_peer_store(bed: BenchBed, work: Work) -> Outcome:
    uri = f"/peers/{PEER_NAME}/store"
    if work.queued:
        return _orthanc_jobs_at_once(bed.stock_source, uri, work.resources)  # type: ignore[arg-type]
    return _orthanc_job(bed.stock_source, uri,  # type: ignore[arg-type]
                        {"Resources": [work.resources[0]["ID"]], "Synchronous": True})


def dicom_cstore(bed: BenchBed, work: Work) -> Outcome:
    _one_job(work, "DICOM C-STORE")
    return _orthanc_job(bed.stock_source, f"/modalities/{PEER_NAME}/store",  # type: ignore[arg-type]
                        {"Resources": [work.resources[0]["ID"]], "Synchronous": True})


def _one_job(work: Work, what: str) -> None:
    if work.queued:
        raise Unavailable(f"{what} is measured as one job; the queued jobs are measured for the "
                          "peer store and the engine's plain, push and pull modes")


def naive_copy(bed: BenchBed, work: Work) -> Outcome:
    """What a quick script does: for each instance, GET the file, POST it."""
    _one_job(work, "the naive copy")
    instances = work.instances
    assert bed.stock_source is not None
    target_url = bed.proxies["stock-http"].url
    t0 = time.monotonic()
    try:
        with httpx.Client(timeout=LONG_TIMEOUT_S) as http:
            for instance in instances:
                answer = http.get(f"{bed.stock_source.url}/instances/{instance}/file")
                answer.raise_for_status()
                stored = http.post(f"{target_url}/instances", content=answer.content)
                stored.raise_for_status()
    except httpx.HTTPError as exc:
        return Outcome(time.monotonic() - t0, f"naive copy failed: {exc}")
    return Outcome(time.monotonic() - t0)


CEILING_CLIENTS = (4, 8, 16)


def _post_all(url: str, files: List[bytes], clients: int) -> float:
    """Seconds to POST every file to ``url``/instances from ``clients`` threads,
    each on one kept-alive connection."""
    where = urllib.parse.urlsplit(url)
    queue = list(reversed(files))

    def worker() -> None:
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=LONG_TIMEOUT_S)
        try:
            while True:
                try:
                    body = queue.pop()   # list.pop is atomic under the GIL
                except IndexError:
                    return
                connection.request("POST", "/instances", body=body,
                                   headers={"Content-Type": "application/dicom"})
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    raise OSError(f"POST /instances answered {answer.status}")
        finally:
            connection.close()

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(worker) for _ in range(clients)]:
            done.result()
    return time.monotonic() - t0


def ingest_ceiling(bed: BenchBed, work: Work) -> Outcome:
    """How fast the stock target can take the dataset at all: every file
    already in this process's memory (downloaded from the source before the
    clock starts), POSTed through the same proxy as the other paths by 4, 8
    and 16 concurrent clients; the fastest of the three. No source, no
    planning, no MD5 read-back: any path that stores through the target's
    ``POST /instances`` (plain mode, and the plugin's commit) takes at least
    this long."""
    _one_job(work, "the ingest ceiling")
    assert bed.stock_source is not None and bed.stock_target is not None
    files = [bed.stock_source.request("GET", f"/instances/{i}/file", timeout=LONG_TIMEOUT_S, raw=True)
             for i in work.instances]
    url = bed.proxies["stock-http"].url
    times: Dict[int, float] = {}
    try:
        for clients in CEILING_CLIENTS:
            bed.clear(bed.stock_target)
            bed.reset_counters()   # the row's wire bytes: one attempt's, like the other rows
            times[clients] = _post_all(url, files, clients)
    except OSError as exc:
        return Outcome(sum(times.values()), f"ingest ceiling failed: {exc}")
    best = min(times, key=lambda c: times[c])
    return Outcome(times[best], None, note="; ".join(
        f"{c} clients {t:.2f} s" for c, t in times.items()) + f" (best: {best})")


def server_send(bed: BenchBed, work: Work) -> Outcome:
    """The source's plugin sends by itself (POST /transfers/send, gzip), server to
    server: timed from the request to the job's Success (the target's commit
    having checked every MD5)."""
    _one_job(work, "the server's send job")
    source = bed.accel_source
    assert source is not None
    peer = {"Url": bed.proxies["accel-push"].url + "/"}
    source.request("PUT", "/peers/bench-accel", json.dumps(peer).encode())
    body = {"Resources": work.resources, "Compression": "gzip", "Peer": "bench-accel"}
    t0 = time.monotonic()
    try:
        job = source.request("POST", "/transfers/send", json.dumps(body).encode())
        while True:
            state = source.request("GET", job["Path"])
            if state["State"] in ("Success", "Failure"):
                break
            time.sleep(0.05)
    except (OSError, ValueError) as exc:
        return Outcome(time.monotonic() - t0, f"/transfers/send failed: {_orthanc_error(exc)}")
    seconds = time.monotonic() - t0
    return Outcome(seconds, None if state["State"] == "Success" else state.get("ErrorDescription"))


QUEUED_DRIVER = [sys.executable, "-m", "tests.devtools.bench.queued"]


def _engine(mode: str, extra: Sequence[str] = ()) -> Callable[[BenchBed, Work], Outcome]:
    def run(bed: BenchBed, work: Work) -> Outcome:
        cli_mode = mode
        if mode == "plain":
            source, target = bed.stock_source.url, bed.proxies["stock-http"].url  # type: ignore[union-attr]
        elif mode == "retrieve":
            # Plain mode run beside the target, fetching from a far stock source.
            source, target = bed.proxies["stock-source-http"].url, bed.stock_target.url  # type: ignore[union-attr]
            cli_mode = "plain"
        elif mode == "push":
            source, target = bed.accel_source.url, bed.proxies["accel-push"].url  # type: ignore[union-attr]
        else:
            source, target = bed.proxies["accel-pull"].url, bed.accel_target.url  # type: ignore[union-attr]
        if work.queued:
            if extra or mode == "retrieve":
                _one_job(work, f"engine {mode}{' ' + ' '.join(extra) if extra else ''}")
            args = ["--from", source, "--to", target, "--mode", cli_mode]
            for resource in work.resources:
                args += ["--study", resource["ID"]]
            result = engine_cli.run(args, timeout=LONG_TIMEOUT_S, command=QUEUED_DRIVER)
            return Outcome(result.seconds, result.problem, result,
                           queue=(result.report or {}).get("queue"))
        resource = work.resources[0]
        result = engine_cli.run(["--from", source, "--to", target, f"--{resource['Level'].lower()}",
                                 resource["ID"], "--mode", cli_mode, "--json", *extra], timeout=LONG_TIMEOUT_S)
        return Outcome(result.seconds, result.problem, result)
    return run


PATHS: Dict[str, PathSpec] = {p.name: p for p in [
    PathSpec("builtin", "Orthanc peer store", False, builtin_peer_store),
    PathSpec("cstore", "DICOM C-STORE", False, dicom_cstore, rewrites_file_meta=True),
    PathSpec("naive", "naive REST copy", False, naive_copy),
    PathSpec("plain", "engine plain", False, _engine("plain")),
    PathSpec("retrieve", "engine plain, retrieve", False, _engine("retrieve")),
    PathSpec("push", "engine push", True, _engine("push")),
    PathSpec("pull", "engine pull", True, _engine("pull")),
    # Published beside the targets, which are met (or not) with the default commit.
    PathSpec("arrive", "engine push, import as it arrives", True, _engine("push", ["--import-as-it-arrives"])),
    PathSpec("send", "server send job (gzip)", True, server_send),
    PathSpec("ceiling", "target ingest ceiling", False, ingest_ceiling),
]}
ENGINE_PATHS = ("plain", "retrieve", "push", "pull")


def path(name: str) -> PathSpec:
    try:
        return PATHS[name]
    except KeyError:
        raise ValueError(f"unknown path {name!r}; choose from {', '.join(PATHS)}") from None
