"""Push transactions staged on disk.

Each transaction owns one directory ``<staging root>/<uuid>`` holding one file
per instance (named by its position in the transaction, never by anything the
client sent). A bucket PUT writes its chunks into those files at their
offsets, so nothing larger than one bucket is ever held in memory.

The MD5 of a staged bucket is computed by a background thread once its
bytes are written, so that the PUT is answered without waiting for it (the
sender's next bucket then travels while this one is hashed, on the other
core); a commit waits for the hashes under way. Up to ``HASH_BACKLOG``
bytes of received bodies wait for that thread; beyond, a PUT hashes its
own bucket before answering (the memory stays bounded).

Locking: the store's lock guards only the table of transactions and the byte
reservations; each transaction has its own lock for its small state. Disk
writes, decompression and hashing run outside every lock, so PUTs to several
buckets or transactions proceed in parallel (zlib, hashlib and file I/O
release Python's GIL).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from .codec import decode_bucket
from .errors import (BAD_REQUEST, BAD_SEQUENCE_OF_CALLS, CANNOT_WRITE_FILE, FULL_STORAGE,
                     PARAMETER_OUT_OF_RANGE, UNKNOWN_RESOURCE, PluginError)

JOURNAL = "import-journal"  # arrival.JOURNAL
MANIFEST = "transaction.json"  # recovery.MANIFEST
TRANSACTION_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INDEX_RE = re.compile(r"^[0-9]{1,9}$")

# Transaction states.
STAGING, COMMITTING, DONE = "staging", "committing", "done"

# Bytes of received buckets that may wait for the background hasher.
HASH_BACKLOG = 64 * 1024 * 1024


class _RunningHash:
    """The MD5 of a split instance so far: its pieces hashed in offset order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.md5 = hashlib.md5()
        self.position = 0
        self.head = b""
        self.ahead: Dict[int, int] = {}  # offset -> size of pieces written beyond the position
        self.seen: set = set()
        self.broken = False


class Transaction:
    """One push transaction: what was announced, and which buckets arrived."""

    def __init__(self, tid: str, directory: str, request: Any, codecs: tuple = ()) -> None:
        self.id = tid
        self.directory = directory
        self.instances = sorted(request.instances, key=lambda i: i.id)
        self.buckets = request.buckets
        # An extension codec the sender asked for and this plugin honours
        # (the creation answer says so), else "gzip" or "none".
        codec = request.choose_codec(codecs)
        self.compression: str = codec or request.compression
        self.asynchronous: bool = request.asynchronous_commit
        self.size_of = {i.id: i.size for i in self.instances}
        self.declared_size = sum(self.size_of.values())
        self.position = {info.id: n for n, info in enumerate(self.instances)}
        # instance id -> indices of the buckets holding its bytes
        self.buckets_of: Dict[str, List[int]] = {i.id: [] for i in self.instances}
        for index, bucket in enumerate(self.buckets):
            for chunk in bucket.chunks:
                self.buckets_of[chunk.instance_id].append(index)
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.received: set = set()
        self.staged = 0           # bytes of the received buckets
        self.writers = 0          # bucket PUTs writing right now
        self.hashing = 0          # written buckets whose MD5 the background hasher has yet to take in
        self.users = 0            # requests holding the directory open
        self.discarded = False
        self.state = STAGING
        self.last_used = time.monotonic()
        self.commit_result: Optional[Dict[str, Any]] = None  # for asynchronous commits
        # instance id -> (MD5, size, first 4 bytes) of an instance that one
        # chunk wrote whole, hashed while in memory, so the commit need not
        # read it back; instances written more than once lose theirs.
        self.digests: Dict[str, tuple] = {}
        self.writes: Dict[str, int] = {}
        self.running: Dict[str, _RunningHash] = {}  # split instances, hashed as their pieces arrive
        # "Import as it arrives" (arrival.py): instances imported before the commit.
        self.import_as_it_arrives: bool = bool(getattr(request, "import_as_it_arrives", False))
        self.info_of = {i.id: i for i in self.instances}
        self.early_started: set = set()
        self.early_pending = 0
        self.early_imported: Dict[str, Optional[str]] = {}
        self.early_failure: Any = None

    def staged_path(self, instance_id: str) -> str:
        return os.path.join(self.directory, "%07d.dcm" % self.position[instance_id])

    def missing_buckets(self, instance_id: str) -> List[int]:
        with self.lock:
            return [b for b in self.buckets_of[instance_id] if b not in self.received]


def check_coverage(request: Any) -> None:
    """Every instance must be covered exactly once by the buckets' chunks."""
    ranges: Dict[str, List[tuple]] = {i.id: [] for i in request.instances}
    for bucket in request.buckets:
        for chunk in bucket.chunks:
            ranges[chunk.instance_id].append((chunk.offset, chunk.size))
    bad = []
    for info in request.instances:
        position = 0
        for offset, size in sorted(ranges[info.id]):
            if offset != position:
                break
            position += size
        else:
            if position == info.size:
                continue
        bad.append({"ID": info.id, "Problem": "the buckets do not cover its %d bytes exactly once" % info.size})
    if bad:
        raise PluginError(BAD_REQUEST, "push request: %d instance(s) not covered exactly by the buckets: %s"
                          % (len(bad), ", ".join(b["ID"] for b in bad[:5])), instances=bad)


class TransactionStore:
    def __init__(self, options: Any, log_warning=None, metrics: Any = None) -> None:
        self.options = options
        self.root = options.staging_directory
        self.lock = threading.Lock()
        self.transactions: "OrderedDict[str, Transaction]" = OrderedDict()  # LRU first
        self.reserved = 0
        # High-water marks since start: an admin sizes MaxStagedSize from
        # them, and a sampler polling the directory can miss a short job.
        self.reserved_peak = 0
        self.staged_peak = 0
        self.log_warning = log_warning or (lambda text: None)
        self.metrics = metrics
        # Results of asynchronous commits whose transaction is gone, bounded.
        self.results: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        # Set by the plugin for "import as it arrives": called after a bucket
        # is staged, and before the directory of a transaction that did not
        # commit goes (to delete what it imported early).
        self.on_written: Optional[Callable[[Any, Transaction, int], None]] = None
        self.on_discard: Optional[Callable[[Transaction], None]] = None
        self.left_by_previous_run: List[str] = []  # transaction directories with an import journal
        self.kept_by_previous_run: List[str] = []  # journaled transactions to reload (recovery.py)
        # Set by the plugin (recovery.py): a commit begins / ends.
        self.on_commit_begin: Optional[Callable[[Transaction], None]] = None
        self.on_commit_end: Optional[Callable[[Transaction, bool], None]] = None
        self.hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="transfers-hash")
        self.hash_backlog = 0     # bytes waiting for the hasher (under self.lock)

    # --- lifecycle -----------------------------------------------------------

    def prepare(self) -> None:
        """Create the staging root and drop what a previous run left there."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        for name in os.listdir(self.root):
            # Only our own directories: a misconfigured path must not be wiped.
            if TRANSACTION_ID_RE.match(name):
                if os.path.exists(os.path.join(self.root, name, JOURNAL)):
                    # Imported some instances as they arrived: they are removed
                    # once Orthanc answers (see TransfersPlugin.recover).
                    self.left_by_previous_run.append(name)
                    continue
                if os.path.exists(os.path.join(self.root, name, MANIFEST)):
                    self.kept_by_previous_run.append(name)   # reloaded (recovery.py)
                    continue
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def create(self, request: Any) -> Transaction:
        """Open a transaction; discard the least recently used ones beyond the limit."""
        opts = self.options
        largest = max((b.total_size for b in request.buckets), default=0)
        if largest > opts.max_bucket_size:
            raise PluginError(BAD_REQUEST, "push request: a bucket of %d bytes exceeds MaxBucketSize (%d bytes)"
                              % (largest, opts.max_bucket_size), http_status=413)
        check_coverage(request)
        tid = str(uuid.uuid4())
        txn = Transaction(tid, os.path.join(self.root, tid), request, opts.codecs)
        with self.lock:
            victims = self._victims_locked()
            # Refusing the request must leave the other transactions alone, so
            # the space check counts the victims as freed before removing them.
            self._check_space_locked(txn.declared_size, victims)
            for victim in victims:
                self._remove_locked(victim.id)
            self.transactions[tid] = txn
            self.reserved += txn.declared_size
            self.reserved_peak = max(self.reserved_peak, self.reserved)
        self._publish()
        for victim in victims:
            self._log_discard(victim)
            self._release_directory(victim)
        try:
            os.mkdir(txn.directory, 0o700)
        except OSError as exc:
            self.discard(tid)
            raise PluginError(CANNOT_WRITE_FILE, "cannot create the staging directory %s: %s"
                              % (txn.directory, exc.strerror))
        return txn

    def _victims_locked(self) -> List[Transaction]:
        """Idle transactions, then the least recently used ones beyond MaxPushTransactions.

        A transaction being committed is never chosen: with all of them
        committing, the limit is briefly exceeded rather than a commit killed.
        """
        limit = time.monotonic() - self.options.transaction_timeout
        victims = [t for t in self.transactions.values() if t.last_used < limit and t.state == STAGING]
        excess = len(self.transactions) - len(victims) - (self.options.max_push_transactions - 1)
        for txn in self.transactions.values():  # least recently used first
            if excess <= 0:
                break
            if txn.state == STAGING and txn not in victims:
                victims.append(txn)
                excess -= 1
        return victims

    def _check_space_locked(self, size: int, victims: List[Transaction]) -> None:
        opts = self.options
        reserved = self.reserved - sum(v.declared_size for v in victims)
        if reserved + size > opts.max_staged_size:
            raise PluginError(FULL_STORAGE, "push request: %d bytes declared, but only %d of MaxStagedSize (%d bytes)"
                              " are free in the staging area" % (size, max(0, opts.max_staged_size - reserved),
                                                                   opts.max_staged_size))
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return
        # Bytes announced but not received yet will still be taken from the
        # disk; the victims' staged bytes are about to be given back.
        outstanding = sum(t.declared_size - t.staged for t in self.transactions.values() if t not in victims)
        free += sum(v.staged for v in victims)
        if free - outstanding - size < opts.min_free_disk:
            raise PluginError(FULL_STORAGE, "push request: %d bytes declared, but the staging disk has %d bytes free"
                              " for it (MinFreeDiskSpace keeps %d bytes free)"
                              % (size, max(0, free - outstanding), opts.min_free_disk))

    def _note_staged(self) -> None:
        with self.lock:
            staged = sum(t.staged for t in self.transactions.values())
            if staged <= self.staged_peak:
                return
            self.staged_peak = staged
        if self.metrics is not None:
            self.metrics.set("transfers_staged_bytes_peak", staged)

    def _publish(self) -> None:
        if self.metrics is None:
            return
        with self.lock:
            count, reserved, peak = len(self.transactions), self.reserved, self.reserved_peak
        self.metrics.set("transfers_push_transactions", count)
        self.metrics.set("transfers_staged_bytes_reserved", reserved)
        self.metrics.set("transfers_staged_bytes_reserved_peak", peak)

    def _remove_locked(self, tid: str) -> Transaction:
        txn = self.transactions.pop(tid)
        self.reserved -= txn.declared_size
        return txn

    def _log_discard(self, txn: Transaction) -> None:
        self.log_warning("transfers: discarding push transaction %s (least recently used or idle)" % txn.id)

    def _release_directory(self, txn: Transaction) -> None:
        """Mark discarded; the directory goes when no request uses it any more."""
        with txn.lock:
            already = txn.discarded
            txn.discarded = True
            undo = (txn.import_as_it_arrives and txn.state != DONE and self.on_discard is not None
                    and not already)
            if undo:
                txn.users += 1  # keep the journal until the early imports are undone
            remove = txn.users == 0
        if undo:
            try:
                self.on_discard(txn)  # type: ignore[misc]
            finally:
                self.release(txn)
            return
        if remove:
            shutil.rmtree(txn.directory, ignore_errors=True)

    # --- access --------------------------------------------------------------

    def acquire(self, tid: str) -> Transaction:
        """The transaction, marked as in use until :meth:`release`; 404 if unknown."""
        if not TRANSACTION_ID_RE.match(tid):
            raise self.not_found(tid)
        with self.lock:
            txn = self.transactions.get(tid)
            if txn is None:
                raise self.not_found(tid)
            self.transactions.move_to_end(tid)
            txn.last_used = time.monotonic()
            with txn.lock:
                txn.users += 1
        return txn

    @staticmethod
    def not_found(tid: str) -> PluginError:
        if not TRANSACTION_ID_RE.match(tid):
            return PluginError(UNKNOWN_RESOURCE, "unknown push transaction: %r is not a transaction ID" % tid[:60])
        return PluginError(UNKNOWN_RESOURCE, "unknown push transaction %s (finished, deleted or discarded as"
                           " least recently used)" % tid)

    def release(self, txn: Transaction) -> None:
        with txn.lock:
            txn.users -= 1
            remove = txn.discarded and txn.users == 0
        if remove:
            shutil.rmtree(txn.directory, ignore_errors=True)

    def lookup(self, tid: str) -> Optional[Transaction]:
        with self.lock:
            return self.transactions.get(tid)

    def discard(self, tid: str) -> Transaction:
        with self.lock:
            txn = self.transactions.get(tid)
            if txn is None:
                raise self.not_found(tid)
            self._remove_locked(tid)
        self._publish()
        self._release_directory(txn)
        return txn

    def remember_result(self, tid: str, result: Dict[str, Any]) -> None:
        with self.lock:
            self.results[tid] = result
            while len(self.results) > 256:
                self.results.popitem(last=False)

    def result_of(self, tid: str) -> Optional[Dict[str, Any]]:
        with self.lock:
            return self.results.get(tid)

    # --- buckets -------------------------------------------------------------

    def put_bucket(self, txn: Transaction, raw_index: str, body: bytes) -> None:
        if not INDEX_RE.match(raw_index):
            raise PluginError(BAD_REQUEST, "bucket index: expected a decimal number, got %r" % raw_index[:30])
        index = int(raw_index)
        if index >= len(txn.buckets):
            raise PluginError(PARAMETER_OUT_OF_RANGE, "bucket index %d out of range: the transaction has %d bucket(s)"
                              % (index, len(txn.buckets)))
        bucket = txn.buckets[index]
        where = "bucket %d of transaction %s" % (index, txn.id)
        data = decode_bucket(body, txn.compression, bucket.total_size, where)
        with txn.lock:
            if txn.discarded:
                raise self.not_found(txn.id)
            if txn.state != STAGING:
                raise PluginError(BAD_SEQUENCE_OF_CALLS, "%s: the transaction is being committed" % where,
                                  http_status=409)
            txn.writers += 1
        try:
            to_hash = self._write_chunks(txn, bucket, data, where)
            self._hash_later(txn, to_hash, bucket.total_size)
            with txn.lock:
                if index not in txn.received:
                    txn.received.add(index)
                    txn.staged += bucket.total_size
        finally:
            with txn.lock:
                txn.writers -= 1
                txn.idle.notify_all()
        self._note_staged()
        if txn.import_as_it_arrives and self.on_written is not None:
            self.on_written(self, txn, index)

    def _hash_later(self, txn: Transaction, to_hash: List[tuple], size: int) -> None:
        """Hash the written pieces in the background, or now when the backlog
        is full or the transaction imports as it arrives (which checks each
        instance as soon as its last bucket is written)."""
        if not to_hash:
            return
        with self.lock:
            inline = txn.import_as_it_arrives or self.hash_backlog + size > HASH_BACKLOG
            if not inline:
                self.hash_backlog += size
        if inline:
            self._hash_pieces(txn, to_hash)
            return
        with txn.lock:
            txn.hashing += 1
        try:
            self.hasher.submit(self._hash_task, txn, to_hash, size)
        except RuntimeError:   # the pool is shut down (Orthanc stopping): hash here
            self._hash_task(txn, to_hash, size)

    def _hash_task(self, txn: Transaction, to_hash: List[tuple], size: int) -> None:
        try:
            self._hash_pieces(txn, to_hash)
        except Exception as exc:  # a digest missing only costs a read-back at the commit
            self.log_warning("transfers: hashing a bucket of transaction %s failed: %r" % (txn.id, exc))
        finally:
            with self.lock:
                self.hash_backlog -= size
            with txn.lock:
                txn.hashing -= 1
                txn.idle.notify_all()

    @staticmethod
    def _hash_pieces(txn: Transaction, to_hash: List[tuple]) -> None:
        for chunk, piece, path, whole in to_hash:
            if whole:
                digest = (hashlib.md5(piece).hexdigest(), len(piece), bytes(piece[:4]))
                with txn.lock:
                    # Only the single write of this instance may vouch for the
                    # file: two PUTs of one bucket (a retry) may interleave.
                    if txn.writes.get(chunk.instance_id) == 1:
                        txn.digests[chunk.instance_id] = digest
            else:
                TransactionStore._hash_piece(txn, chunk, piece, path)

    @staticmethod
    def _write_chunks(txn: Transaction, bucket: Any, data: bytes, where: str) -> List[tuple]:
        """Write the bucket's chunks; the pieces to hash: (chunk, bytes, path, whole instance)."""
        view = memoryview(data)
        position = 0
        to_hash: List[tuple] = []
        for chunk in bucket.chunks:
            path = txn.staged_path(chunk.instance_id)
            whole = chunk.offset == 0 and chunk.size == txn.size_of[chunk.instance_id] and chunk.size > 0
            with txn.lock:
                txn.writes[chunk.instance_id] = txn.writes.get(chunk.instance_id, 0) + 1
                txn.digests.pop(chunk.instance_id, None)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    piece = view[position:position + chunk.size]
                    written = 0
                    while written < len(piece):
                        written += os.pwrite(fd, piece[written:], chunk.offset + written)
                finally:
                    os.close(fd)
            except OSError as exc:
                kind = FULL_STORAGE if exc.errno == errno.ENOSPC else CANNOT_WRITE_FILE
                raise PluginError(kind, "%s: cannot stage the bytes of instance %s: %s"
                                  % (where, chunk.instance_id, exc.strerror))
            if whole or chunk.size:
                to_hash.append((chunk, piece, path, whole))
            position += chunk.size
        return to_hash

    @staticmethod
    def _hash_piece(txn: Transaction, chunk: Any, piece: Any, path: str) -> None:
        """Advance the running MD5 of a split instance with the piece just
        written, and with the later pieces already on disk, so that the
        commit finds it hashed (instead of reading 200 MB back at the end)."""
        iid = chunk.instance_id
        with txn.lock:
            run = txn.running.get(iid)
            if run is None:
                run = txn.running[iid] = _RunningHash()
        digest = None
        with run.lock:
            if chunk.offset in run.seen:
                run.broken = True  # written twice (a retry): only a read-back can vouch for the file
            run.seen.add(chunk.offset)
            if run.broken:
                pass
            elif chunk.offset == run.position:
                if run.position == 0:
                    run.head = bytes(piece[:4])
                run.md5.update(piece)
                run.position += len(piece)
                try:
                    with open(path, "rb") as handle:
                        while run.position in run.ahead:
                            size = run.ahead.pop(run.position)
                            handle.seek(run.position)
                            data = handle.read(size)
                            if len(data) != size:
                                run.broken = True
                                break
                            run.md5.update(data)
                            run.position += size
                except OSError:
                    run.broken = True
                if not run.broken and run.position == txn.size_of[iid]:
                    digest = (run.md5.hexdigest(), run.position, run.head)
            elif chunk.offset > run.position:
                run.ahead[chunk.offset] = chunk.size
            broken = run.broken
        with txn.lock:
            if broken:
                txn.digests.pop(iid, None)
            elif digest is not None:
                txn.digests[iid] = digest

    def begin_commit(self, txn: Transaction) -> None:
        """Stop accepting buckets and wait for the PUTs already writing."""
        with txn.lock:
            if txn.state != STAGING:
                raise PluginError(BAD_SEQUENCE_OF_CALLS, "transaction %s is already being committed" % txn.id,
                                  http_status=409)
            txn.state = COMMITTING
            txn.commit_result = None  # a new attempt: forget the previous failure
            while txn.writers or txn.hashing:   # the digests the verification uses
                txn.idle.wait(1.0)
        if self.on_commit_begin is not None:
            self.on_commit_begin(txn)

    def end_commit(self, txn: Transaction, success: bool) -> None:
        """After success the transaction is gone; after a failure it can be completed and committed again."""
        if self.metrics is not None:
            self.metrics.add("transfers_commits_succeeded" if success else "transfers_commits_failed")
        if self.on_commit_end is not None:
            self.on_commit_end(txn, success)
        if success:
            with txn.lock:
                txn.state = DONE
            try:
                self.discard(txn.id)
            except PluginError:
                pass  # deleted meanwhile
        else:
            with txn.lock:
                txn.state = STAGING
