"""Import as it arrives (extension of this project, off by default).

A push request with ``"ImportAsItArrives": true`` (answered with the same key
when honoured) asks the plugin to import each instance as soon as all its
buckets are staged and its size and MD5 match, instead of waiting for the
commit. The import then hides behind the transfer, but the study is visible
on the server before it is complete, and Orthanc's automations (Lua,
auto-routing, StableStudy) may act on instances that a later rollback removes.

The transaction stays all or nothing in the end: the commit fails, and every
instance imported early is deleted again, if any instance is missing,
corrupted or refused, and so does discarding the transaction (DELETE, timeout,
least recently used). A journal in the transaction's staging directory lists
what was imported, so a rollback also happens after Orthanc restarts in
the middle of a transfer: at startup, every journal left there is rolled back.

Journal lines (appended and closed, i.e. handed to the kernel, before and after each import):
``pending <id> <0|1 existed before>`` then ``done <id> <Orthanc ID created | ->``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from .commit import _Failure, instance_problem
from .staging import JOURNAL


def journal_path(directory: str) -> str:
    return os.path.join(directory, JOURNAL)


def created_in_journal(directory: str) -> List[str]:
    """Orthanc IDs that the journal says this transaction created (or may have)."""
    try:
        with open(journal_path(directory), "r", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    pending: Dict[str, bool] = {}
    created: List[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "pending":
            pending[parts[1]] = parts[2] == "0"
        elif len(parts) == 3 and parts[0] == "done":
            pending.pop(parts[1], None)
            if parts[2] != "-":
                created.append(parts[2])
    # Imports cut short by a crash: Orthanc may have stored the file. Only
    # what was not there before is removed, under the ID the sender gave.
    created += [iid for iid, was_new in pending.items() if was_new]
    return created


class ArrivalImporter:
    """Imports the instances that a bucket PUT completed, in a pool of its own."""

    def __init__(self, importer: Any, threads: int, roll_back: Callable[[List[str]], None],
                 log_warning=None) -> None:
        self.importer = importer
        self.roll_back = roll_back
        self.log_warning = log_warning or (lambda text: None)
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="transfers-arrival")
        self.journal_lock = threading.Lock()

    def bucket_written(self, store: Any, txn: Any, index: int) -> None:
        """Queue the imports of the instances bucket ``index`` completed."""
        ready = []
        with txn.lock:
            if txn.discarded:
                return
            for chunk in txn.buckets[index].chunks:
                iid = chunk.instance_id
                if iid in txn.early_started or any(b not in txn.received for b in txn.buckets_of[iid]):
                    continue
                txn.early_started.add(iid)
                txn.early_pending += 1
                txn.users += 1  # the directory stays while the import reads it
                ready.append(iid)
        for iid in ready:
            self.pool.submit(self._import, store, txn, iid)

    def _write(self, txn: Any, line: str) -> None:
        with self.journal_lock:
            with open(journal_path(txn.directory), "a", encoding="ascii") as handle:
                # Written through to the kernel before the import starts, so
                # it survives Orthanc stopping or crashing (not a power cut:
                # an fsync per line would add two disk syncs to every import).
                handle.write(line + "\n")

    def _import(self, store: Any, txn: Any, iid: str) -> None:
        try:
            info = txn.info_of[iid]
            if instance_problem(txn, info) is not None:
                return  # left for the commit, which names the problem
            with txn.lock:
                if txn.discarded or txn.early_failure is not None:
                    return
            existed = self.importer._exists(info.id)
            self._write(txn, "pending %s %d" % (info.id, int(existed)))
            try:
                new_id = self.importer.import_one(txn, info, existed)
            except _Failure as failure:
                with txn.lock:
                    txn.early_failure = failure
                self._write(txn, "done %s -" % info.id)
                return
            self._write(txn, "done %s %s" % (info.id, new_id or "-"))
            with txn.lock:
                txn.early_imported[iid] = new_id
        except Exception as exc:  # never lose an import silently: the commit imports it again
            self.log_warning("transfers: early import of %s failed: %r" % (iid, exc))
        finally:
            with txn.lock:
                txn.early_pending -= 1
                txn.idle.notify_all()
            store.release(txn)

    def wait_idle(self, txn: Any) -> None:
        with txn.lock:
            while txn.early_pending:
                txn.idle.wait(1.0)

    def created(self, txn: Any) -> List[str]:
        with txn.lock:
            return [new_id for new_id in txn.early_imported.values() if new_id is not None]

    def undo(self, txn: Any) -> None:
        """Delete what was imported early (the transaction failed or is discarded)."""
        self.wait_idle(txn)
        ids = created_in_journal(txn.directory)
        if ids:
            self.log_warning("transfers: removing the %d instance(s) imported as they arrived for transaction %s"
                             % (len(ids), txn.id))
            self.roll_back(ids)
        try:
            os.remove(journal_path(txn.directory))
        except OSError:
            pass
        with txn.lock:
            txn.early_imported.clear()
            txn.early_started.clear()
            txn.early_failure = None


def recover(root: str, names: List[str], roll_back: Callable[[List[str]], None],
            log_warning: Optional[Callable[[str], None]] = None) -> int:
    """At startup: roll back the early imports of transactions a previous run left."""
    undone = 0
    for name in names:
        ids = created_in_journal(os.path.join(root, name))
        if ids:
            if log_warning:
                log_warning("transfers: transaction %s was left unfinished by the previous run; removing the %d"
                            " instance(s) it had imported as they arrived" % (name, len(ids)))
            roll_back(ids)
            undone += len(ids)
    return undone
