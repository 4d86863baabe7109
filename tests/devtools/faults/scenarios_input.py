"""Bad input: lying or broken answers, wrong addresses, wrong credentials,
untrusted certificates, files that are not DICOM.

Each must end with a clear error and nothing imported on the target.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any, Dict

from gui.client import OrthancClient, OrthancError
from tests.devtools.faults.checker import Outcome, TransferChecker, Verdict
from tests.devtools.faults.http_front import FrontRequest, canned, redirect, rewrite_json
from tests.devtools.faults.lab import JobResult, Lab, small_options
from tests.devtools.faults.registry import scenario
from tests.devtools.faults.scenarios_network import NO_DELEGATE, fronted, transfer_with
from tests.devtools.faults.tls import make_certificate

ALL = ("push", "pull", "plain", "delegate")
PULL_ONLY = {"push": "the lookup is answered by the source, which is stock in this layout",
             "plain": "no lookup in plain mode", **NO_DELEGATE}
HUNDRED_GB = 100 * 1024 ** 3


def _lookup(request: FrontRequest) -> bool:
    """A real lookup (the engine's capability probe posts ``[]``: left alone)."""
    return (request.path == "/transfers/lookup" and request.method == "POST"
            and request.body.strip() != b"[]")


def _listing(request: FrontRequest) -> bool:
    """The answers a planner reads to learn what to send (both kinds of source)."""
    if _lookup(request):
        return True
    return request.method == "GET" and request.path.startswith(("/studies/", "/series/", "/patients/"))


async def _must_fail(lab: Lab, verdict: Verdict) -> Verdict:
    """For input that cannot be right: a completed transfer means it was not noticed."""
    if verdict.outcome is Outcome.COMPLETED_VERIFIED:
        return Verdict(Outcome.FAILED, "the bad input was not noticed: " + verdict.detail)
    return verdict


def _rewrite_instances(change: Any) -> Any:
    def rewrite(answer: Any) -> Any:
        for info in answer.get("Instances", [])[:1]:
            change(info)
        return answer
    return rewrite


@scenario("lookup-wrong-md5", "a lookup answer with a wrong MD5", "bad input", ALL, PULL_ONLY)
async def lookup_wrong_md5(lab: Lab, transport: str) -> Verdict:
    def change(info: Dict[str, str]) -> None:
        info["MD5"] = hashlib.md5(b"not the file").hexdigest()
    lab.faults_injected += 1
    handler = rewrite_json(_lookup, _rewrite_instances(change))
    return await _must_fail(lab, await transfer_with(lab, transport, source_via=fronted(lab, handler)))


@scenario("lookup-wrong-size", "a lookup answer with a wrong size", "bad input", ALL, PULL_ONLY)
async def lookup_wrong_size(lab: Lab, transport: str) -> Verdict:
    def change(info: Dict[str, str]) -> None:
        info["Size"] = str(int(info["Size"]) + 1000)
    lab.faults_injected += 1
    handler = rewrite_json(_lookup, _rewrite_instances(change))
    return await _must_fail(lab, await transfer_with(lab, transport, source_via=fronted(lab, handler)))


class PeakRss:
    """Peak resident memory of this process while a block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        import psutil
        self._process = psutil.Process()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1024 ** 2


async def _hundred_gb(lab: Lab, transport: str, bucket_kb: int) -> Verdict:
    def change(info: Dict[str, str]) -> None:
        info["Size"] = str(HUNDRED_GB)
    lab.faults_injected += 1
    handler = rewrite_json(_lookup, _rewrite_instances(change))
    with PeakRss() as memory:
        verdict = await transfer_with(lab, transport, source_via=fronted(lab, handler),
                                      options=small_options(BucketSize=bucket_kb))
    if memory.growth_mb > 512:
        return Verdict(Outcome.FAILED, f"memory grew by {memory.growth_mb:.0f} MB for a 100 GB "
                       f"claim (bucket size {bucket_kb} KB); {verdict}")
    verdict.notes.append(f"memory growth {memory.growth_mb:.0f} MB")
    return await _must_fail(lab, verdict)


@scenario("lookup-100gb", "a lookup claiming an instance of 100 GB, BucketSize 4096 KB "
          "(memory growth checked)", "bad input", ALL, PULL_ONLY)
async def lookup_100gb(lab: Lab, transport: str) -> Verdict:
    return await _hundred_gb(lab, transport, 4096)


@scenario("lookup-100gb-small-buckets", "a lookup claiming an instance of 100 GB, BucketSize "
          "64 KB (refused at planning: the lookup disagrees with the REST listing)", "bad input",
          ALL, PULL_ONLY)
async def lookup_100gb_small_buckets(lab: Lab, transport: str) -> Verdict:
    return await _hundred_gb(lab, transport, 64)


@scenario("invalid-json", "invalid JSON where the source's listing should be", "bad input", ALL,
          NO_DELEGATE)
async def invalid_json(lab: Lab, transport: str) -> Verdict:
    lab.faults_injected += 1
    handler = canned(_listing, 200, b'{"Instances": [ {"ID": ', "application/json")
    return await _must_fail(lab, await transfer_with(lab, transport, source_via=fronted(lab, handler)))


@scenario("html-page", "an HTML page instead of JSON (a captive portal, a proxy's error page)",
          "bad input", ALL, NO_DELEGATE)
async def html_page(lab: Lab, transport: str) -> Verdict:
    lab.faults_injected += 1
    page = b"<!DOCTYPE html><html><body><h1>Please log in</h1></body></html>"
    handler = canned(_listing, 200, page, "text/html")
    verdict = await _must_fail(lab, await transfer_with(lab, transport, source_via=fronted(lab, handler)))
    return verdict


@scenario("redirect-other-host", "the target redirects uploads to another host: not followed, "
          "no credentials sent there", "bad input", ALL, NO_DELEGATE)
async def redirect_other_host(lab: Lab, transport: str) -> Verdict:
    # The "other host" is a front that records whatever reaches it.
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    trap = await lab.front(target.url, canned(lambda r: True, 200, b"{}"))
    data = lambda r: r.method in ("POST", "PUT") and (r.path == "/instances"  # noqa: E731
                                                     or r.path.startswith("/transfers/push"))
    front = await lab.front(target.url, redirect(data, trap.url.replace("127.0.0.1", "localhost")))
    lab.faults_injected += 1
    result = await lab.run_job(lab.peer("source", source.url), lab.peer("target", front.url),
                               resources, transport, small_options(MaxHttpRetries=1))
    if trap.requests:
        authorized = any(r.header("authorization") for r in trap.requests)
        return Verdict(Outcome.FAILED, f"the redirect was followed ({len(trap.requests)} requests"
                       f"{', with credentials' if authorized else ''})")
    return await _must_fail(lab, await lab.classify(checker, result))


@scenario("unknown-resource", "unknown resource IDs", "bad input", ALL, NO_DELEGATE)
async def unknown_resource(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    await lab.seed_study(source)
    checker = await lab.checker(source, target, expected=[])
    missing = [{"Level": "Study", "ID": "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"}]
    result = await lab.run_job(lab.peer("source", source.url), lab.peer("target", target.url),
                               missing, transport)
    if result.succeeded:
        return Verdict(Outcome.FAILED, "a transfer of an unknown study reported Success")
    return await lab.classify(checker, result)


@scenario("wrong-credentials", "wrong credentials for the target", "bad input", ALL, NO_DELEGATE)
async def wrong_credentials(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    wrong = lab.peer("target", target.url, password=lab.password + "-wrong")
    # The client alone: a 401 becomes a readable error without the password.
    async with OrthancClient(wrong) as client:
        try:
            await client.system()
            return Verdict(Outcome.FAILED, "a wrong password was accepted")
        except OrthancError as exc:
            if "password" not in str(exc).lower() or lab.password in str(exc):
                return Verdict(Outcome.FAILED, f"unclear or leaking error: {exc}")
    result = await lab.run_job(lab.peer("source", source.url), wrong, resources, transport)
    return await _must_fail(lab, await lab.classify(checker, result))


@scenario("tls-trusted", "control: a self-signed certificate whose CA bundle the peer trusts "
          "(the TLS front itself works)", "bad input", ALL, NO_DELEGATE)
async def tls_trusted(lab: Lab, transport: str) -> Verdict:
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    cert = make_certificate(lab.workdir / "tls")
    front = await lab.front(target.url, ssl_context=cert.server_context())
    target_peer = lab.peer("target", front.url, ca_bundle=str(cert.cert_file))
    result = await lab.run_job(lab.peer("source", source.url), target_peer, resources, transport)
    verdict = await lab.classify(checker, result)
    if verdict.outcome is Outcome.UNCHANGED_CLEAN_FAILURE:
        return Verdict(Outcome.FAILED, f"a trusted certificate was refused: {verdict.detail}")
    return verdict


async def _tls_case(lab: Lab, transport: str, expired: bool) -> Verdict:
    source, target = await lab.pair(transport)
    resources = await lab.seed_study(source)
    checker = await lab.checker(source, target)
    cert = make_certificate(lab.workdir / "tls", expired=expired)
    front = await lab.front(target.url, ssl_context=cert.server_context())
    lab.faults_injected += 1
    # Verification on (the default). The expired certificate is trusted as a
    # CA so that its expiry is the only thing wrong with it.
    target_peer = lab.peer("target", front.url, ca_bundle=str(cert.cert_file) if expired else None)
    word = "expired" if expired else "certificate"
    async with OrthancClient(target_peer) as client:
        try:
            await client.system()
            return Verdict(Outcome.FAILED, "an untrusted certificate was accepted")
        except OrthancError as exc:
            if word not in str(exc).lower():
                return Verdict(Outcome.FAILED, f"the error does not say '{word}': {exc}")
    result = await lab.run_job(lab.peer("source", source.url), target_peer, resources, transport)
    return await _must_fail(lab, await lab.classify(checker, result))


@scenario("tls-self-signed", "a self-signed certificate on the target, verification on",
          "bad input", ALL, NO_DELEGATE)
async def tls_self_signed(lab: Lab, transport: str) -> Verdict:
    return await _tls_case(lab, transport, expired=False)


@scenario("tls-expired", "an expired certificate on the target, verification on", "bad input",
          ALL, NO_DELEGATE)
async def tls_expired(lab: Lab, transport: str) -> Verdict:
    return await _tls_case(lab, transport, expired=True)


class _Files:
    """The checker's view of local files: Orthanc IDs and MD5s of the valid ones."""

    def __init__(self, md5s: Dict[str, str]) -> None:
        self.md5s = md5s

    def instance_md5s(self) -> Dict[str, str]:
        return dict(self.md5s)


@scenario("upload-bad-files", "non-DICOM and truncated DICOM files given to engine.upload_files",
          "bad input", ("any",))
async def upload_bad_files(lab: Lab, transport: str) -> Verdict:
    from gui.engine import TransferEngine
    from gui.engine.local_upload import orthanc_instance_id
    import pydicom
    from tests.devtools.faults.lab import LogCapture, study_files

    target = await lab.orthanc("target")
    folder = lab.workdir / "dropped"
    folder.mkdir()
    good: Dict[str, str] = {}
    for n, data in enumerate(study_files(lab.seed)[-3:]):
        path = folder / f"good{n}.dcm"
        path.write_bytes(data)
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        good[orthanc_instance_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                 ds.SOPInstanceUID)] = hashlib.md5(data).hexdigest()
    whole = study_files(lab.seed + 500)[0]
    (folder / "truncated.dcm").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 50)
    (folder / "empty.dcm").write_bytes(b"")
    lab.faults_injected += 4
    checker = await asyncio.to_thread(TransferChecker(_Files(good), target).before)
    with LogCapture() as logs:
        engine = TransferEngine(small_options(), data_dir=lab.workdir / "engine")
        await engine.start()
        try:
            job, skipped = await engine.upload_files(lab.peer("target", target.url), [folder])
            report = (await asyncio.wait_for(job.wait(), 60)).to_json() if job else None
        finally:
            await engine.close()
    skipped_names = {Path(p).name for p, _ in skipped}
    bad = {"truncated.dcm", "notes.txt", "fake.dcm", "empty.dcm"}
    if not all(reason for _, reason in skipped):
        return Verdict(Outcome.FAILED, "a skipped file has no reason")
    result = JobResult(bool(report and report["state"] == "Success"),
                       report.get("error") if report else "nothing to send", report, logs.text)
    verdict = await lab.classify(checker, result)
    # A truncated file may pass pydicom's header check and be refused by Orthanc
    # instead: the checker has already compared the target with the good files only.
    missing = bad - skipped_names - {"truncated.dcm"}
    if missing:
        return Verdict(Outcome.FAILED, f"bad files not reported as skipped: {sorted(missing)}")
    return verdict
