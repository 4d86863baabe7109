"""The endpoints of the protocol, wired to orthanc-python."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

from .chunks import ChunkServer
from .commit import Importer, commit, finish_commit
from .config import Options, load_options
from .errors import PluginError, error_body
from .http import Answer, Router, parse_json_body
from .lookup import Lookup
from .peers import peers_status
from .staging import COMMITTING, TransactionStore

# Answer shapes of the asynchronous commit (mirrored in wire.py).
PENDING, SUCCESS, FAILURE, STAGING_STATUS = "Pending", "Success", "Failure", "Staging"


class TransfersPlugin:
    def __init__(self, api: Any, wire: Any, options: Options) -> None:
        self.api = api
        self.wire = wire
        self.options = options
        self.originator = str(uuid.uuid4())
        self.store = TransactionStore(options, api.LogWarning)
        self.importer = Importer(api, api.LogWarning)
        self.chunks = ChunkServer(api, wire, options)
        self.lookup = Lookup(api, wire, options, self.originator)
        self.commits = ThreadPoolExecutor(max_workers=options.commit_threads,
                                          thread_name_prefix="transfers-commit")
        self.describe = getattr(api, "GetErrorDescription", None)

    # --- handlers: (request, *regex groups) -> Answer ----------------------------

    def post_lookup(self, request: Dict[str, Any]) -> Answer:
        body = parse_json_body(request, self.options.max_request_size, "lookup")
        return Answer(self.lookup.answer(body))

    def get_chunks(self, request: Dict[str, Any], ids_part: str) -> Answer:
        data, content_type = self.chunks.serve(ids_part, request.get("get") or {})
        return Answer(data, content_type=content_type)

    def post_push(self, request: Dict[str, Any]) -> Answer:
        body = parse_json_body(request, self.options.max_request_size, "push request")
        parsed = self.wire.parse_push_request(body, self.options.max_instances, self.options.max_buckets)
        txn = self.store.create(parsed)
        return Answer({"ID": txn.id, "Path": "%s/%s" % (self.wire.URI_PUSH, txn.id)})

    def put_bucket(self, request: Dict[str, Any], tid: str, index: str) -> Answer:
        txn = self.store.acquire(tid)
        try:
            self.store.put_bucket(txn, index, request.get("body") or b"")
        finally:
            self.store.release(txn)
        return Answer({})

    def delete_transaction(self, request: Dict[str, Any], tid: str) -> Answer:
        txn = self.store.acquire(tid)
        try:
            self.store.discard(txn.id)
        finally:
            self.store.release(txn)
        return Answer({})

    def post_commit(self, request: Dict[str, Any], tid: str, _part: str = "commit") -> Answer:
        txn = self.store.acquire(tid)
        try:
            if not txn.asynchronous:
                commit(self.store, self.importer, txn)
                return Answer({})
            with txn.lock:
                already = txn.state == COMMITTING
            if not already:
                self.store.begin_commit(txn)  # from here on, PUTs are refused
                txn.commit_result = None
                with txn.lock:
                    txn.users += 1  # held by the background commit, released there
                self.commits.submit(self._commit_in_background, txn)
        finally:
            self.store.release(txn)
        return Answer(self._status(PENDING, txn.id), status=202)

    def _commit_in_background(self, txn: Any) -> None:
        path = self.wire.commit_uri(txn.id)
        try:
            finish_commit(self.store, self.importer, txn)
            result = self._status(SUCCESS, txn.id)
        except PluginError as exc:
            result = dict(self._status(FAILURE, txn.id), Error=error_body(exc, "POST", path, self.describe))
        except Exception as exc:  # report, never lose the outcome
            self.api.LogError("transfers: asynchronous commit of %s failed: %r" % (txn.id, exc))
            failure = PluginError((-1, 500, "Internal error"), "unexpected error during the commit: %s" % exc)
            result = dict(self._status(FAILURE, txn.id), Error=error_body(failure, "POST", path, self.describe))
        txn.commit_result = result
        self.store.remember_result(txn.id, result)
        self.store.release(txn)

    def get_commit(self, request: Dict[str, Any], tid: str, _part: str = "commit") -> Answer:
        txn = self.store.lookup(tid)
        if txn is not None:
            with txn.lock:
                state, result = txn.state, txn.commit_result
            if state == COMMITTING:
                return Answer(self._status(PENDING, tid))
            if result is not None:
                return Answer(result)
            return Answer(self._status(STAGING_STATUS, tid))
        result = self.store.result_of(tid)
        if result is None:
            self.store.acquire(tid)  # raises the 404 with the right wording
        return Answer(result)

    def _status(self, status: str, tid: str) -> Dict[str, Any]:
        return self.wire.build_commit_status(status, tid)

    def get_peers(self, request: Dict[str, Any]) -> Answer:
        status = peers_status(self.api, lambda: json.loads(self.api.GetConfiguration()),
                              self.options.peer_timeout)
        return Answer(status)

    def _transaction_methods(self, tid: str, part: str) -> Dict[str, Any]:
        """``.../{tid}/commit`` commits (GET: asynchronous status); ``.../{tid}/{n}`` is a bucket."""
        if part == "commit":
            return {"POST": self.post_commit, "GET": self.get_commit}
        return {"PUT": lambda request, tid, index: self.put_bucket(request, tid, index)}

    # --- registration ----------------------------------------------------------

    def register(self) -> None:
        router = Router(self.wire.WireFormatError, self.describe, self.api.LogError)
        routes = [
            ("/transfers/lookup", {"POST": self.post_lookup}),
            ("/transfers/chunks/([^/]*)", {"GET": self.get_chunks}),
            ("/transfers/push", {"POST": self.post_push}),
            ("/transfers/push/([^/]+)", {"DELETE": self.delete_transaction}),
            ("/transfers/push/([^/]+)/([^/]+)", self._transaction_methods),
            ("/transfers/peers", {"GET": self.get_peers}),
        ]
        for pattern, methods in routes:
            self.api.RegisterRestCallback(pattern, router.callback(methods))


def install(api: Any, wire: Any) -> TransfersPlugin:
    options = load_options(api.GetConfiguration)
    for warning in options.warnings:
        api.LogWarning("transfers: " + warning)
    plugin = TransfersPlugin(api, wire, options)
    plugin.store.prepare()
    plugin.register()
    api.LogWarning("transfers: accelerator protocol served by the Python plugin (staging in %s)"
                   % options.staging_directory)
    return plugin
