"""The endpoints of the protocol, wired to orthanc-python."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

from .arrival import ArrivalImporter, recover
from .capacity import Capacity
from .recovery import Recovery
from .chunks import ChunkServer
from .commit import Importer, commit, loopback_from_configuration, verify_and_import
from .config import Options, load_options
from .errors import BAD_REQUEST, BAD_SEQUENCE_OF_CALLS, INTERNAL, PluginError, error_body
from .http import Answer, Router, parse_json_body
from .job_routes import JobService
from .lookup import Lookup
from .metrics import Metrics
from .peers import peers_status
from .staging import COMMITTING, TransactionStore


class TransfersPlugin:
    def __init__(self, api: Any, wire: Any, options: Options) -> None:
        self.api = api
        self.wire = wire
        self.options = options
        self.originator = str(uuid.uuid4())
        self.metrics = Metrics(api)
        self.store = TransactionStore(options, api.LogWarning, self.metrics)
        self.importer = Importer(api, api.LogWarning, options.overwrite_instances, options.commit_threads,
                                 loopback_from_configuration(api, json.loads(api.GetConfiguration())), self.metrics)
        self.capacity = Capacity(api, json.loads(api.GetConfiguration()))
        self.importer.capacity = self.capacity
        self.arrival = ArrivalImporter(self.importer, options.commit_threads, self.importer.roll_back,
                                       api.LogWarning)
        self.store.on_written = self.arrival.bucket_written
        self.store.on_discard = self.arrival.undo
        # Transactions and commits that survive a restart (recovery.py).
        self.recovery = Recovery(self.store, wire, api.LogWarning)
        self.store.on_commit_begin = self.recovery.commit_begins
        self.store.on_commit_end = self.recovery.commit_ends
        self.importer.on_imported = self.recovery.imported
        self.chunks = ChunkServer(api, wire, options, self.metrics)
        self.lookup = Lookup(api, wire, options, self.originator)
        # Each asynchronous commit imports with CommitThreadsCount threads of its own.
        self.commits = ThreadPoolExecutor(max_workers=options.max_push_transactions,
                                          thread_name_prefix="transfers-commit")
        self.describe = getattr(api, "GetErrorDescription", None)
        self.jobs = JobService(self)   # send/pull jobs (job_routes.py)

    # --- handlers: (request, *regex groups) -> Answer ----------------------------

    def post_lookup(self, request: Dict[str, Any]) -> Answer:
        body = parse_json_body(request, self.options.max_request_size, "lookup")
        return Answer(self.lookup.answer(body))

    def get_chunks(self, request: Dict[str, Any], ids_part: str) -> Answer:
        data, content_type = self.chunks.serve(ids_part, request.get("get") or {})
        return Answer(data, content_type=content_type)

    def post_push(self, request: Dict[str, Any]) -> Answer:
        body = parse_json_body(request, self.options.max_request_size, "push request")
        self._check_counts(body)
        parsed = self.wire.parse_push_request(body, self.options.max_instances, self.options.max_buckets)
        if parsed.import_as_it_arrives:
            # The commit's capacity check comes too late here: the first
            # early import would already make Orthanc recycle other patients
            # (capacity.py). Refused before anything is staged or imported.
            self.capacity.check_commit(parsed, self.importer._exists)
        txn = self.store.create(parsed)
        self.recovery.created(txn, body)
        answer = {"ID": txn.id, "Path": "%s/%s" % (self.wire.URI_PUSH, txn.id)}
        if txn.asynchronous:
            answer["AsynchronousCommit"] = True  # tells the sender the extension is honoured
        if txn.import_as_it_arrives:
            answer["ImportAsItArrives"] = True
        if txn.compression != parsed.compression:
            answer["Codec"] = txn.compression  # bucket bodies are expected in this codec
        return Answer(answer)

    def _check_counts(self, body: Any) -> None:
        """Refuse oversized transactions before parsing them, naming the limit."""
        if not isinstance(body, dict):
            return  # the wire parser names that problem
        for key, limit, option in (("Instances", self.options.max_instances, "MaxInstancesPerTransaction"),
                                   ("Buckets", self.options.max_buckets, "MaxBucketsPerTransaction")):
            items = body.get(key)
            if isinstance(items, list) and len(items) > limit:
                raise PluginError(BAD_REQUEST, "push request: %d %s, at most %d per transaction (%s)"
                                  % (len(items), key.lower(), limit, option), http_status=413)

    def put_bucket(self, request: Dict[str, Any], tid: str, index: str) -> Answer:
        started = time.monotonic()
        txn = self.store.acquire(tid)
        try:
            self.store.put_bucket(txn, index, request.get("body") or b"")
            self.recovery.bucket_received(txn, index)
        finally:
            self.store.release(txn)
        # Orthanc had read the whole body before this callback: the sender
        # takes the rest of the PUT's time as the link's (extension header).
        return Answer({}, headers={HANDLING_HEADER: "%.4f" % (time.monotonic() - started)})

    def delete_transaction(self, request: Dict[str, Any], tid: str) -> Answer:
        txn = self.store.acquire(tid)
        try:
            with txn.lock:
                committing = txn.state == COMMITTING
            if committing:
                raise PluginError(BAD_SEQUENCE_OF_CALLS, "transaction %s is being committed and cannot be"
                                  " deleted now" % tid, http_status=409)
            self.store.discard(txn.id)
        finally:
            self.store.release(txn)
        return Answer({})

    def post_commit(self, request: Dict[str, Any], tid: str, _commit: str) -> Answer:
        txn = self.store.acquire(tid)
        try:
            if not txn.asynchronous:
                commit(self.store, self.importer, txn, self.arrival)
                return Answer({})
            try:
                self.store.begin_commit(txn)  # from here on, PUTs are refused
            except PluginError:
                pass  # already being committed: answer the same "Pending"
            else:
                with txn.lock:
                    txn.users += 1  # held by the background commit, released there
                self.commits.submit(self._commit_in_background, txn)
        finally:
            self.store.release(txn)
        pending = self._status(self.wire.COMMIT_PENDING, txn.id)
        pending["LongPoll"] = True  # GET .../commit?wait=S answers as soon as the outcome is known
        return Answer(pending, status=202)

    def _commit_in_background(self, txn: Any) -> None:
        path = self.wire.commit_uri(txn.id)
        success = False
        try:
            try:
                verify_and_import(self.importer, txn, self.arrival)
                success = True
                result = self._status(self.wire.COMMIT_SUCCESS, txn.id)
            except PluginError as exc:
                result = self.wire.build_commit_status(self.wire.COMMIT_FAILURE, txn.id,
                                                       error_body(exc, "POST", path, self.describe))
            except Exception as exc:  # report it, never lose the outcome
                self.api.LogError("transfers: asynchronous commit of %s failed: %r" % (txn.id, exc))
                failure = PluginError(INTERNAL, "unexpected error during the commit: %s" % exc)
                result = self.wire.build_commit_status(self.wire.COMMIT_FAILURE, txn.id,
                                                       error_body(failure, "POST", path, self.describe))
            # Publish the outcome before the transaction disappears, so that a
            # client polling in between never sees a 404.
            with txn.lock:
                txn.commit_result = result
                txn.idle.notify_all()  # wakes long polls
            self.store.remember_result(txn.id, result)
        finally:
            self.store.end_commit(txn, success)
            self.store.release(txn)

    def get_commit(self, request: Dict[str, Any], tid: str, _commit: str) -> Answer:
        txn = self.store.lookup(tid)
        wait = _wait_seconds((request.get("get") or {}).get("wait"))
        if txn is not None:
            with txn.lock:
                # Long poll (extension): hold the answer until the outcome is
                # known or ``wait`` seconds passed, so the sender learns it
                # without a poll interval added to every commit.
                deadline = time.monotonic() + wait
                while txn.state == COMMITTING and txn.commit_result is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    txn.idle.wait(left)
                state, result = txn.state, txn.commit_result
            if result is not None:
                return Answer(result)
            if state == COMMITTING:
                return Answer(self._status(self.wire.COMMIT_PENDING, tid))
            return Answer(self._status(self.wire.COMMIT_STAGING, tid))
        result = self.store.result_of(tid)
        if result is None:
            raise self.store.not_found(tid)
        return Answer(result)

    def recover(self) -> None:
        """Undo the early imports of transactions the previous run left, once Orthanc answers."""
        while True:
            try:
                self.api.RestApiGet("/system")
                break
            except Exception:  # Orthanc is still starting: its REST API is not served yet
                time.sleep(0.2)
        names = self.store.left_by_previous_run
        recover(self.store.root, names, self.importer.roll_back, self.api.LogWarning)
        for name in names:
            shutil.rmtree(os.path.join(self.store.root, name), ignore_errors=True)

    def finish_interrupted_commits(self) -> None:
        """Once Orthanc answers, finish the commits a restart cut short (recovery.py)."""
        self._wait_for_orthanc()

        def run(txn: Any) -> bool:
            self.store.begin_commit(txn)
            with txn.lock:
                txn.users += 1   # released by the commit
            self._commit_in_background(txn)
            result = self.store.result_of(txn.id) or {}
            return result.get("Status") == self.wire.COMMIT_SUCCESS
        self.recovery.finish_interrupted(run, self.importer.roll_back)

    def _wait_for_orthanc(self) -> None:
        while True:
            try:
                self.api.RestApiGet("/system")
                return
            except Exception:  # Orthanc is still starting: its REST API is not served yet
                time.sleep(0.2)

    def _status(self, status: str, tid: str) -> Dict[str, Any]:
        return self.wire.build_commit_status(status, tid)

    def get_storage(self, request: Dict[str, Any]) -> Answer:
        return Answer(self.capacity.status())

    def get_peers(self, request: Dict[str, Any]) -> Answer:
        status = peers_status(self.api, lambda: json.loads(self.api.GetConfiguration()),
                              self.options.peer_timeout)
        return Answer(status)

    def _transaction_methods(self, tid: str, part: str) -> Dict[str, Any]:
        """``.../{tid}/commit`` commits (GET: asynchronous status); ``.../{tid}/{n}`` is a bucket."""
        if part == "commit":
            return {"POST": self.post_commit, "GET": self.get_commit}
        return {"PUT": self.put_bucket}

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
            ("/transfers/storage", {"GET": self.get_storage}),
        ] + self.jobs.routes()
        for pattern, methods in routes:
            self.api.RegisterRestCallback(pattern, router.callback(methods))


MAX_COMMIT_WAIT = 10.0
# How long a bucket PUT took once Orthanc had its body (gui/client/transfers_api.py).
HANDLING_HEADER = "Transfers-Handling-Seconds"


def _wait_seconds(raw: Any) -> float:
    try:
        return min(MAX_COMMIT_WAIT, max(0.0, float(raw))) if raw is not None else 0.0
    except ValueError:
        return 0.0


def install(api: Any, wire: Any) -> TransfersPlugin:
    options = load_options(api.GetConfiguration)
    for warning in options.warnings:
        api.LogWarning("transfers: " + warning)
    plugin = TransfersPlugin(api, wire, options)
    plugin.store.prepare()
    plugin.recovery.reload(plugin.store.kept_by_previous_run)
    plugin.jobs.registry.load()
    extend_explorer(api)
    stopped = getattr(getattr(api, "ChangeType", None), "ORTHANC_STOPPED", None)
    if stopped is not None:
        def on_change(change_type: Any, level: Any, resource: Any) -> None:
            if change_type == stopped:
                plugin.jobs.registry.shutdown()
        api.RegisterOnChangeCallback(on_change)
    plugin.register()
    if plugin.store.left_by_previous_run:
        threading.Thread(target=plugin.recover, name="transfers-recover", daemon=True).start()
    if plugin.recovery.interrupted:
        threading.Thread(target=plugin.finish_interrupted_commits, name="transfers-finish", daemon=True).start()
    api.LogWarning("transfers: accelerator protocol served by the Python plugin (staging in %s)"
                   % options.staging_directory)
    return plugin


def extend_explorer(api: Any) -> None:
    """The "Transfers accelerator" button of Orthanc Explorer (explorer.js beside this file)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "explorer.js")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            script = handle.read()
    except OSError as exc:  # the protocol works without the button
        api.LogWarning("transfers: no Orthanc Explorer button, %s cannot be read: %s" % (path, exc.strerror))
        return
    api.ExtendOrthancExplorer(script)
