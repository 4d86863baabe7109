"""A stand-in for the C++ transfers plugin's job API, in front of a real,
stock Orthanc (tests.devtools.faults.http_front.HttpFront forwards everything else).

Allowed fake, for what only the C++ plugin does (its terse failures, its
jobs lost on restart): no server here runs the C++ plugin. Our Python
plugin's own send jobs are tested for real in test_delegated.py. The shapes follow docs/protocol.md:
``POST /transfers/send`` answers ``{"ID", "Path"}`` (push) or
``{"Peer", "RemoteJob", "URL"}`` (pull); ``GET /jobs/{id}`` shows ``State``,
``Progress`` and ``Content``; ``/jobs/{id}/pause|resume|cancel`` control it.
The job advances one step per status query (no clocks), and when it
reaches 100 % it really copies the instances from the source Orthanc to the
target Orthanc through their REST APIs, so the result can be verified.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Dict, List, Optional

import httpx

from tests.devtools.faults.http_front import FrontRequest, FrontResponse

JOB_RE = re.compile(r"^/jobs/([0-9a-f-]+)(?:/(pause|resume|cancel))?$")


class FakeTransfersJobs:
    def __init__(self, source_url: str, target_url: str, *, pull_mode: bool = False,
                 fail_at: Optional[int] = None, step: int = 25) -> None:
        self.source_url = source_url
        self.target_url = target_url
        self.pull_mode = pull_mode
        self.fail_at = fail_at
        self.step = step
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.sends: List[FrontRequest] = []
        self.controls: List[str] = []
        self.target_front_url = ""   # where the target's /jobs are served in pull mode

    # --- the front on the source ------------------------------------------------------

    async def source_handler(self, request: FrontRequest, forward) -> FrontResponse:
        if request.path == "/transfers/peers" and request.method == "GET":
            return FrontResponse.of_json(200, {"target-peer": "bidirectional" if self.pull_mode
                                               else "installed"})
        if request.path == "/transfers/send" and request.method == "POST":
            return self._send(request)
        if not self.pull_mode and JOB_RE.match(request.path):
            return await self._job(request)
        return await forward(request)

    async def target_handler(self, request: FrontRequest, forward) -> FrontResponse:
        if self.pull_mode and JOB_RE.match(request.path):
            return await self._job(request)
        return await forward(request)

    def _send(self, request: FrontRequest) -> FrontResponse:
        self.sends.append(request)
        body = json.loads(request.body)
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = {"ID": job_id, "State": "Running", "Progress": 0,
                             "Type": "PullTransfer" if self.pull_mode else "PushTransfer",
                             "Content": {"Resources": body["Resources"], "Peer": body["Peer"],
                                         "Compression": body["Compression"],
                                         "TotalInstances": len(body["Resources"])}}
        if self.pull_mode:
            return FrontResponse.of_json(200, {"Peer": body["Peer"], "RemoteJob": job_id,
                                               "URL": f"{self.target_front_url}/jobs/{job_id}"})
        return FrontResponse.of_json(200, {"ID": job_id, "Path": f"/jobs/{job_id}"})

    async def _job(self, request: FrontRequest) -> FrontResponse:
        job_id, action = JOB_RE.match(request.path).groups()  # type: ignore[union-attr]
        job = self.jobs.get(job_id)
        if job is None:
            return FrontResponse.of_json(404, {"HttpStatus": 404, "Message": "Unknown resource"})
        if action:
            self.controls.append(action)
            if action == "pause" and job["State"] == "Running":
                job["State"] = "Paused"
            elif action == "resume" and job["State"] == "Paused":
                job["State"] = "Running"
            elif action == "cancel" and job["State"] not in ("Success", "Failure"):
                job.update(State="Failure", ErrorCode=37, ErrorDescription="Job was canceled")
            return FrontResponse.of_json(200, {})
        if job["State"] == "Running":
            job["Progress"] = min(100, job["Progress"] + self.step)
            if self.fail_at is not None and job["Progress"] >= self.fail_at:
                # What the C++ plugin reports: a code, no details.
                job.update(State="Failure", ErrorCode=1, ErrorDescription="Internal error")
            elif job["Progress"] >= 100:
                await self._copy(job)
                job["State"] = "Success"
        return FrontResponse.of_json(200, job)

    async def _copy(self, job: Dict[str, Any]) -> None:
        async with httpx.AsyncClient() as http:
            for resource in job["Content"]["Resources"]:
                data = (await http.get(f"{self.source_url}/instances/{resource['ID']}/file")).content
                (await http.post(f"{self.target_url}/instances", content=data)).raise_for_status()
