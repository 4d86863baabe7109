"""The test bench of one scenario: real Orthanc servers, fronts, a small study,
an engine run with every log line captured.

Everything a scenario starts is registered on its :class:`Lab` and stopped by
:meth:`Lab.aclose`, so the matrix, the soak and pytest clean up the same way.
Every server requires a password; each engine run captures logging at DEBUG
(httpx and httpcore included) so that every scenario also checks that the
password leaks nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

from gui.client import Peer
from gui.config.settings import TransferOptions
from tests.devtools.faults.checker import Outcome, TransferChecker, Verdict
from tests.devtools.faults.http_front import Handler, HttpFront
from tests.devtools.netem.wan_proxy import WanProxy
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess

USERNAME = "fault-user"

# Which servers speak the protocol, per transport column of the matrix.
LAYOUTS: Dict[str, tuple] = {
    "push": (False, True),    # stock source, accelerated target
    "pull": (True, False),    # accelerated source, stock target
    "plain": (False, False),
}


def small_options(**overrides: Any) -> TransferOptions:
    """Options that cut a small study into many buckets and give up quickly."""
    values: Dict[str, Any] = dict(Threads=2, BucketSize=64, CacheSize=8, MaxHttpRetries=3,
                                  HttpTimeout=5, PeerCommitTimeout=20)
    values.update(overrides)
    return TransferOptions(**values)


def study_files(seed: int, large: bool = False) -> List[bytes]:
    """About 600 KB: 4 CT slices of 256x256 (each split in two buckets at
    64 KB) and 6 small instances grouped into shared buckets. ``large``:
    512x512 slices, about 2.1 MB."""
    spec = synth.make_study_spec(1000 + seed, f"FAULTS {seed}")
    side = 512 if large else 256
    files = list(synth.ct_series(spec, 4, rows=side, cols=side, seed=seed))
    files += list(synth.tiny_instances(spec, 6, size=8192, seed=seed))
    return files


class LogCapture(logging.Handler):
    """Every log record of the process, formatted, at DEBUG."""

    NOISY = ("httpx", "httpcore", "gui", "asyncio", "hpack")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []
        self._lock_list = threading.Lock()
        self._saved: Dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record must not break the run
            text = str(record.msg)
        with self._lock_list:
            self.lines.append(text)

    def __enter__(self) -> "LogCapture":
        root = logging.getLogger()
        self._saved[""] = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        for name in self.NOISY:
            logger = logging.getLogger(name)
            self._saved[name] = logger.level
            logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for name, level in self._saved.items():
            logging.getLogger(name or None).setLevel(level)

    @property
    def text(self) -> str:
        with self._lock_list:
            return "\n".join(self.lines)


@dataclass
class JobResult:
    succeeded: bool
    error: Optional[str]
    report: Optional[Dict[str, Any]]
    logs: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


class Watch:
    """Progress of a running job, for scenarios that strike mid-transfer."""

    def __init__(self) -> None:
        self.raw_done: Dict[int, int] = {}
        self.buckets_done = 0
        self._changed = asyncio.Event()

    def on_event(self, event: Any) -> None:
        index = getattr(event, "index", None)
        if index is not None and hasattr(event, "raw_done"):
            self.raw_done[index] = max(self.raw_done.get(index, 0), event.raw_done)
            if getattr(getattr(event, "state", None), "value", None) == "done":
                self.buckets_done += 1
        self._changed.set()

    @property
    def bytes_done(self) -> int:
        return sum(self.raw_done.values())

    async def until(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Wait until ``condition()`` holds; False when the timeout passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass
        return True


class Lab:
    """Servers, proxies and fronts of one scenario run."""

    def __init__(self, workdir: Path, seed: int = 0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.rng = random.Random(seed)
        self.password = "pw-" + secrets.token_hex(12)   # distinctive: easy to grep for
        self.servers: List[OrthancProcess] = []
        self._closers: List[Callable[[], Awaitable[None]]] = []
        self.faults_injected = 0

    # --- servers ---------------------------------------------------------------

    async def orthanc(self, name: str, accelerator: bool = False, **kwargs: Any) -> OrthancProcess:
        kwargs.setdefault("username", USERNAME)
        kwargs.setdefault("password", self.password)
        # Inside the lab directory, so a runner can find and kill the servers of a hung cell.
        kwargs.setdefault("workdir", self.workdir / f"orthanc-{name}-{len(self.servers)}")
        server = OrthancProcess(name=name, with_accelerator=accelerator, **kwargs)
        self.servers.append(server)
        await asyncio.to_thread(server.start)
        return server

    async def pair(self, transport: str) -> tuple:
        source_acc, target_acc = LAYOUTS[transport]
        return await asyncio.gather(self.orthanc("source", source_acc),
                                    self.orthanc("target", target_acc))

    async def seed_study(self, server: OrthancProcess, seed: Optional[int] = None,
                         large: bool = False) -> List[dict]:
        """Upload the scenario's study; return the resources to transfer."""
        files = study_files(self.seed if seed is None else seed, large)

        def upload() -> str:
            answers = [server.upload(f) for f in files]
            return answers[0]["ParentStudy"]
        study = await asyncio.to_thread(upload)
        return [{"Level": "Study", "ID": study}]

    def peer(self, name: str, url: str, password: Optional[str] = None, **kwargs: Any) -> Peer:
        return Peer(name=name, url=url, username=USERNAME,
                    password=self.password if password is None else password, **kwargs)

    # --- fronts ------------------------------------------------------------------

    async def proxy(self, server: OrthancProcess, **kwargs: Any) -> WanProxy:
        proxy = await WanProxy("127.0.0.1", server.http_port, **kwargs).start()
        self._closers.append(proxy.stop)
        return proxy

    async def front(self, upstream: str, handler: Optional[Handler] = None, **kwargs: Any) -> HttpFront:
        front = await HttpFront(upstream, handler, **kwargs).start()
        self._closers.append(front.stop)
        return front

    # --- checking ------------------------------------------------------------------

    async def checker(self, source: Any, target: Any, expected: Optional[List[str]] = None) -> TransferChecker:
        return await asyncio.to_thread(TransferChecker(source, target, expected).before)

    async def classify(self, checker: TransferChecker, result: JobResult) -> Verdict:
        verdict = await asyncio.to_thread(checker.classify, succeeded=result.succeeded,
                                          error=result.error, report=result.report)
        leak = self.leak_in(result)
        if leak and verdict.outcome.acceptable:
            return Verdict(Outcome.FAILED, f"the password leaked into {leak}")
        verdict.faults_injected = self.faults_injected
        return verdict

    def secret_forms(self) -> List[str]:
        token = base64.b64encode(f"{USERNAME}:{self.password}".encode()).decode()
        return [self.password, token]

    def leak_in(self, result: JobResult) -> Optional[str]:
        """Where the password appears (logs, report, error, job database), if anywhere."""
        import json
        places = {"the logs": result.logs, "the error shown to the user": result.error or "",
                  "the report": json.dumps(result.report) if result.report else ""}
        places.update(self.database_texts())
        for where, text in places.items():
            if any(secret in text for secret in self.secret_forms()):
                return where
        return None

    def database_texts(self) -> Dict[str, str]:
        out = {}
        for path in (self.workdir / "engine").glob("jobs.sqlite3*"):
            out[f"the job database ({path.name})"] = path.read_bytes().decode("latin-1")
        return out

    # --- engine --------------------------------------------------------------------

    async def run_job(self, source: Peer, target: Peer, resources: List[dict], mode: str,
                      options: Optional[TransferOptions] = None, *,
                      during: Optional[Callable[[Watch], Awaitable[None]]] = None,
                      timeout: float = 90.0, engine_dir: Optional[Path] = None) -> JobResult:
        """Submit one job to a fresh engine, wait for its end, capture its logs."""
        from gui.engine import TransferEngine
        options = options or small_options()
        watch = Watch()
        with LogCapture() as logs:
            engine = TransferEngine(options, data_dir=engine_dir or self.workdir / "engine")
            await engine.start()
            unsubscribe = engine.subscribe(watch.on_event)
            try:
                job = await engine.submit(source, target, resources, options, mode=mode)
                waiter = asyncio.ensure_future(job.wait())
                if during is not None:
                    await during(watch)
                report = await asyncio.wait_for(waiter, timeout)
                data = report.to_json()
                result = JobResult(data.get("state") == "Success", data.get("error"), data)
            except Exception as exc:  # noqa: BLE001
                # An exception out of submit/wait is what the user would see.
                result = JobResult(False, str(exc) or type(exc).__name__, None)
                if isinstance(exc, asyncio.TimeoutError):
                    result.error = None   # no clear reason: the job hung
            finally:
                unsubscribe()
                await engine.close()
        result.logs = logs.text
        return result

    # --- teardown ------------------------------------------------------------------

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        # A graceful Orthanc shutdown takes seconds, and these servers' storage
        # is thrown away anyway: kill them, then let stop() clean up.
        for server in self.servers:
            _kill_now(server)
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.servers),
                             return_exceptions=True)


def _kill_now(server: OrthancProcess) -> None:
    import os
    import signal
    process = server.process
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except (ProcessLookupError, OSError):
            pass
