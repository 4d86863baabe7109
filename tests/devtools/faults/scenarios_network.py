"""Faults during a transfer: broken, stalled and corrupted connections, a
failing or restarting target, a vanishing source, a slow commit, a killed
desktop process, two jobs racing, a full staging disk.

Each scenario starts its servers, snapshots them, runs a real engine job
with the fault armed and classifies the end state with the one checker.
Fault positions are drawn from ``lab.rng`` so the soak mode varies them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional

from tests.devtools.faults.checker import Outcome, Verdict
from tests.devtools.faults.http_front import FrontRequest, FrontResponse, Forward, fail_first
from tests.devtools.faults.lab import USERNAME, JobResult, Lab, Watch, small_options
from tests.devtools.faults.registry import scenario
from tests.devtools.netem.wan_proxy import Direction, Fault, FaultKind

ALL = ("push", "pull", "plain", "delegate")
NO_DELEGATE = {"delegate": "not in this matrix: delegated mode's failures (peer gone mid-job, refused "
                           "credentials, unknown resource, cancel, restart) are tested against the Python "
                           "plugin's send jobs in tests/server/test_send_pull_jobs.py and "
                           "tests/transports/test_delegated.py"}
Via = Callable[[Any], Awaitable[str]]


async def transfer_with(lab: Lab, transport: str, *, source_via: Optional[Via] = None,
                        target_via: Optional[Via] = None, options: Any = None,
                        during: Optional[Callable[[Watch], Awaitable[None]]] = None,
                        after: Optional[Callable[[], Awaitable[None]]] = None) -> Verdict:
    """The common shape: servers, study, snapshot, job through fronts, verdict."""
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    source_url = await source_via(source) if source_via else source.url
    target_url = await target_via(target) if target_via else target.url
    result = await lab.run_job(lab.peer("source", source_url), lab.peer("target", target_url),
                               resources, transport, options or small_options(), during=during)
    if after is not None:
        await after()
    return await lab.classify(checker, result)


def require_completion(verdict: Verdict, why: str) -> Verdict:
    """For scenarios where the specification promises completion (retries
    that succeed, a recreated transaction, a resumed job): a clean failure
    is not enough."""
    if verdict.outcome is Outcome.UNCHANGED_CLEAN_FAILURE:
        return Verdict(Outcome.FAILED, f"expected completion ({why}), got a clean failure: "
                       f"{verdict.detail}", verdict.faults_injected)
    return verdict


def strike_point(lab: Lab, high: int) -> int:
    """How many bytes must have moved before a server is struck: the first
    byte for the matrix's seed 0 (the harshest moment, reproducible), a
    random point for the soak's other seeds."""
    return 1 if lab.seed == 0 else lab.rng.randint(1, high)


def proxied(lab: Lab, fault: Fault) -> Via:
    async def via(server: Any) -> str:
        proxy = await lab.proxy(server)
        proxy.arm(fault)
        lab.faults_injected += 1
        return proxy.url
    return via


def fronted(lab: Lab, handler: Any) -> Via:
    async def via(server: Any) -> str:
        return (await lab.front(server.url, handler)).url
    return via


# --- connection faults through the WAN proxy ------------------------------------------

@scenario("reset-upload", "connection reset in the middle of a bucket, upload side", "faults",
          ALL, NO_DELEGATE)
async def reset_upload(lab: Lab, transport: str) -> Verdict:
    fault = Fault(FaultKind.RESET, Direction.UP, after_bytes=lab.rng.randint(20_000, 250_000))
    return await transfer_with(lab, transport, target_via=proxied(lab, fault))


@scenario("reset-download", "connection reset in the middle of a bucket, download side", "faults",
          ALL, NO_DELEGATE)
async def reset_download(lab: Lab, transport: str) -> Verdict:
    fault = Fault(FaultKind.RESET, Direction.DOWN, after_bytes=lab.rng.randint(20_000, 250_000))
    return await transfer_with(lab, transport, source_via=proxied(lab, fault))


@scenario("stall-timeout", "stalled download hitting HttpTimeout (2 s)", "faults", ALL, NO_DELEGATE)
async def stall_timeout(lab: Lab, transport: str) -> Verdict:
    fault = Fault(FaultKind.STALL, Direction.DOWN, after_bytes=lab.rng.randint(10_000, 200_000))
    proxies: List[Any] = []

    async def via(server: Any) -> str:
        proxy = await lab.proxy(server)
        proxy.arm(fault)
        proxies.append(proxy)
        lab.faults_injected += 1
        return proxy.url

    async def release() -> None:
        for proxy in proxies:   # let the stalled connection go once the job is over
            proxy.release()
    return await transfer_with(lab, transport, source_via=via,
                               options=small_options(HttpTimeout=2), after=release)


@scenario("corrupt-upload", "one corrupted byte in a bucket, upload side", "faults", ALL, NO_DELEGATE)
async def corrupt_upload(lab: Lab, transport: str) -> Verdict:
    fault = Fault(FaultKind.CORRUPT, Direction.UP, after_bytes=lab.rng.randint(4_000, 250_000))
    return require_completion(await transfer_with(lab, transport, target_via=proxied(lab, fault)),
                              "an instance that fails its MD5 check is sent again (MaxHttpRetries 3)")


@scenario("corrupt-download", "one corrupted byte in a bucket, download side", "faults", ALL,
          NO_DELEGATE)
async def corrupt_download(lab: Lab, transport: str) -> Verdict:
    fault = Fault(FaultKind.CORRUPT, Direction.DOWN, after_bytes=lab.rng.randint(4_000, 250_000))
    return require_completion(await transfer_with(lab, transport, source_via=proxied(lab, fault)),
                              "an instance that fails its MD5 check is sent again (MaxHttpRetries 3)")


# --- truncated gzip ---------------------------------------------------------------------

def truncate_once(lab: Lab, match: Callable[[FrontRequest], bool], side: str) -> Any:
    """Cut the first matching gzip body in half: a request body (``side="request"``,
    the engine's upload) or an answer body (``"answer"``, the source's download)."""
    state = {"done": False}

    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        if side == "request" and not state["done"] and match(request) and request.body[:2] == b"\x1f\x8b":
            state["done"] = True
            lab.faults_injected += 1
            request.body = request.body[: len(request.body) // 2]
            return await forward(request)
        response = await forward(request)
        gzipped = response.body[:2] == b"\x1f\x8b"
        if side == "answer" and not state["done"] and match(request) and gzipped:
            state["done"] = True
            lab.faults_injected += 1
            response.body = response.body[: len(response.body) // 2]
        return response
    return handler


@scenario("truncated-gzip", "a truncated gzip stream (push: bucket body; pull: chunks answer; "
          "plain: gzip-encoded instance download)", "faults", ALL, NO_DELEGATE)
async def truncated_gzip(lab: Lab, transport: str) -> Verdict:
    options = small_options(Compression="gzip")
    if transport == "push":
        handler = truncate_once(lab, lambda r: r.method == "PUT" and r.path.startswith("/transfers/push/"),
                                "request")
        return await transfer_with(lab, transport, target_via=fronted(lab, handler), options=options)
    if transport == "pull":
        handler = truncate_once(lab, lambda r: r.path.startswith("/transfers/chunks/"), "answer")
    else:
        handler = truncate_once(lab, lambda r: r.path.endswith("/file"), "answer")
    return await transfer_with(lab, transport, source_via=fronted(lab, handler), options=options)


# --- a failing target -------------------------------------------------------------------

def _data_request(request: FrontRequest) -> bool:
    """Requests that deliver data to the target (not capability probes)."""
    if request.method == "PUT" and request.path.startswith("/transfers/push/"):
        return True
    return request.method == "POST" and (request.path == "/instances"
                                         or request.path.startswith("/transfers/push"))


@scenario("target-503-recovers", "the target answers 503 twice, then recovers", "faults", ALL,
          NO_DELEGATE)
async def target_503_recovers(lab: Lab, transport: str) -> Verdict:
    handler = fail_first(503, lab.rng.randint(1, 2), _data_request)
    verdict = await transfer_with(lab, transport, target_via=fronted(lab, handler))
    lab.faults_injected = verdict.faults_injected = handler.counter.count
    return require_completion(verdict, "MaxHttpRetries 3 covers two 503 answers")


@scenario("target-500-forever", "the target answers 500 to every upload, for good", "faults", ALL,
          NO_DELEGATE)
async def target_500_forever(lab: Lab, transport: str) -> Verdict:
    handler = fail_first(500, None, _data_request)
    verdict = await transfer_with(lab, transport, target_via=fronted(lab, handler),
                                  options=small_options(MaxHttpRetries=2))
    lab.faults_injected = verdict.faults_injected = handler.counter.count
    return verdict


# --- servers going away -----------------------------------------------------------------

@scenario("target-restart", "the target Orthanc restarted mid-transfer (staged transactions reloaded, "
          "plain uploads retried)",
          "faults", ALL, NO_DELEGATE)
async def target_restart(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    # A slow link so that the restart lands while buckets are still moving.
    proxy = await lab.proxy(target, bandwidth_mbit=2.0)

    point = strike_point(lab, 400_000)

    async def restart(watch: Watch) -> None:
        await watch.until(lambda: watch.bytes_done >= point, 30)
        await asyncio.to_thread(target.restart)
        lab.faults_injected += 1
    result = await lab.run_job(lab.peer("source", source.url), lab.peer("target", proxy.url),
                               resources, transport, small_options(MaxHttpRetries=8), during=restart)
    return require_completion(await lab.classify(checker, result),
                              "the push transaction survives the restart (or is recreated) and the job goes on")


@scenario("source-stopped", "the source Orthanc stopped mid-transfer", "faults", ALL, NO_DELEGATE)
async def source_stopped(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    source.keep_storage = True   # stopped, not wiped: it is started again for the final check
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    proxy = await lab.proxy(source, bandwidth_mbit=2.0)

    point = strike_point(lab, 400_000)

    async def stop(watch: Watch) -> None:
        await watch.until(lambda: watch.bytes_done >= point, 30)
        await asyncio.to_thread(source.stop)
        lab.faults_injected += 1
    result = await lab.run_job(lab.peer("source", proxy.url), lab.peer("target", target.url),
                               resources, transport, small_options(MaxHttpRetries=1, HttpTimeout=3),
                               during=stop)
    await asyncio.to_thread(source.start)
    return await lab.classify(checker, result)


@scenario("commit-timeout", "the commit times out (PeerCommitTimeout 1 s) while the target imports",
          "faults", ("push", "pull", "plain", "delegate"),
          {"pull": "in this layout the pull target is a stock Orthanc: no commit (an accelerated "
                   "target is the push column's path)",
           "plain": "no commit in plain mode", **NO_DELEGATE})
async def commit_timeout(lab: Lab, transport: str) -> Verdict:
    """The first commit reaches the target at once and imports, but its answer
    comes 2.5 s late: the engine's 1 s PeerCommitTimeout expires while the
    target is importing. Whatever the engine does next (poll, verify, retry,
    discard), the end state must be one of the two outcomes."""
    late: List["asyncio.Task[FrontResponse]"] = []

    async def late_answer(request: FrontRequest, forward: Forward) -> FrontResponse:
        if request.method == "POST" and request.path.endswith("/commit") and not late:
            lab.faults_injected += 1
            # The import runs to its end even if the engine hangs up meanwhile.
            late.append(asyncio.ensure_future(forward(request)))
            answer = await asyncio.shield(late[0])
            await asyncio.sleep(2.5)
            return answer
        return await forward(request)

    async def import_finished() -> None:
        if late:
            await asyncio.wait(late, timeout=60)
    return await transfer_with(lab, transport, target_via=fronted(lab, late_answer),
                               options=small_options(PeerCommitTimeout=1), after=import_finished)


@scenario("two-jobs", "two jobs send the same study to the same target at once", "faults", ALL,
          NO_DELEGATE)
async def two_jobs(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    jobs = [lab.run_job(lab.peer("source", source.url), lab.peer("target", target.url),
                        resources, transport, engine_dir=lab.workdir / f"engine{n}")
            for n in range(2)]
    first, second = await asyncio.gather(*jobs)
    lab.faults_injected += 1
    # The study must arrive whole once; a job that lost the race may fail, but cleanly.
    for result in (first, second):
        if not result.succeeded and not result.error:
            return Verdict(Outcome.FAILED, "one of the two jobs failed without a reason")
    merged = first if first.succeeded else second
    merged.logs = first.logs + second.logs
    return require_completion(await lab.classify(checker, merged),
                              "the same study twice: at least one job delivers it")


# --- the desktop process killed -----------------------------------------------------------

def cli_command(source: str, target: str, study: str, transport: str) -> List[str]:
    return [sys.executable, "-m", "gui.cli", "send", "--from", source, "--to", target,
            "--study", study, "--mode", transport, "--bucket-size", "64", "--threads", "2",
            "--retries", "3", "--timeout", "5", "--json"]


@scenario("sigkill-resume", "the desktop process killed (SIGKILL) mid-transfer, then run again",
          "faults", ALL, NO_DELEGATE)
async def sigkill_resume(lab: Lab, transport: str) -> Verdict:
    from urllib.parse import quote
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    proxy = await lab.proxy(target, bandwidth_mbit=1.0)   # about 5 s for the study

    def with_auth(url: str) -> str:
        return url.replace("http://", f"http://{USERNAME}:{quote(lab.password)}@")
    env = dict(os.environ, ORTHANC_TRANSFERS_DATA=str(lab.workdir / "cli-data"),
               ORTHANC_TRANSFERS_CONFIG=str(lab.workdir / "cli-config.json"),
               ORTHANC_TRANSFERS_KEYRING="0")
    command = cli_command(with_auth(source.url), with_auth(proxy.url), resources[0]["ID"], transport)
    repo = Path(__file__).resolve().parents[3]
    first = await asyncio.create_subprocess_exec(*command, cwd=repo, env=env,
                                                 stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    point = 100_000 if lab.seed == 0 else lab.rng.randint(1, 500_000)
    while proxy.stats.bytes_up < point and first.returncode is None and loop.time() < deadline:
        await asyncio.sleep(0.05)   # polling a byte counter: the condition, not a fixed sleep
    if first.returncode is None:
        first.send_signal(signal.SIGKILL)
        lab.faults_injected += 1
    await first.communicate()
    second = await asyncio.create_subprocess_exec(*command, cwd=repo, env=env,
                                                  stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(second.communicate(), 90)
    try:
        report = json.loads(out.decode() or "null")
    except ValueError:
        report = None
    succeeded = second.returncode == 0 and isinstance(report, dict) and report.get("state") == "Success"
    error = (report or {}).get("error") if isinstance(report, dict) else err.decode(errors="replace")[-500:]
    result = JobResult(succeeded, error, report if isinstance(report, dict) else None,
                       logs=err.decode(errors="replace"))
    verdict = require_completion(await lab.classify(checker, result),
                                 "the job resumes after the restart and completes")
    if verdict.outcome is Outcome.COMPLETED_VERIFIED:
        # Resumed, not started over: the job database holds one job, the killed one.
        from gui.engine.job_store import JobStore
        store = JobStore(lab.workdir / "cli-data")
        try:
            jobs = store.load_jobs()
        finally:
            store.close()
        if len(jobs) != 1:
            return Verdict(Outcome.FAILED, f"the second run did not resume the killed job: "
                           f"{len(jobs)} jobs in the job database")
    return verdict


# --- disk full in the staging directory ---------------------------------------------------

@scenario("staging-disk-full", "disk full in the engine's staging directory (injected ENOSPC)",
          "faults", ALL, NO_DELEGATE)
async def staging_disk_full(lab: Lab, transport: str) -> Verdict:
    """ENOSPC is injected: every write of a file under the engine's data
    directory fails as on a full disk. (A tiny tmpfs would need mount rights;
    the injection is portable and hits exactly the staging writes.)"""
    import builtins
    import io
    staging_root = str(lab.workdir / "engine")
    real_open = builtins.open
    real_os_open = os.open

    def is_staging(path: Any) -> bool:
        text = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        text = text.decode() if isinstance(text, bytes) else text
        return text.startswith(staging_root) and "jobs.sqlite3" not in text

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if is_staging(file) and any(m in mode for m in "wax+"):
            lab.faults_injected += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    def full_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if is_staging(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            lab.faults_injected += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source, large=True)   # 2 MB: beyond CacheSize 1 MB
    checker = await lab.checker(source, target)
    builtins.open = io.open = full_open  # type: ignore[assignment]
    os.open = full_os_open  # type: ignore[assignment]
    try:
        result = await lab.run_job(lab.peer("source", source.url), lab.peer("target", target.url),
                                   resources, transport, small_options(CacheSize=1))
    finally:
        builtins.open = io.open = real_open  # type: ignore[assignment]
        os.open = real_os_open  # type: ignore[assignment]
    verdict = await lab.classify(checker, result)
    if not lab.faults_injected:
        verdict.detail += " (this transport wrote no staging file)"
    return verdict
