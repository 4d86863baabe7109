"""Jobs on disk: one SQLite file in the data directory, readable by its owner only.

What is stored: each job's peers (name and URL, *never* a password — the
credentials are looked up again in the configuration when a job resumes),
its resources and options, its plan (instances with size and MD5 and what
happened to each), its bucket states, the transports' checkpoints (e.g. a
push transaction ID) and the final report.

The writes are small and rare (a few per bucket), so they run directly on
the event loop thread; SQLite in WAL mode keeps them short.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from gui.protocol.wire import InstanceInfo

DB_NAME = "jobs.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                 -- "transfer" | "upload"
    source_name TEXT NOT NULL,
    source_url TEXT NOT NULL,
    target_name TEXT NOT NULL,
    target_url TEXT NOT NULL,
    resources TEXT NOT NULL,            -- JSON list of {"Level", "ID"}; for uploads the file paths
    options TEXT NOT NULL,              -- JSON TransferOptions
    requested_mode TEXT NOT NULL,
    mode TEXT,
    compression TEXT,
    force INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    transfer_id TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    report TEXT,                        -- CommitmentReport.to_json() when finished: JSON text, or
                                        -- (since issue 16) _pack_report's zlib BLOB
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    status TEXT NOT NULL,               -- planned | sent
    created INTEGER NOT NULL DEFAULT 0, -- this job created it on the target (rollback list)
    PRIMARY KEY (job_id, instance_id)
);
CREATE TABLE IF NOT EXISTS buckets (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,                -- JSON
    PRIMARY KEY (job_id, key)
);
"""

# Keys that would reveal a secret if a caller slipped one into a JSON column.
_SECRET_KEYS = {"password", "certificatekeypassword", "authorization"}


@dataclass
class JobRecord:
    id: str
    kind: str
    source_name: str
    source_url: str
    target_name: str
    target_url: str
    resources: List[Any]
    options: Dict[str, Any]
    requested_mode: str
    transfer_id: str
    state: str
    mode: Optional[str] = None
    compression: Optional[str] = None
    force: bool = False
    description: str = ""
    error: Optional[str] = None
    report: Optional[Dict[str, Any]] = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)


def _pack_report(report: Dict[str, Any]) -> bytes:
    """A stored report, compact: the per-instance details as columns (a target
    MD5 equal to the source's as 0), the whole as deflated JSON. A verbose
    report of 20,000 instances took 4.7 MB; this about 50 bytes an instance."""
    data = dict(report)
    details = data.pop("details", None)
    if isinstance(details, list):
        keys = sorted({key for d in details for key in d})
        columns = {key: [d.get(key) for d in details] for key in keys}
        if "target_md5" in columns and "source_md5" in columns:
            columns["target_md5"] = [0 if t is not None and t == s else t
                                     for s, t in zip(columns["source_md5"], columns["target_md5"])]
        data["details_columns"] = columns
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)


def _unpack_report(value: Any) -> Optional[Dict[str, Any]]:
    if not value:
        return None
    if isinstance(value, str):           # stored before issue 16: the report's JSON as it is
        loaded: Dict[str, Any] = json.loads(value)
        return loaded
    data: Dict[str, Any] = json.loads(zlib.decompress(value))
    columns = data.pop("details_columns", None)
    if isinstance(columns, dict):
        if "target_md5" in columns and "source_md5" in columns:
            columns["target_md5"] = [s if t == 0 else t
                                     for s, t in zip(columns["source_md5"], columns["target_md5"])]
        keys = list(columns)
        data["details"] = [dict(zip(keys, row)) for row in zip(*(columns[k] for k in keys))]
    return data


def _check_no_secret(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in _SECRET_KEYS:
                raise ValueError(f"refusing to store a secret ({key}) in {where}")
            _check_no_secret(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_no_secret(item, where)


def _url_without_credentials(url: str) -> str:
    from gui.client.errors import redact_url
    return redact_url(url)


class JobStore:
    """The SQLite job database. Not thread-safe: use it from the event loop only."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file 0600 before SQLite opens it, so it is never readable by others.
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        # A new database gives the pages of a finished job's plan back to the disk
        # (clear_run_state); it must be set before the first table exists.
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA journal_size_limit = 1048576")   # the WAL file, once checkpointed
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for extra in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + extra)
            if side.exists():
                os.chmod(side, 0o600)

    def close(self) -> None:
        self._db.close()

    # --- jobs ------------------------------------------------------------------

    def save_job(self, job: JobRecord) -> None:
        _check_no_secret(job.options, "options")
        _check_no_secret(job.resources, "resources")
        job.updated = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (id, kind, source_name, source_url, target_name, target_url,"
            " resources, options, requested_mode, mode, compression, force, description, transfer_id,"
            " state, error, report, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (job.id, job.kind, job.source_name, _url_without_credentials(job.source_url),
             job.target_name, _url_without_credentials(job.target_url),
             json.dumps(job.resources), json.dumps(job.options), job.requested_mode, job.mode,
             job.compression, int(job.force), job.description, job.transfer_id, job.state,
             job.error, _pack_report(job.report) if job.report is not None else None,
             job.created, job.updated))

    def update_job(self, job_id: str, **fields: Any) -> None:
        if not fields:
            return
        if "report" in fields and fields["report"] is not None:
            fields["report"] = _pack_report(fields["report"])
        fields["updated"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))

    def load_jobs(self) -> List[JobRecord]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY created").fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        return JobRecord(
            id=row["id"], kind=row["kind"], source_name=row["source_name"],
            source_url=row["source_url"], target_name=row["target_name"],
            target_url=row["target_url"], resources=json.loads(row["resources"]),
            options=json.loads(row["options"]), requested_mode=row["requested_mode"],
            transfer_id=row["transfer_id"], state=row["state"], mode=row["mode"],
            compression=row["compression"], force=bool(row["force"]),
            description=row["description"], error=row["error"],
            report=_unpack_report(row["report"]),
            created=row["created"], updated=row["updated"])

    def delete_job(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # --- plan ------------------------------------------------------------------

    def _many(self, sql: str, rows: List[Tuple[Any, ...]]) -> None:
        """``sql`` for every row in one transaction: in autocommit each row
        was a transaction of its own (2,000 instances: about 60 ms, on the
        way between planning and the first bucket, and between the last
        bucket and the commit)."""
        if self._db.in_transaction:
            self._db.executemany(sql, rows)
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save_plan(self, job_id: str, instances: Iterable[InstanceInfo], status: str) -> None:
        """Record instances (new ones get ``status``; known ones keep theirs)."""
        self._many(
            "INSERT OR IGNORE INTO instances (job_id, instance_id, size, md5, status) VALUES (?,?,?,?,?)",
            [(job_id, i.id, i.size, i.md5, status) for i in instances])

    def set_md5s(self, job_id: str, md5s: Dict[str, str]) -> None:
        """The source MD5s fetched after the plan was saved (source_md5.py)."""
        self._many("UPDATE instances SET md5 = ? WHERE job_id = ? AND instance_id = ?",
                   [(md5, job_id, i) for i, md5 in md5s.items()])

    def set_instance_status(self, job_id: str, instance_ids: Iterable[str], status: str) -> None:
        self._many("UPDATE instances SET status = ? WHERE job_id = ? AND instance_id = ?",
                   [(status, job_id, i) for i in instance_ids])

    def mark_created(self, job_id: str, info_id: str) -> None:
        self.mark_created_many(job_id, [info_id])

    def mark_created_many(self, job_id: str, info_ids: Iterable[str]) -> None:
        self._many("UPDATE instances SET created = 1 WHERE job_id = ? AND instance_id = ?",
                   [(job_id, i) for i in info_ids])

    def created_instances(self, job_id: str) -> Set[str]:
        rows = self._db.execute("SELECT instance_id FROM instances WHERE job_id = ? AND created = 1",
                                (job_id,)).fetchall()
        return {r["instance_id"] for r in rows}

    def clear_created(self, job_id: str) -> None:
        self._db.execute("UPDATE instances SET created = 0 WHERE job_id = ?", (job_id,))

    def instance_statuses(self, job_id: str) -> Dict[str, str]:
        rows = self._db.execute("SELECT instance_id, status FROM instances WHERE job_id = ?",
                                (job_id,)).fetchall()
        return {r["instance_id"]: r["status"] for r in rows}

    def planned_instances(self, job_id: str) -> List[InstanceInfo]:
        rows = self._db.execute("SELECT instance_id, size, md5 FROM instances WHERE job_id = ?"
                                " ORDER BY instance_id", (job_id,)).fetchall()
        return [InstanceInfo(r["instance_id"], r["size"], r["md5"]) for r in rows]

    def clear_run_state(self, job_id: str) -> None:
        """Forget plan, buckets and checkpoints (a resubmitted job starts afresh)."""
        for table in ("instances", "buckets", "checkpoints"):
            self._db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
        # As a script: run to its end (one step of execute frees a single page).
        self._db.executescript("PRAGMA incremental_vacuum;")

    # --- buckets and checkpoints -------------------------------------------------

    def set_bucket_state(self, job_id: str, index: int, state: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO buckets (job_id, idx, state) VALUES (?,?,?)",
                         (job_id, index, state))

    def reset_buckets(self, job_id: str) -> None:
        self._db.execute("DELETE FROM buckets WHERE job_id = ?", (job_id,))

    def done_buckets(self, job_id: str) -> Set[int]:
        rows = self._db.execute("SELECT idx FROM buckets WHERE job_id = ? AND state = 'done'",
                                (job_id,)).fetchall()
        return {r["idx"] for r in rows}

    def set_checkpoint(self, job_id: str, key: str, value: Any) -> None:
        _check_no_secret(value, f"checkpoint {key}")
        self._db.execute("INSERT OR REPLACE INTO checkpoints (job_id, key, value) VALUES (?,?,?)",
                         (job_id, key, json.dumps(value)))

    def checkpoints(self, job_id: str) -> Dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM checkpoints WHERE job_id = ?",
                                (job_id,)).fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def delete_checkpoint(self, job_id: str, key: str) -> None:
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND key = ?", (job_id, key))
