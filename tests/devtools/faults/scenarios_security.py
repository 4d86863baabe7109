"""Security: secrets stay secret, private files stay private, the server
plugin cannot be talked into reading, writing or allocating what it should not.
"""

from __future__ import annotations

import asyncio
import json
import stat
import zlib
from pathlib import Path
from typing import Any, List, Tuple

import httpx

from gui.client import OrthancClient, OrthancError
from tests.devtools.faults.checker import Outcome, Verdict, snapshot
from tests.devtools.faults.lab import USERNAME, Lab
from tests.devtools.faults.registry import scenario
from tests.devtools.faults.scenarios_network import NO_DELEGATE

ALL = ("push", "pull", "plain", "delegate")
ESCAPE_NAME = "escaped-by-a-path-id"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@scenario("secrets-and-permissions", "a transfer with a password: nothing leaks (DEBUG logs with "
          "httpx/httpcore, report, job database, errors); job database and config are 0600",
          "security", ALL, NO_DELEGATE)
async def secrets_and_permissions(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    result = await lab.run_job(lab.peer("source", source.url), lab.peer("target", target.url),
                               resources, transport)
    verdict = await lab.classify(checker, result)   # includes the leak check
    if not verdict.outcome.acceptable:
        return verdict
    problems = []
    databases = sorted((lab.workdir / "engine").glob("jobs.sqlite3*"))
    if not databases:
        problems.append("no job database was written")
    for path in databases:
        if _mode(path) & 0o077:
            problems.append(f"{path.name} is readable by others ({oct(_mode(path))})")
    problems += _config_problems(lab)
    problems += await _error_problems(lab, target.url)
    if problems:
        return Verdict(Outcome.FAILED, "; ".join(problems))
    return verdict


def _config_problems(lab: Lab) -> List[str]:
    """Save a config holding a peer password (no keyring): the file must be 0600."""
    from gui.config.settings import AppConfig, SecretStore, save_config
    path = lab.workdir / "config" / "config.json"
    config = AppConfig(path=path)
    config.set_peer(lab.peer("target", "http://127.0.0.1:1"))
    save_config(config, SecretStore(enabled=False))
    if _mode(path) & 0o077:
        return [f"the config file is readable by others ({oct(_mode(path))})"]
    return []


async def _error_problems(lab: Lab, url: str) -> List[str]:
    """Errors shown to the user name the place but never the password."""
    problems = []
    for peer in (lab.peer("t", url.replace("http://", f"http://{USERNAME}:{lab.password}@")),
                 lab.peer("t", "http://127.0.0.1:1")):
        async with OrthancClient(peer) as client:
            try:
                await client.get_json("/no-such-route")
            except OrthancError as exc:
                shown = f"{exc} {exc!r} {exc.url}"
                if any(secret in shown for secret in lab.secret_forms()):
                    problems.append("an OrthancError shows the password")
    return problems


# --- the server plugin under hostile requests -------------------------------------------

HUNDRED_GB = str(100 * 1024 ** 3)
FAKE_ID = "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"


def _hostile_requests(escape: str) -> List[Tuple[str, str, Any, str]]:
    """(method, path, body, what) — each must be refused with a 4xx, or 413/507."""
    instance = {"ID": FAKE_ID, "Size": "1000", "MD5": "0" * 32}
    chunk = {"ID": FAKE_ID, "Offset": "0", "Size": "1000"}
    return [
        ("POST", "/transfers/lookup", [{"Level": "Instance", "ID": f"../../{escape}"}], "path-like lookup ID"),
        ("GET", f"/transfers/chunks/..%2F..%2F{escape}?offset=0&size=0", None, "path-like chunk ID"),
        ("GET", f"/transfers/chunks/{FAKE_ID}.{'.'.join(['..'] * 3)}", None, "dots in chunk IDs"),
        ("POST", "/transfers/push", {"Instances": [dict(instance, ID=f"../../{escape}")],
                                     "Buckets": [[dict(chunk, ID=f"../../{escape}")]],
                                     "Compression": "none"}, "path-like instance ID in a push"),
        ("PUT", f"/transfers/push/..%2F..%2F{escape}/0", b"x" * 10, "path-like transaction ID"),
        ("DELETE", f"/transfers/push/..%2F..%2F{escape}", None, "path-like transaction ID (delete)"),
        ("POST", "/transfers/push", {"Instances": [dict(instance, Size=HUNDRED_GB)],
                                     "Buckets": [[dict(chunk, Size=HUNDRED_GB)]],
                                     "Compression": "none"}, "a 100 GB transaction"),
        ("POST", "/transfers/push", {"Instances": [dict(instance, Size="9" * 30)],
                                     "Buckets": [[dict(chunk, Size="9" * 30)]],
                                     "Compression": "none"}, "a 30-digit size"),
        ("POST", "/transfers/push", {"Instances": [dict(instance, ID=f"{n:08x}-0123abcd-0123abcd-0123abcd-0123abcd")
                                                   for n in range(200_001)],
                                     "Buckets": [], "Compression": "none"}, "200 001 instances"),
        ("POST", "/transfers/lookup", [{"Level": "Instance", "ID": FAKE_ID}] * 20_001, "20 001 lookups"),
        ("GET", f"/transfers/chunks/{FAKE_ID}?offset=0&size={HUNDRED_GB}", None, "a 100 GB chunk of nothing"),
    ]


def _rss(server: Any) -> int:
    import psutil
    return psutil.Process(server.process.pid).memory_info().rss


@scenario("plugin-hostile-input", "the server plugin refuses path-like IDs, huge sizes and counts, "
          "a gzip bomb, and answers 401 without credentials", "security", ("any",))
async def plugin_hostile_input(lab: Lab, transport: str) -> Verdict:
    # The staging area two levels below the lab directory: an ID that climbs
    # out of it with "../../" would land in the lab directory, where we look.
    staging = lab.workdir / "plugin" / "staging"
    server = await lab.orthanc("target", accelerator=True, extra_config={
        "Transfers": {"MaxStagedSize": 64, "MinFreeDiskSpace": 0, "MaxBucketSize": 8,
                      "StagingDirectory": str(staging)}})
    await lab.seed_study(server)
    before = await asyncio.to_thread(snapshot, server)
    rss_before = _rss(server)
    problems: List[str] = []
    auth = (USERNAME, lab.password)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for path in ("/transfers/lookup", "/transfers/push", f"/transfers/push/{FAKE_ID}/commit"):
            answer = await http.post(path, content=b"[]")
            if answer.status_code != 401:
                problems.append(f"POST {path} without credentials: HTTP {answer.status_code}")
        answer = await http.get(f"/transfers/chunks/{FAKE_ID}")
        if answer.status_code != 401:
            problems.append(f"GET chunks without credentials: HTTP {answer.status_code}")
        for method, path, body, what in _hostile_requests(ESCAPE_NAME):
            lab.faults_injected += 1
            content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
            answer = await http.request(method, path, content=content, auth=auth)
            if not 400 <= answer.status_code < 500 and answer.status_code not in (507,):
                problems.append(f"{what}: HTTP {answer.status_code} (expected a refusal)")
        problems += await _gzip_bomb(lab, http, auth)
    rss_after = _rss(server)
    if rss_after - rss_before > 300 * 1024 ** 2:
        problems.append(f"Orthanc grew by {(rss_after - rss_before) // 1024 ** 2} MB")
    escaped = [str(p) for p in lab.workdir.rglob(f"*{ESCAPE_NAME}*")] \
        + [str(p) for p in Path(server.workdir).rglob(f"*{ESCAPE_NAME}*")]
    if escaped:
        problems.append(f"files written outside the staging area: {escaped[:3]}")
    if server.process.poll() is not None:
        problems.append("Orthanc died")
        return Verdict(Outcome.FAILED, "; ".join(problems))
    after = await asyncio.to_thread(snapshot, server)
    if after != before:
        problems.append("the server's instances changed")
    if problems:
        return Verdict(Outcome.FAILED, "; ".join(problems))
    return Verdict(Outcome.UNCHANGED_CLEAN_FAILURE,
                   f"{lab.faults_injected} hostile requests refused, 401 without credentials")


async def _gzip_bomb(lab: Lab, http: httpx.AsyncClient, auth: Tuple[str, str]) -> List[str]:
    """A bucket declared as 1000 bytes whose gzip body inflates to 1 GB."""
    lab.faults_injected += 1
    request = {"Instances": [{"ID": FAKE_ID, "Size": "1000", "MD5": "0" * 32}],
               "Buckets": [[{"ID": FAKE_ID, "Offset": "0", "Size": "1000"}]], "Compression": "gzip"}
    created = await http.post("/transfers/push", content=json.dumps(request).encode(), auth=auth)
    if created.status_code != 200:
        return [f"could not create a transaction for the gzip bomb: HTTP {created.status_code}"]
    tid = created.json()["ID"]
    bomb = _gzip_of_zeros(1024 ** 3)
    answer = await http.put(f"/transfers/push/{tid}/0", content=bomb, auth=auth)
    problems = []
    if not 400 <= answer.status_code < 600 or answer.status_code == 200:
        problems.append(f"gzip bomb: HTTP {answer.status_code}")
    commit = await http.post(f"/transfers/push/{tid}/commit", content=b"", auth=auth)
    if commit.status_code == 200:
        problems.append("a transaction fed a gzip bomb committed")
    await http.delete(f"/transfers/push/{tid}", auth=auth)
    return problems


def _gzip_of_zeros(size: int) -> bytes:
    """About 1 MB of gzip that inflates to ``size`` zero bytes."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [deflate.compress(block) for _ in range(size // len(block))]
    parts.append(deflate.flush())
    return b"".join(parts)
