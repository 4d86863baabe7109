"""Push transactions staged on disk.

Each transaction owns one directory ``<staging root>/<uuid>`` holding one file
per instance (named by its position in the transaction, never by anything the
client sent). A bucket PUT writes its chunks into those files at their
offsets, so nothing larger than one bucket is ever held in memory.

Locking: the store's lock guards only the table of transactions and the byte
reservations; each transaction has its own lock for its small state. Disk
writes, decompression and hashing run outside every lock, so PUTs to several
buckets or transactions proceed in parallel (zlib, hashlib and file I/O
release Python's GIL).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Dict, List, Optional

from .codec import decode_bucket
from .errors import (BAD_REQUEST, BAD_SEQUENCE_OF_CALLS, CANNOT_WRITE_FILE, FULL_STORAGE,
                     PARAMETER_OUT_OF_RANGE, UNKNOWN_RESOURCE, PluginError)

TRANSACTION_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INDEX_RE = re.compile(r"^[0-9]{1,9}$")

# Transaction states.
STAGING, COMMITTING, DONE = "staging", "committing", "done"


class Transaction:
    """One push transaction: what was announced, and which buckets arrived."""

    def __init__(self, tid: str, directory: str, request: Any) -> None:
        self.id = tid
        self.directory = directory
        self.instances = sorted(request.instances, key=lambda i: i.id)
        self.buckets = request.buckets
        self.compression: str = request.compression
        self.asynchronous: bool = request.asynchronous_commit
        self.declared_size = sum(i.size for i in self.instances)
        self.position = {info.id: n for n, info in enumerate(self.instances)}
        # instance id -> indices of the buckets holding its bytes
        self.buckets_of: Dict[str, List[int]] = {i.id: [] for i in self.instances}
        for index, bucket in enumerate(self.buckets):
            for chunk in bucket.chunks:
                self.buckets_of[chunk.instance_id].append(index)
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.received: set = set()
        self.writers = 0          # bucket PUTs writing right now
        self.users = 0            # requests holding the directory open
        self.discarded = False
        self.state = STAGING
        self.last_used = time.monotonic()
        self.commit_result: Optional[Dict[str, Any]] = None  # for asynchronous commits

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
    def __init__(self, options: Any, log_warning=None) -> None:
        self.options = options
        self.root = options.staging_directory
        self.lock = threading.Lock()
        self.transactions: "OrderedDict[str, Transaction]" = OrderedDict()  # LRU first
        self.reserved = 0
        self.log_warning = log_warning or (lambda text: None)
        # Results of asynchronous commits whose transaction is gone, bounded.
        self.results: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()

    # --- lifecycle -----------------------------------------------------------

    def prepare(self) -> None:
        """Create the staging root and drop what a previous run left there."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        for name in os.listdir(self.root):
            # Only our own directories: a misconfigured path must not be wiped.
            if TRANSACTION_ID_RE.match(name):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def create(self, request: Any) -> Transaction:
        """Open a transaction; discard the least recently used ones beyond the limit."""
        opts = self.options
        if len(request.instances) > opts.max_instances or len(request.buckets) > opts.max_buckets:
            raise PluginError(BAD_REQUEST, "push request: at most %d instances and %d buckets per transaction"
                              % (opts.max_instances, opts.max_buckets), http_status=413)
        largest = max((b.total_size for b in request.buckets), default=0)
        if largest > opts.max_bucket_size:
            raise PluginError(BAD_REQUEST, "push request: a bucket of %d bytes exceeds MaxBucketSize (%d bytes)"
                              % (largest, opts.max_bucket_size), http_status=413)
        check_coverage(request)
        tid = str(uuid.uuid4())
        txn = Transaction(tid, os.path.join(self.root, tid), request)
        victims: List[Transaction] = []
        with self.lock:
            victims += self._expire_locked()
            while len(self.transactions) >= opts.max_push_transactions:
                victim = self._least_recently_used_locked()
                if victim is None:
                    break  # all are committing: allow a brief overflow rather than kill a commit
                victims.append(self._remove_locked(victim.id))
            self._check_space_locked(txn.declared_size)
            self.transactions[tid] = txn
            self.reserved += txn.declared_size
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

    def _check_space_locked(self, size: int) -> None:
        opts = self.options
        if self.reserved + size > opts.max_staged_size:
            raise PluginError(FULL_STORAGE, "push request: %d bytes declared, but only %d of MaxStagedSize (%d bytes)"
                              " are free in the staging area" % (size, max(0, opts.max_staged_size - self.reserved),
                                                                   opts.max_staged_size))
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return
        # Reserved bytes not yet written are still free on disk: count them.
        if free - self.reserved - size < opts.min_free_disk:
            raise PluginError(FULL_STORAGE, "push request: %d bytes declared, but the staging disk has %d bytes free"
                              " (MinFreeDiskSpace keeps %d bytes free)" % (size, free, opts.min_free_disk))

    def _expire_locked(self) -> List[Transaction]:
        limit = time.monotonic() - self.options.transaction_timeout
        stale = [t.id for t in self.transactions.values() if t.last_used < limit and t.state == STAGING]
        return [self._remove_locked(tid) for tid in stale]

    def _least_recently_used_locked(self) -> Optional[Transaction]:
        for txn in self.transactions.values():
            if txn.state == STAGING:
                return txn
        return None

    def _remove_locked(self, tid: str) -> Transaction:
        txn = self.transactions.pop(tid)
        self.reserved -= txn.declared_size
        return txn

    def _log_discard(self, txn: Transaction) -> None:
        self.log_warning("transfers: discarding push transaction %s (least recently used or idle)" % txn.id)

    def _release_directory(self, txn: Transaction) -> None:
        """Mark discarded; the directory goes when no request uses it any more."""
        with txn.lock:
            txn.discarded = True
            remove = txn.users == 0
        if remove:
            shutil.rmtree(txn.directory, ignore_errors=True)

    # --- access --------------------------------------------------------------

    def acquire(self, tid: str) -> Transaction:
        """The transaction, marked as in use until :meth:`release`; 404 if unknown."""
        if not TRANSACTION_ID_RE.match(tid):
            raise PluginError(UNKNOWN_RESOURCE, "unknown push transaction: %r is not a transaction ID" % tid[:60])
        with self.lock:
            txn = self.transactions.get(tid)
            if txn is None:
                raise PluginError(UNKNOWN_RESOURCE, "unknown push transaction %s (finished, deleted or"
                                  " discarded as least recently used)" % tid)
            self.transactions.move_to_end(tid)
            txn.last_used = time.monotonic()
            with txn.lock:
                txn.users += 1
        return txn

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
                raise PluginError(UNKNOWN_RESOURCE, "unknown push transaction %s" % tid)
            self._remove_locked(tid)
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
            if txn.state != STAGING or txn.discarded:
                raise PluginError(BAD_SEQUENCE_OF_CALLS, "%s: the transaction is being committed or is finished"
                                  % where, http_status=409)
            txn.writers += 1
        try:
            self._write_chunks(txn, bucket, data, where)
            with txn.lock:
                txn.received.add(index)
        finally:
            with txn.lock:
                txn.writers -= 1
                txn.idle.notify_all()

    @staticmethod
    def _write_chunks(txn: Transaction, bucket: Any, data: bytes, where: str) -> None:
        view = memoryview(data)
        position = 0
        for chunk in bucket.chunks:
            path = txn.staged_path(chunk.instance_id)
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
                kind = FULL_STORAGE if exc.errno == 28 else CANNOT_WRITE_FILE
                raise PluginError(kind, "%s: cannot stage the bytes of instance %s: %s"
                                  % (where, chunk.instance_id, exc.strerror))
            position += chunk.size

    def begin_commit(self, txn: Transaction) -> None:
        """Stop accepting buckets and wait for the PUTs already writing."""
        with txn.lock:
            if txn.state != STAGING:
                raise PluginError(BAD_SEQUENCE_OF_CALLS, "transaction %s is already being committed" % txn.id,
                                  http_status=409)
            txn.state = COMMITTING
            while txn.writers:
                txn.idle.wait(1.0)

    def end_commit(self, txn: Transaction, success: bool) -> None:
        """After success the transaction is gone; after a failure it can be completed and committed again."""
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
