"""Push transactions that survive a restart of Orthanc.

Each transaction directory of the staging area holds a small journal next
to the staged files:

- ``transaction.json``: the push request it was created with (written
  once, atomically, before the creation is answered);
- ``received``: one line per bucket stored (appended after the bucket's
  bytes are written, before the PUT is answered);
- ``committing``: present while a commit runs; the Orthanc IDs it imported
  are appended to it, one per line.

At start-up (:meth:`Recovery.reload`) the transactions found there come
back under their own IDs with the buckets they had received, newest first,
within ``MaxPushTransactions`` and ``MaxStagedSize``; the others, and
every directory without a readable journal (orphans), are removed. A
sender that kept its transaction ID just sends the buckets still missing.

A commit interrupted by the restart is finished once Orthanc answers
(:meth:`Recovery.finish_interrupted`): every instance had been checked
before the first import, the staged files are still there, and importing
an instance again is harmless. If the import now fails, the instances
the interrupted run had imported are deleted too, so nothing stays half
imported. The outcome is kept as an asynchronous commit's result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, List

MANIFEST = "transaction.json"
RECEIVED = "received"
COMMITTING = "committing"


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode("ascii"))
    finally:
        os.close(fd)


def _lines(path: str) -> List[str]:
    try:
        with open(path, "r", encoding="ascii", errors="replace") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError:
        return []


class Recovery:
    def __init__(self, store: Any, wire: Any, log_warning: Callable[[str], None]) -> None:
        self.store = store
        self.wire = wire
        self.log = log_warning
        self.interrupted: List[Any] = []     # transactions whose commit the restart cut

    # --- written as transactions live ---------------------------------------------

    def created(self, txn: Any, body: Any) -> None:
        path = os.path.join(txn.directory, MANIFEST)
        try:
            with open(path + ".tmp", "w", encoding="ascii") as handle:
                json.dump({"Request": body, "Created": time.time()}, handle)
            os.replace(path + ".tmp", path)
        except OSError as exc:   # the transaction still works; it just will not survive a restart
            self.log("transfers: cannot journal push transaction %s: %s" % (txn.id, exc))

    def bucket_received(self, txn: Any, index: str) -> None:
        try:
            _append(os.path.join(txn.directory, RECEIVED), str(int(index)))
        except (OSError, ValueError):
            pass

    def commit_begins(self, txn: Any) -> None:
        try:
            _append(os.path.join(txn.directory, COMMITTING), "")
        except OSError:
            pass

    def commit_ends(self, txn: Any, success: bool) -> None:
        if not success:   # after success the whole directory goes
            try:
                os.unlink(os.path.join(txn.directory, COMMITTING))
            except OSError:
                pass

    def imported(self, txn: Any, instance_id: str) -> None:
        try:
            _append(os.path.join(txn.directory, COMMITTING), instance_id)
        except OSError:
            pass

    # --- start-up ---------------------------------------------------------------------

    def reload(self, names: List[str]) -> int:
        """Bring back the journaled transactions ``names`` (directories the
        store kept at prepare); the number reloaded."""
        store, opts = self.store, self.store.options
        found = []
        for name in names:
            directory = os.path.join(store.root, name)
            try:
                with open(os.path.join(directory, MANIFEST), "r", encoding="ascii") as handle:
                    manifest = json.load(handle)
                request = self.wire.parse_push_request(manifest["Request"], opts.max_instances,
                                                       opts.max_buckets)
                found.append((float(manifest.get("Created", 0)), name, directory, request))
            except (OSError, ValueError, KeyError, TypeError, self.wire.WireFormatError) as exc:
                self.log("transfers: removing staging directory %s left by the previous run: %s" % (name, exc))
                shutil.rmtree(directory, ignore_errors=True)
        found.sort(key=lambda item: item[0], reverse=True)   # newest first
        reloaded = 0
        for _created, name, directory, request in found:
            declared = sum(i.size for i in request.instances)
            if reloaded >= opts.max_push_transactions or store.reserved + declared > opts.max_staged_size:
                self.log("transfers: not reloading push transaction %s (MaxPushTransactions or "
                         "MaxStagedSize reached)" % name)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            txn = self._restore(name, directory, request)
            reloaded += 1
            if os.path.exists(os.path.join(directory, COMMITTING)):
                self.interrupted.append(txn)
        if reloaded:
            self.log("transfers: reloaded %d push transaction(s) staged before the restart" % reloaded)
        return reloaded

    def _restore(self, tid: str, directory: str, request: Any) -> Any:
        from .staging import Transaction
        store = self.store
        txn = Transaction(tid, directory, request, store.options.codecs)
        for line in _lines(os.path.join(directory, RECEIVED)):
            if line.isdigit() and int(line) < len(txn.buckets) and int(line) not in txn.received:
                txn.received.add(int(line))
                txn.staged += txn.buckets[int(line)].total_size
        with store.lock:
            store.transactions[tid] = txn
            store.transactions.move_to_end(tid, last=False)   # older than anything created from now on
            store.reserved += txn.declared_size
        store._publish()
        return txn

    def finish_interrupted(self, commit: Callable[[Any], bool], roll_back: Callable[[List[str]], None]) -> None:
        """Finish each interrupted commit (``commit(txn)``: whether it
        succeeded); on failure also delete what the interrupted run imported."""
        for txn in self.interrupted:
            earlier = _lines(os.path.join(txn.directory, COMMITTING))
            self.log("transfers: finishing the commit of push transaction %s interrupted by the restart"
                     % txn.id)
            if not commit(txn) and earlier:
                roll_back(earlier)
        self.interrupted = []
