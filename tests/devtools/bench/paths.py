"""The transfer paths being compared. Each one moves one study from a
source to a target across the bed's proxies and says how long it took.

A path either runs (``Outcome``) or is unavailable (``Unavailable``
raised before anything is timed, e.g. the engine's CLI is not there yet).
"""

from __future__ import annotations

import json
import time
import urllib.error
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import httpx

from tests.devtools.bench import engine_cli
from tests.devtools.bench.bed import LONG_TIMEOUT_S, PEER_NAME, BenchBed
from gui.sandbox.orthanc_process import OrthancProcess


class Unavailable(Exception):
    """This path cannot run on this machine / in this tree; the message says why."""


@dataclass
class Outcome:
    seconds: float
    problem: Optional[str] = None            # None: the path reported success
    engine: Optional[engine_cli.EngineRun] = None


@dataclass(frozen=True)
class PathSpec:
    name: str
    label: str
    accelerated_servers: bool   # runs between the servers with the plugin
    run: Callable[[BenchBed, str, List[str]], Outcome]
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


def builtin_peer_store(bed: BenchBed, study: str, instances: List[str]) -> Outcome:
    return _orthanc_job(bed.stock_source, f"/peers/{PEER_NAME}/store",  # type: ignore[arg-type]
                        {"Resources": [study], "Synchronous": True})


def dicom_cstore(bed: BenchBed, study: str, instances: List[str]) -> Outcome:
    return _orthanc_job(bed.stock_source, f"/modalities/{PEER_NAME}/store",  # type: ignore[arg-type]
                        {"Resources": [study], "Synchronous": True})


def naive_copy(bed: BenchBed, study: str, instances: List[str]) -> Outcome:
    """What a quick script does: for each instance, GET the file, POST it."""
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


def server_send(bed: BenchBed, study: str, instances: List[str]) -> Outcome:
    """The source's plugin sends by itself (POST /transfers/send, gzip), server to
    server: timed from the request to the job's Success (the target's commit
    having checked every MD5)."""
    source = bed.accel_source
    assert source is not None
    peer = {"Url": bed.proxies["accel-push"].url + "/"}
    source.request("PUT", "/peers/bench-accel", json.dumps(peer).encode())
    body = {"Resources": [{"Level": "Study", "ID": study}], "Compression": "gzip", "Peer": "bench-accel"}
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


def _engine(mode: str, extra: Sequence[str] = ()) -> Callable[[BenchBed, str, List[str]], Outcome]:
    def run(bed: BenchBed, study: str, instances: List[str]) -> Outcome:
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
        result = engine_cli.run(["--from", source, "--to", target, "--study", study,
                                 "--mode", cli_mode, "--json", *extra], timeout=LONG_TIMEOUT_S)
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
]}
ENGINE_PATHS = ("plain", "retrieve", "push", "pull")


def path(name: str) -> PathSpec:
    try:
        return PATHS[name]
    except KeyError:
        raise ValueError(f"unknown path {name!r}; choose from {', '.join(PATHS)}") from None
