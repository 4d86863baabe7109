"""The fault-injecting HTTP front: forwards faithfully, injects exactly what it is told."""

from __future__ import annotations

import asyncio

import httpx

from tests.devtools.faults.http_front import HttpFront, canned, chain, fail_first, match_path, redirect, rewrite_json


def test_front_forwards_then_injects(orthanc_factory) -> None:
    server = orthanc_factory("upstream", username="u", password="p")

    async def scenario() -> None:
        failing = fail_first(503, 2, match_path("/system"))
        renamed = rewrite_json(match_path("/system"), lambda answer: dict(answer, Name="rewritten"))
        page = canned(match_path("/statistics"), 200, b"<html>portal</html>", "text/html")
        moved = redirect(match_path("/tools/now"), "http://elsewhere.invalid")
        async with HttpFront(server.url, chain(failing, renamed, page, moved)) as front:
            async with httpx.AsyncClient(base_url=front.url, auth=("u", "p")) as http:
                statuses = [(await http.get("/system")).status_code for _ in range(3)]
                assert statuses == [503, 503, 200]
                # Orthanc gzips JSON for httpx: the rewrite sees and sends plain JSON.
                assert (await http.get("/system")).json()["Name"] == "rewritten"
                assert (await http.get("/statistics")).text == "<html>portal</html>"
                answer = await http.get("/tools/now")
                assert answer.status_code == 307
                assert answer.headers["location"] == "http://elsewhere.invalid/tools/now"
                # A chunked upload is reassembled before it goes on.
                dicom = b"not dicom"

                async def body():
                    yield dicom
                posted = await http.post("/tools/lookup", content=body())
                assert posted.status_code == 200
            assert failing.counter.count == 2
            assert any(r.header("authorization") for r in front.requests)
    asyncio.run(scenario())
