"""Instances that fail their MD5 check are sent again (issue item 1).

One byte of one instance is flipped on its way — in the upload to the
target or in the download from the source — by an HTTP front in front of a
real Orthanc. With ``MaxHttpRetries`` 3 every mode must end
complete-verified, and the report must name the re-sent instance and why.
Before re-sending existed each of these ended as a clean failure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

import pytest

from tests.devtools.faults.http_front import FrontRequest, FrontResponse, Forward
from tests.devtools.faults.lab import Lab, small_options

pytestmark = pytest.mark.timeout(180)


def flip(data: bytes) -> bytes:
    # Three quarters in: inside an instance's pixel data, not a ZIP directory or a DICOM header.
    at = len(data) * 3 // 4
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]


def corrupt_once(match: Callable[[FrontRequest], bool], side: str, hits: list):
    async def handler(request: FrontRequest, forward: Forward) -> FrontResponse:
        if side == "request" and not hits and match(request) and len(request.body) > 20_000:
            hits.append(request.path)
            request.body = flip(request.body)
            return await forward(request)
        response = await forward(request)
        plain_body = (response.header("content-encoding") or "").lower() != "gzip"
        if side == "answer" and not hits and match(request) and plain_body \
                and response.status == 200 and len(response.body) > 20_000:
            hits.append(request.path)
            response.body = flip(response.body)
        return response
    return handler


def is_upload(request: FrontRequest) -> bool:
    return (request.method == "PUT" and request.path.startswith("/transfers/push/")) or \
        (request.method == "POST" and request.path == "/instances")


def is_download(request: FrontRequest) -> bool:
    return request.method == "GET" and (request.path.startswith("/transfers/chunks/")
                                        or request.path.endswith("/file"))


async def scenario(tmp_path: Path, transport: str, side: str, compression: str = "none") -> tuple:
    lab = Lab(tmp_path, seed=7)
    try:
        source, target = await lab.pair(transport)
        resources = await lab.seed_study(source)
        checker = await lab.checker(source, target)
        hits: list = []
        if side == "request":
            front = await lab.front(target.url, corrupt_once(is_upload, side, hits))
            source_url, target_url = source.url, front.url
        else:
            front = await lab.front(source.url, corrupt_once(is_download, side, hits))
            source_url, target_url = front.url, target.url
        result = await lab.run_job(lab.peer("source", source_url), lab.peer("target", target_url),
                                   resources, transport, small_options(Compression=compression,
                                                                       MaxHttpRetries=3))
        verdict = await lab.classify(checker, result)
        return hits, verdict, result
    finally:
        await lab.aclose()


@pytest.mark.parametrize("side", ["request", "answer"], ids=["upload", "download"])
@pytest.mark.parametrize("transport", ["push", "pull", "plain"])
def test_a_corrupted_instance_is_sent_again_and_the_report_says_so(tmp_path: Path, transport: str,
                                                                   side: str) -> None:
    hits, verdict, result = asyncio.run(scenario(tmp_path, transport, side))
    assert hits, "the fault was not injected"
    assert verdict.outcome.value == "completed-verified", verdict.detail
    resent = result.report["resent"]
    assert len(resent) >= 1, result.report
    assert all(r["attempts"] >= 1 and r["reasons"] for r in resent)
    assert any("MD5" in reason or "refused" in reason or "corrupted" in reason
               for r in resent for reason in r["reasons"]), resent


def test_a_corrupted_gzip_bucket_is_sent_again(tmp_path: Path) -> None:
    """One byte flipped in a gzip bucket body: the plugin refuses it (400,
    Bad file format); the bucket is PUT again and the job completes."""
    hits, verdict, result = asyncio.run(scenario(tmp_path, "push", "request", compression="gzip"))
    assert hits, "the fault was not injected"
    assert verdict.outcome.value == "completed-verified", verdict.detail


def test_a_link_that_corrupts_every_time_still_fails_cleanly(tmp_path: Path) -> None:
    """The budget is MaxHttpRetries re-sends per instance: a target link that
    flips a byte in every upload ends as a clean failure, target unchanged."""
    async def run() -> tuple:
        lab = Lab(tmp_path, seed=8)
        try:
            source, target = await lab.pair("push")
            resources = await lab.seed_study(source)
            checker = await lab.checker(source, target)

            async def always(request: FrontRequest, forward: Forward) -> FrontResponse:
                if is_upload(request) and len(request.body) > 20_000:
                    request.body = flip(request.body)
                return await forward(request)
            front = await lab.front(target.url, always)
            result = await lab.run_job(lab.peer("source", source.url), lab.peer("target", front.url),
                                       resources, "push", small_options(Compression="none",
                                                                        MaxHttpRetries=2))
            return await lab.classify(checker, result), result
        finally:
            await lab.aclose()
    verdict, result = asyncio.run(run())
    assert verdict.outcome.value == "unchanged-clean-failure", verdict.detail
    assert result.report["resent"] and all(r["attempts"] == 2 for r in result.report["resent"])
