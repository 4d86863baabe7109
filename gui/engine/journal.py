"""A job's journal: what one run has durably done, read back when it resumes.

Transports write typed entries through their context (``ctx.journal``):
a bucket is done, an instance was created on the target (the rollback
list), the push transaction or the delegated Orthanc job in progress. The
runner gives each job a journal backed by the job database
(gui/engine/job_store.py), so a killed app resumes where it was; without a
store (tests of one transport) the journal is kept in memory only.

The database keeps transport entries under fixed keys (``push-transaction``,
``delegated-job``) with the JSON shapes below, so jobs saved by an earlier
version resume too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set

from gui.engine.job_store import JobStore
from gui.protocol.wire import InstanceInfo

PUSH_TRANSACTION_KEY = "push-transaction"
DELEGATED_JOB_KEY = "delegated-job"
PLAN_KEY = "_plan"


@dataclass(frozen=True)
class PushTransactionEntry:
    """An open push transaction: its state (``TransactionState.to_json()``),
    the plan it was made for and the buckets it already holds."""
    transaction: Dict[str, Any]
    plan: str
    done: List[int] = field(default_factory=list)
    # Bytes per piece when the transaction was planned on smaller pieces of
    # the job's buckets over a hostile link (piece_size.py); 0: not split.
    piece: int = 0

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"Transaction": self.transaction, "Plan": self.plan, "Done": sorted(self.done)}
        if self.piece:
            out["Piece"] = self.piece
        return out

    @classmethod
    def from_json(cls, data: object) -> Optional["PushTransactionEntry"]:
        if not isinstance(data, dict) or not isinstance(data.get("Transaction"), dict):
            return None
        done = data.get("Done", [])
        piece = data.get("Piece", 0)
        return cls(data["Transaction"], str(data.get("Plan", "")),
                   [int(i) for i in done if isinstance(i, int)] if isinstance(done, list) else [],
                   piece if isinstance(piece, int) and piece > 0 else 0)


@dataclass(frozen=True)
class DelegatedJobEntry:
    """The Orthanc job moving the data in delegated mode, and which server runs it."""
    job: str
    on: str = "source"    # "source" or "target"

    def to_json(self) -> Dict[str, Any]:
        return {"On": self.on, "Job": self.job}

    @classmethod
    def from_json(cls, data: object) -> Optional["DelegatedJobEntry"]:
        if not isinstance(data, dict) or not data.get("Job"):
            return None
        return cls(str(data["Job"]), str(data.get("On", "source")))


def plan_key(instances: Sequence[InstanceInfo]) -> str:
    """Identifies the list of instances a run sends (bucket states only apply to the same list)."""
    return hashlib.sha1(".".join(i.id for i in instances).encode()).hexdigest()


class Journal:
    def __init__(self, store: Optional[JobStore] = None, job_id: str = "") -> None:
        self._store = store
        self._job_id = job_id
        saved = store.checkpoints(job_id) if store is not None else {}
        self._push = PushTransactionEntry.from_json(saved.get(PUSH_TRANSACTION_KEY))
        self._delegated = DelegatedJobEntry.from_json(saved.get(DELEGATED_JOB_KEY))
        self._plan: Optional[str] = saved.get(PLAN_KEY)
        self._done: Set[int] = store.done_buckets(job_id) if store is not None else set()
        self._created: Set[str] = store.created_instances(job_id) if store is not None else set()

    # --- read back on resume -----------------------------------------------------

    def done_buckets(self) -> Set[int]:
        return set(self._done)

    def created_instances(self) -> Set[str]:
        return set(self._created)

    def push_transaction(self) -> Optional[PushTransactionEntry]:
        return self._push

    def delegated_job(self) -> Optional[DelegatedJobEntry]:
        return self._delegated

    # --- written as the run goes --------------------------------------------------

    def start_plan(self, key: str) -> Set[int]:
        """The run sends the instances ``key`` names: the buckets done earlier
        if it is the same list as last time, none otherwise (forgotten)."""
        if self._plan != key:
            self._done = set()
            self._plan = key
            if self._store is not None:
                self._store.reset_buckets(self._job_id)
                self._store.set_checkpoint(self._job_id, PLAN_KEY, key)
        return set(self._done)

    async def bucket_done(self, index: int) -> None:
        self._done.add(index)
        if self._store is not None:
            self._store.set_bucket_state(self._job_id, index, "done")

    async def instance_created(self, instance_id: str) -> None:
        await self.instances_created([instance_id])

    async def instances_created(self, instance_ids: List[str]) -> None:
        self._created.update(instance_ids)
        if self._store is not None:
            self._store.mark_created_many(self._job_id, instance_ids)

    async def set_push_transaction(self, entry: Optional[PushTransactionEntry]) -> None:
        self._push = entry
        self._save(PUSH_TRANSACTION_KEY, entry.to_json() if entry is not None else None)

    async def set_delegated_job(self, entry: Optional[DelegatedJobEntry]) -> None:
        self._delegated = entry
        self._save(DELEGATED_JOB_KEY, entry.to_json() if entry is not None else None)

    def forget_run(self) -> None:
        """After a rollback: nothing of this run is left on the target."""
        self._push = self._delegated = None
        self._done = set()
        self._created = set()
        if self._store is not None:
            self._store.clear_created(self._job_id)
            for key in (PUSH_TRANSACTION_KEY, DELEGATED_JOB_KEY):
                self._store.delete_checkpoint(self._job_id, key)
            self._store.reset_buckets(self._job_id)

    def for_subrun(self) -> "Journal":
        """A journal for a run inside this one (re-sending a few instances):
        its buckets and transport entries are its own (their numbers would
        mark the main plan's), the instances it creates are the job's too."""
        return _SubrunJournal(self)

    def _save(self, key: str, value: Optional[Dict[str, Any]]) -> None:
        if self._store is None:
            return
        if value is None:
            self._store.delete_checkpoint(self._job_id, key)
        else:
            self._store.set_checkpoint(self._job_id, key, value)


class _SubrunJournal(Journal):
    def __init__(self, parent: Journal) -> None:
        super().__init__()
        self._parent = parent

    async def instances_created(self, instance_ids: List[str]) -> None:
        await super().instances_created(instance_ids)
        await self._parent.instances_created(instance_ids)
