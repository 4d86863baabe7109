"""``POST /transfers/send``, ``POST /transfers/pull`` and the job routes.

Routes (answers in the C++ plugin's and Orthanc's shapes):

- ``POST /transfers/send`` → push mode ``{"ID", "Path"}``; to a peer declared
  with ``RemoteSelf``, the peer is asked to pull: ``{"Peer", "RemoteJob", "URL"}``.
- ``POST /transfers/pull`` → ``{"ID", "Path"}``.
- ``GET /jobs/{id}`` and ``POST /jobs/{id}/pause|resume|cancel|resubmit`` for
  this plugin's jobs (IDs starting with ``transfers-``; Orthanc's own jobs
  are not touched), ``GET /jobs`` lists Orthanc's jobs and this plugin's,
  ``GET /transfers/jobs`` only this plugin's (always expanded).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any, Dict, List, Optional

from .errors import BAD_REQUEST, UNKNOWN_RESOURCE, PluginError
from .http import Answer, parse_json_body
from .jobs import ACTIONS, JOB_ID_PATTERN, Job, JobRegistry
from .orthanc_peers import PeerConfig, find_peer, job_settings
from .peer_http import PeerError, PeerHttp
from .pull_job import PullRunner
from .send_job import SendRunner, new_transfer_id, parallel

PUSH_TYPE, PULL_TYPE = "PushTransfer", "PullTransfer"


class JobService:
    """What the runners need from the plugin, and the REST handlers."""

    def __init__(self, plugin: Any) -> None:
        self.api = plugin.api
        self.wire = plugin.wire
        self.options = plugin.options
        self.store = plugin.store
        self.importer = plugin.importer
        self.chunks = plugin.chunks
        self.lookup = plugin.lookup
        self.originator = plugin.originator
        warnings: List[str] = []
        self.job_settings = job_settings(self.configuration(), warnings)
        for warning in warnings:
            self.api.LogWarning("transfers: " + warning)
        self.registry = JobRegistry(os.path.join(self.options.staging_directory, "jobs"),
                                    {PUSH_TYPE: SendRunner(self), PULL_TYPE: PullRunner(self)},
                                    self.job_settings.concurrent_jobs, self.api.LogWarning, self.api.LogError)

    def configuration(self) -> Dict[str, Any]:
        return json.loads(self.api.GetConfiguration())

    # --- for the runners ---------------------------------------------------------

    def find_peer(self, name: Any) -> PeerConfig:
        return find_peer(self.api, self.configuration(), name)

    def peer_client(self, name: str) -> PeerHttp:
        settings = self.job_settings
        try:
            return PeerHttp(self.find_peer(name), settings.http_timeout, settings.max_retries,
                            settings.ca_file, settings.verify_peers)
        except PeerError as exc:
            raise PluginError(BAD_REQUEST, str(exc))

    def resolve_local(self, resources: List[Dict[str, str]]) -> List[Any]:
        """Instance infos of the resources on this server; an unknown one fails the job."""
        try:
            ids = self.lookup.instance_ids(resources)
        except PluginError as exc:
            raise PluginError(UNKNOWN_RESOURCE, "nothing was sent: %s is not on this server"
                              % exc.details.replace("lookup: unknown ", "the "))
        return parallel(ids, self.lookup.info, 4)

    def local_md5s(self, ids: List[str]) -> Dict[str, Optional[str]]:
        def one(instance_id: str) -> Optional[str]:
            try:
                return self.api.RestApiGet("/instances/%s/attachments/dicom/md5" % instance_id).decode().strip()
            except self.api.OrthancException:
                return None
        return dict(zip(ids, parallel(ids, one, 4)))

    # --- requests ----------------------------------------------------------------

    def _parse_request(self, request: Dict[str, Any], where: str) -> Dict[str, Any]:
        body = parse_json_body(request, self.options.max_request_size, where)
        if not isinstance(body, dict):
            raise PluginError(BAD_REQUEST, "%s: expected a JSON object with Resources, Compression and Peer" % where)
        for key in ("Resources", "Peer"):
            if key not in body:
                raise PluginError(BAD_REQUEST, "%s: missing key %r" % (where, key))
        resources = self.wire.parse_resources(body["Resources"], "%s.Resources" % where)
        if not resources:
            raise PluginError(BAD_REQUEST, "%s.Resources: nothing to transfer (empty list)" % where)
        compression = self.wire.parse_compression(body.get("Compression", "none"), "%s.Compression" % where)
        priority = body.get("Priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise PluginError(BAD_REQUEST, "%s.Priority: expected an integer" % where)
        transfer_id = body.get("SenderTransferID") or request_header(request, self.wire.SENDER_TRANSFER_ID_HEADER)
        if transfer_id is not None and not isinstance(transfer_id, str):
            raise PluginError(BAD_REQUEST, "%s.SenderTransferID: expected a string" % where)
        parsed = {"Resources": resources, "Compression": compression, "Peer": body["Peer"],
                  "SenderTransferID": transfer_id or new_transfer_id(), "Priority": priority}
        originator = body.get("Originator")
        if originator is not None:
            if not isinstance(originator, str):
                raise PluginError(BAD_REQUEST, "%s.Originator: expected a string" % where)
            parsed["Originator"] = originator
        return parsed

    def _submit(self, job_type: str, parsed: Dict[str, Any]) -> Answer:
        priority = parsed.pop("Priority")
        job = self.registry.submit(Job(job_type, parsed, priority))
        return Answer({"ID": job.id, "Path": "/jobs/%s" % job.id})

    def post_send(self, request: Dict[str, Any]) -> Answer:
        parsed = self._parse_request(request, "send")
        peer = self.find_peer(parsed["Peer"])     # unknown peer: 404 now, before any job
        if peer.remote_self:
            return self._ask_peer_to_pull(peer, parsed)
        return self._submit(PUSH_TYPE, parsed)

    def post_pull(self, request: Dict[str, Any]) -> Answer:
        parsed = self._parse_request(request, "pull")
        self.find_peer(parsed["Peer"])
        return self._submit(PULL_TYPE, parsed)

    def _ask_peer_to_pull(self, peer: PeerConfig, parsed: Dict[str, Any]) -> Answer:
        """Pull mode (``RemoteSelf``): the peer pulls from us under the name it gives us."""
        client = self.peer_client(peer.name)
        body = {"Resources": parsed["Resources"], "Compression": parsed["Compression"],
                "Peer": peer.remote_self, "Originator": self.originator}
        headers = {self.wire.SENDER_TRANSFER_ID_HEADER: parsed["SenderTransferID"]}
        try:
            answer = client.json("POST", self.wire.URI_PULL, body, headers=headers)
        except PeerError as exc:
            raise PluginError(UNKNOWN_RESOURCE if exc.status == 404 else BAD_REQUEST,
                              "send in pull mode (RemoteSelf of peer %r): %s" % (peer.name, exc),
                              http_status=exc.status if exc.status in (401, 404) else 502)
        finally:
            client.close()
        if not isinstance(answer, dict) or not isinstance(answer.get("ID"), str):
            raise PluginError(BAD_REQUEST, "peer %r answered the pull request with %r"
                              % (peer.name, str(answer)[:100]), http_status=502)
        return Answer({"Peer": peer.name, "RemoteJob": answer["ID"],
                       "URL": "%s/jobs/%s" % (peer.url.rstrip("/"), answer["ID"])})

    # --- jobs --------------------------------------------------------------------

    def get_job(self, request: Dict[str, Any], job_id: str) -> Answer:
        return Answer(self.registry.get(job_id).to_json())

    def post_action(self, request: Dict[str, Any], job_id: str, action: str) -> Answer:
        self.registry.control(job_id, action)
        return Answer({})

    def get_jobs(self, request: Dict[str, Any]) -> Answer:
        """Orthanc's own listing with this plugin's jobs appended."""
        query = request.get("get") or {}
        uri = "/jobs" + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            listed = json.loads(self.api.RestApiGet(uri))   # Orthanc's built-in route, not ours
        except self.api.OrthancException:
            listed = []
        mine = self.registry.list()
        if "expand" in query:
            listed.extend(job.to_json() for job in mine)
        else:
            listed.extend(job.id for job in mine)
        return Answer(listed)

    def get_transfers_jobs(self, request: Dict[str, Any]) -> Answer:
        return Answer([job.to_json() for job in self.registry.list()])

    def routes(self) -> List[tuple]:
        actions = "|".join(ACTIONS)
        return [
            ("/transfers/send", {"POST": self.post_send}),
            ("/transfers/pull", {"POST": self.post_pull}),
            ("/transfers/jobs", {"GET": self.get_transfers_jobs}),
            ("/jobs", {"GET": self.get_jobs}),
            ("/jobs/(%s)" % JOB_ID_PATTERN, {"GET": self.get_job}),
            ("/jobs/(%s)/(%s)" % (JOB_ID_PATTERN, actions), {"POST": self.post_action}),
        ]


def request_header(request: Dict[str, Any], name: str) -> Optional[str]:
    headers = request.get("headers") or {}
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
