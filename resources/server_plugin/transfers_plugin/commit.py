"""Commit of a push transaction: all instances or none.

1. Verify: every instance must be complete (all its buckets received), of
   the announced size, with the announced MD5. Any problem: nothing is
   imported and the error lists every bad instance.
2. Import through Orthanc's own ``POST /instances`` so that Orthanc indexes,
   runs Lua/plugins and stores as usual, ``CommitThreadsCount`` instances
   at once (over the server's own HTTP port, see :class:`LoopbackPoster`).
3. If an import fails (Orthanc refuses a file, the disk fills up), start no
   more imports, wait for those under way, and delete again every instance
   this commit created, leaving the server as it was.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import select
import socket
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import (BAD_FILE_FORMAT, BAD_SEQUENCE_OF_CALLS, CORRUPTED_FILE, PluginError,
                     orthanc_error_kind)

READ_BLOCK = 1 << 20


# POST /instances also accepts ZIP archives and imports every file inside:
# an "instance" that is a ZIP would slip instances past the checks.
ZIP_MAGIC = b"PK\x03\x04"


def _file_md5_size_head(path: str) -> Tuple[str, int, bytes]:
    digest = hashlib.md5()
    size = 0
    head = b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(READ_BLOCK)
            if not block:
                break
            if not size:
                head = block[:4]
            size += len(block)
            digest.update(block)
    return digest.hexdigest(), size, head


def instance_problem(txn: Any, info: Any) -> Optional[Tuple[Dict[str, str], str]]:
    """What is wrong with one staged instance, and its kind ("incomplete",
    "corrupted", "archive"), or None when it is whole with its size and MD5."""
    missing = txn.missing_buckets(info.id)
    if missing:
        shown = ", ".join(str(b) for b in missing[:10]) + (" ..." if len(missing) > 10 else "")
        return {"ID": info.id, "Problem": "bucket(s) %s not received" % shown}, "incomplete"
    with txn.lock:
        known = txn.digests.get(info.id)
    if info.size == 0:
        actual_md5, actual_size, head = hashlib.md5(b"").hexdigest(), 0, b""
    elif known is not None:
        actual_md5, actual_size, head = known  # hashed when its bucket was written
    else:
        try:
            actual_md5, actual_size, head = _file_md5_size_head(txn.staged_path(info.id))
        except OSError as exc:
            return {"ID": info.id, "Problem": "staged file unreadable: %s" % exc.strerror}, "incomplete"
    if actual_size != info.size:
        return {"ID": info.id, "Problem": "%d bytes staged, %d announced" % (actual_size, info.size)}, "corrupted"
    if actual_md5 != info.md5:
        return {"ID": info.id, "Problem": "MD5 %s, %s announced" % (actual_md5, info.md5)}, "corrupted"
    if head == ZIP_MAGIC:
        return {"ID": info.id, "Problem": "a ZIP archive, not a DICOM file"}, "archive"
    return None


def verify(txn: Any) -> None:
    """Raise a PluginError naming every instance that is incomplete or corrupted."""
    problems: List[Dict[str, str]] = []
    corrupted = archive = False
    for info in txn.instances:
        found = instance_problem(txn, info)
        if found is None:
            continue
        problems.append(found[0])
        corrupted = corrupted or found[1] == "corrupted"
        archive = archive or found[1] == "archive"
    if not problems:
        return
    names = ", ".join(p["ID"] for p in problems[:5]) + (" ..." if len(problems) > 5 else "")
    if corrupted:
        raise PluginError(CORRUPTED_FILE, "commit refused, nothing imported: %d instance(s) do not match their"
                          " size or MD5: %s" % (len(problems), names), instances=problems)
    if archive:
        raise PluginError(BAD_FILE_FORMAT, "commit refused, nothing imported: %d instance(s) are not DICOM"
                          " files: %s" % (len(problems), names), instances=problems)
    raise PluginError(BAD_SEQUENCE_OF_CALLS, "commit refused, nothing imported: %d instance(s) incomplete: %s"
                      % (len(problems), names), instances=problems)


class ImportRefused(Exception):
    """Orthanc refused one file: its error code and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code, self.text = code, text


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        # Headers and a sendfile body go out as two writes: no Nagle delay between them.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LoopbackPoster:
    """``POST /instances`` to this Orthanc's own HTTP port, one connection per thread.

    Measured inside the plugin under Orthanc 1.10.1 (docs/benchmark.md): calls
    through ``orthanc.RestApiPost`` from several Python threads do not get
    faster than from one, while HTTP requests to the own port from several
    threads do, since each is stored by one of Orthanc's own HTTP threads.
    The token from ``GenerateRestApiAuthorizationToken`` grants the access,
    whatever the server's users are.

    A staged file larger than ``INLINE_BODY`` goes from the page cache to the
    socket with ``sendfile`` (no copy of a 200 MB instance in Python's
    memory). A kept-alive connection that Orthanc closed while idle (its
    ``KeepAliveTimeout``, 1 s by default) is noticed before it is used, so a
    thread that imports again later does not mistake it for a server that
    cannot be reached.
    """

    def __init__(self, port: int, token: str, timeout: float = 600.0) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = _Connection("127.0.0.1", self.port, timeout=self.timeout)
        elif connection.sock is not None and _closed_by_server(connection.sock):
            connection.close()   # http.client opens a new one for the next request
        return connection

    def post(self, data: bytes) -> Any:
        """Import ``data`` (one DICOM file)."""
        return self._exchange(len(data), lambda connection: connection.endheaders(data))

    def post_file(self, handle: Any, size: int) -> Any:
        """Import the file open as ``handle`` (``size`` bytes, checked by the caller)."""
        if size <= INLINE_BODY:
            return self.post(handle.read(size))

        def send(connection: http.client.HTTPConnection) -> None:
            connection.endheaders()
            if connection.sock.sendfile(handle, 0, size) != size:  # type: ignore[union-attr]
                raise OSError(errno.EIO, "the staged file ended early")
        return self._exchange(size, send)

    def _exchange(self, size: int, send: Any) -> Any:
        connection = self._connection()
        try:
            connection.putrequest("POST", "/instances", skip_accept_encoding=True)
            connection.putheader("Authorization", self.token)
            connection.putheader("Content-Type", "application/dicom")
            connection.putheader("Content-Length", str(size))
            send(connection)
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self.local.connection = None
            raise
        if answer.status != 200:
            try:
                error = json.loads(body)
                code, text = int(error.get("OrthancStatus", -1)), str(error.get("Message") or error)
                if error.get("Details"):
                    text = "%s: %s" % (text, error["Details"])
            except (ValueError, TypeError, AttributeError):
                code, text = -1, "HTTP %d" % answer.status
            raise ImportRefused(code, text)
        return json.loads(body)


# Files up to this size go out with their headers in one write.
INLINE_BODY = 256 * 1024


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed (or spoke out of turn):
    readable before any request means either."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def loopback_from_configuration(api: Any, configuration: Dict[str, Any]) -> Optional[LoopbackPoster]:
    """The loopback poster, or None where Orthanc's HTTP server cannot be reached that way."""
    if configuration.get("HttpServerEnabled") is False or configuration.get("SslEnabled") is True:
        return None  # TLS on loopback would need the server's certificate: import in process
    generate = getattr(api, "GenerateRestApiAuthorizationToken", None)
    if generate is None:
        return None
    port = configuration.get("HttpPort", 8042)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return LoopbackPoster(port, generate())


class _Failure(Exception):
    def __init__(self, info: Any, kind: tuple, detail: str, refused: bool) -> None:
        super().__init__(detail)
        self.info, self.kind, self.detail, self.refused = info, kind, detail, refused


def failure_error(failure: _Failure, removed: int) -> PluginError:
    if failure.refused:
        text = ("commit failed: Orthanc refused instance %s (%s); the %d instance(s) this commit had"
                " imported were removed again" % (failure.info.id, failure.detail, removed))
    else:
        text = ("commit failed at instance %s (%s); the %d instance(s) this commit had imported were"
                " removed again" % (failure.info.id, failure.detail, removed))
    return PluginError(failure.kind, text, instances=[{"ID": failure.info.id, "Problem": failure.detail}])


class Importer:
    """Imports staged files into Orthanc, several at once, undoing its own work on failure."""

    def __init__(self, api: Any, log_warning=None, overwrite_instances: bool = False,
                 threads: int = 1, loopback: Optional[LoopbackPoster] = None, metrics: Any = None) -> None:
        self.api = api
        self.metrics = metrics
        self.log_warning = log_warning or (lambda text: None)
        # Without Orthanc's "OverwriteInstances", POST /instances answers
        # "AlreadyStored" for an instance that was there before, which is all
        # the rollback needs to know. With it, a replaced instance answers
        # "Success" too, so its presence must be asked first (one more
        # request per instance, about a third of the import's time).
        self.ask_existing = overwrite_instances
        self.threads = max(1, threads)
        self.loopback = loopback
        self.lock = threading.Lock()
        self.running = self.peak = 0  # imports under way; most at once in the last commit
        self.on_imported: Any = None  # (txn, orthanc id) after each import (recovery.py)

    def _exists(self, instance_id: str) -> bool:
        try:
            self.api.RestApiGet("/instances/%s" % instance_id)
            return True
        except self.api.OrthancException:
            return False

    def _post(self, handle: Any, size: int) -> Any:
        loopback = self.loopback
        if loopback is not None:
            try:
                return loopback.post_file(handle, size)
            except (OSError, http.client.HTTPException) as exc:
                # Not reachable that way (a firewall, a changed port): the
                # in-process call always is. A POST that reached Orthanc
                # before failing is stored once anyway (same instance ID).
                self.log_warning("transfers: commit cannot post to Orthanc's own port %d (%s); importing"
                                 " in process from now on" % (loopback.port, exc))
                self.loopback = None
                handle.seek(0)
        data = handle.read()
        try:
            return json.loads(self.api.RestApiPost("/instances", data))
        except self.api.OrthancException as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
            raise ImportRefused(int(code), exc.args[1] if len(exc.args) > 1 else str(exc))

    def _post_counted(self, handle: Any, size: int) -> Any:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return self._post(handle, size)
        finally:
            with self.lock:
                self.running -= 1

    def import_one(self, txn: Any, info: Any, existed: Optional[bool] = None) -> Optional[str]:
        """Import one staged instance; the Orthanc ID it created, None if it was already there."""
        if existed is None:
            existed = self.ask_existing and self._exists(info.id)
        try:
            if info.size == 0:
                raise PluginError(CORRUPTED_FILE, "instance %s is empty, which is no DICOM file" % info.id)
            with open(txn.staged_path(info.id), "rb") as handle:
                if os.fstat(handle.fileno()).st_size != info.size:   # verified, but never post blindly
                    raise OSError(errno.EIO, "the staged file is not %d bytes long" % info.size)
                answer = self._post_counted(handle, info.size)
        except ImportRefused as exc:
            raise _Failure(info, orthanc_error_kind(exc.code), exc.text, True)
        except (OSError, ValueError, PluginError) as exc:
            raise _Failure(info, orthanc_error_kind(-1), getattr(exc, "details", None) or str(exc), False)
        if not isinstance(answer, dict):  # cannot happen once ZIPs are refused; never import blindly
            raise _Failure(info, BAD_FILE_FORMAT, "not one DICOM file", True)
        if existed or answer.get("Status") == "AlreadyStored":
            return None
        return str(answer.get("ID", info.id))

    def import_all(self, txn: Any, instances: Optional[List[Any]] = None,
                   created_before: Sequence[str] = ()) -> int:
        """Import every instance (or ``instances``) with up to ``threads`` at
        once; on a failure, none stays imported, nor ``created_before``."""
        instances = list(txn.instances) if instances is None else instances
        # Largest first: a big instance started last would finish alone.
        instances = sorted(instances, key=lambda i: -i.size)
        created: List[str] = list(created_before)
        failures: List[_Failure] = []
        lock = threading.Lock()
        position = [0]

        def work() -> None:
            while True:
                with lock:
                    if failures or position[0] >= len(instances):
                        return  # after a failure, start no more imports
                    info = instances[position[0]]
                    position[0] += 1
                try:
                    new_id = self.import_one(txn, info)
                except _Failure as failure:
                    with lock:
                        failures.append(failure)
                    return
                except Exception as exc:  # keep the bookkeeping whole, report it below
                    with lock:
                        failures.append(_Failure(info, orthanc_error_kind(-1), "unexpected error: %r" % exc, False))
                    return
                if new_id is not None:
                    with lock:
                        created.append(new_id)
                    if self.on_imported is not None:   # recovery.py journals it
                        self.on_imported(txn, new_id)

        with self.lock:
            self.peak = self.running
        # In-process calls do not run in parallel: one thread is as fast.
        count = min(self.threads if self.loopback is not None else 1, len(instances))
        if count <= 1:
            work()
        else:
            workers = [threading.Thread(target=work, name="transfers-import-%d" % n, daemon=True)
                       for n in range(count)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        if self.metrics is not None:
            self.metrics.set("transfers_commit_imports_at_once", self.peak)
        if failures:
            self.roll_back(created)
            raise failure_error(min(failures, key=lambda f: f.info.id), len(created))  # the same whatever the timing
        return len(instances)

    def roll_back(self, created: List[str]) -> None:
        for instance_id in reversed(created):
            try:
                self.api.RestApiDelete("/instances/%s" % instance_id)
            except self.api.OrthancException as exc:
                self.log_warning("transfers: could not remove instance %s while undoing a failed commit: %s"
                                 % (instance_id, exc))


def commit(store: Any, importer: Importer, txn: Any, arrival: Any = None) -> None:
    """Verify then import; the transaction is gone after success, kept after failure."""
    store.begin_commit(txn)
    finish_commit(store, importer, txn, arrival)


def finish_commit(store: Any, importer: Importer, txn: Any, arrival: Any = None) -> None:
    """The work of a commit once :meth:`TransactionStore.begin_commit` was called."""
    success = False
    try:
        verify_and_import(importer, txn, arrival)
        success = True
    finally:
        store.end_commit(txn, success)


def verify_and_import(importer: Importer, txn: Any, arrival: Any = None) -> None:
    capacity = getattr(importer, "capacity", None)   # capacity.py: a commit that cannot fit
    if arrival is None or not getattr(txn, "import_as_it_arrives", False):
        verify(txn)
        if capacity is not None:
            capacity.check_commit(txn, importer._exists)
        importer.import_all(txn)
        return
    # Some instances are imported already: the rest follow, and any failure
    # removes both (arrival.undo reads the journal, so nothing is missed).
    arrival.wait_idle(txn)
    try:
        verify(txn)
        with txn.lock:
            failure, done = txn.early_failure, set(txn.early_imported)
        if failure is not None:
            raise failure_error(failure, len(arrival.created(txn)))
        rest = [i for i in txn.instances if i.id not in done]
        importer.import_all(txn, rest)
    except PluginError:
        arrival.undo(txn)
        raise
