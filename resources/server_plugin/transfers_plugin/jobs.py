"""The plugin's own job registry, for the send and pull jobs.

orthanc-python 4.0 cannot create Orthanc jobs (no ``CreateJob``), so the
plugin keeps its jobs here and answers for them in the shape of Orthanc's
``GET /jobs/{id}``. Job IDs start with ``transfers-`` so that the plugin's
routes under ``/jobs/`` match only its own jobs: Orthanc keeps answering
for its jobs (and their outputs) as before, and ``GET /jobs`` lists both.

Each job is a JSON file in ``<staging>/jobs``, rewritten at every change of
state and at most twice a second while it runs, together with what its
runner needs to resume (the peer's push transaction, the buckets it
acknowledged, the instances verified). After a restart of Orthanc an
unfinished job comes back ``Paused``; resuming it sends only what the peer
has not acknowledged yet.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional

from .errors import BAD_SEQUENCE_OF_CALLS, UNKNOWN_RESOURCE, PluginError

PREFIX = "transfers-"
JOB_ID_RE = re.compile(r"^transfers-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
JOB_ID_PATTERN = r"transfers-[0-9a-f-]{36}"   # for the REST routes

PENDING, RUNNING, SUCCESS, FAILURE, PAUSED = "Pending", "Running", "Success", "Failure", "Paused"
FINISHED = (SUCCESS, FAILURE)
ACTIONS = ("pause", "resume", "cancel", "resubmit")

# Orthanc's error codes as jobs report them.
CANCELED_JOB = 37            # "Job was canceled"
INTERNAL_ERROR = -1
HISTORY = 100                # finished jobs kept (files and memory)
SAVE_INTERVAL = 0.5          # seconds between two saves of a running job


def now_text() -> str:
    """Orthanc's time format for jobs (ISO basic, UTC, microseconds)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")


class JobStopped(Exception):
    """Raised by a runner that saw a pause or cancel request; ``action`` says which."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


class Job:
    def __init__(self, job_type: str, request: Dict[str, Any], priority: int = 0,
                 job_id: Optional[str] = None) -> None:
        self.id = job_id or PREFIX + str(uuid.uuid4())
        self.type = job_type
        self.request = request           # Resources, Compression, Peer, SenderTransferID, Originator
        self.priority = priority
        self.state = PENDING
        self.progress = 0.0
        self.error_code = 0
        self.error_description = "Success"
        self.creation_time = now_text()
        self.completion_time: Optional[str] = None
        self.runtime = 0.0               # seconds spent running, over all runs
        self.started: Optional[float] = None
        self.content: Dict[str, Any] = {}       # counters published by the runner
        self.checkpoint: Dict[str, Any] = {}    # what the runner needs to resume
        self.stop: Optional[str] = None         # "pause" | "cancel", asked while running
        self.lock = threading.Lock()
        self.last_save = 0.0

    def check_stop(self) -> None:
        """Called by runners between steps: raises JobStopped on a pause or cancel request."""
        stop = self.stop
        if stop:
            raise JobStopped(stop)

    def publish(self, progress: Optional[float] = None, **content: Any) -> None:
        with self.lock:
            if progress is not None:
                self.progress = max(0.0, min(1.0, progress))
            self.content.update(content)

    def to_json(self) -> Dict[str, Any]:
        """The answer of ``GET /jobs/{id}``: Orthanc's keys, the C++ plugin's Content."""
        with self.lock:
            runtime = self.runtime + (time.monotonic() - self.started if self.started else 0.0)
            content = {"Resources": self.request.get("Resources", []),
                       "Peer": self.request.get("Peer"),
                       "Compression": self.request.get("Compression")}
            if self.request.get("Originator"):
                content["Originator"] = self.request["Originator"]
            content.update(self.content)
            body = {
                "ID": self.id,
                "Type": self.type,
                "State": self.state,
                "Progress": 100 if self.state == SUCCESS else int(self.progress * 100),
                "Priority": self.priority,
                "CreationTime": self.creation_time,
                "EffectiveRuntime": round(runtime, 3),
                "ErrorCode": self.error_code,
                "ErrorDescription": self.error_description,
                "Timestamp": now_text(),
                "Content": content,
            }
            if self.completion_time:
                body["CompletionTime"] = self.completion_time
            return body

    # --- persistence -------------------------------------------------------------

    def to_record(self) -> Dict[str, Any]:
        with self.lock:
            return {"ID": self.id, "Type": self.type, "Request": self.request, "Priority": self.priority,
                    "State": self.state, "Progress": self.progress, "ErrorCode": self.error_code,
                    "ErrorDescription": self.error_description, "CreationTime": self.creation_time,
                    "CompletionTime": self.completion_time, "Runtime": self.runtime,
                    "Content": dict(self.content), "Checkpoint": json.loads(json.dumps(self.checkpoint))}

    @classmethod
    def from_record(cls, record: Dict[str, Any]) -> "Job":
        job = cls(record["Type"], record["Request"], int(record.get("Priority", 0)), record["ID"])
        job.state = record["State"]
        job.progress = float(record.get("Progress", 0))
        job.error_code = int(record.get("ErrorCode", 0))
        job.error_description = str(record.get("ErrorDescription", ""))
        job.creation_time = record.get("CreationTime") or job.creation_time
        job.completion_time = record.get("CompletionTime")
        job.runtime = float(record.get("Runtime", 0))
        job.content = dict(record.get("Content") or {})
        job.checkpoint = dict(record.get("Checkpoint") or {})
        return job


class JobRegistry:
    """Runs jobs (at most ``concurrency`` at once, by priority) and keeps them on disk.

    ``runners`` maps a job type to an object with ``run(job)`` (does the
    work, resuming from ``job.checkpoint``; raises JobStopped, PluginError
    or anything else on failure) and ``cleanup(job)`` (undoes what a
    cancelled or failed job left on the peer or in staging).
    """

    def __init__(self, directory: str, runners: Dict[str, Any], concurrency: int = 2,
                 log_warning: Callable[[str], None] = lambda text: None,
                 log_error: Callable[[str], None] = lambda text: None) -> None:
        self.directory = directory
        self.runners = runners
        self.concurrency = max(1, concurrency)
        self.log_warning = log_warning
        self.log_error = log_error
        self.lock = threading.Lock()
        # Saves of one job come from its worker and from REST calls (pause,
        # resume) at once; both wrote the same temporary file, and a file
        # mixed from two saves was unreadable at the next start: the job
        # was gone after a restart.
        self.save_lock = threading.Lock()
        self.jobs: Dict[str, Job] = {}
        self.running: Dict[str, threading.Thread] = {}

    # --- startup -------------------------------------------------------------------

    def load(self) -> None:
        """Read the jobs of a previous run; unfinished ones come back paused."""
        if not os.path.isdir(self.directory):
            return  # created with the first job
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)
                continue
            if not name.endswith(".json") or not JOB_ID_RE.match(name[:-5]):
                continue
            try:
                with open(path, "r", encoding="utf-8") as handle:
                    job = Job.from_record(json.load(handle))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.log_warning("transfers: ignoring the unreadable job file %s: %s" % (path, exc))
                continue
            if job.state not in FINISHED:
                job.state = PAUSED  # never restart a transfer behind the admin's back
                self.save(job)
            self.jobs[job.id] = job
        self._trim()

    # --- access --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise PluginError(UNKNOWN_RESOURCE, "unknown job %s (finished jobs are kept for the last %d)"
                              % (job_id[:60], HISTORY))
        return job

    def list(self) -> List[Job]:
        with self.lock:
            jobs = list(self.jobs.values())
        return sorted(jobs, key=lambda j: j.creation_time)

    def submit(self, job: Job) -> Job:
        with self.lock:
            self.jobs[job.id] = job
        self.save(job)
        self._trim()
        self._dispatch()
        return job

    # --- control -------------------------------------------------------------------

    def control(self, job_id: str, action: str) -> None:
        job = self.get(job_id)
        cleanup = False
        with self.lock:
            state = job.state
            if action == "pause":
                if state == PENDING:
                    job.state = PAUSED
                elif state == RUNNING:
                    job.stop = job.stop or "pause"
                elif state != PAUSED:
                    raise self._refused(job, action)
            elif action == "resume":
                if state == PAUSED:
                    job.state = PENDING
                elif state == RUNNING and job.stop == "pause":
                    job.stop = None
                elif state not in (PENDING, RUNNING):
                    raise self._refused(job, action)
            elif action == "cancel":
                if state == RUNNING:
                    job.stop = "cancel"
                elif state in (PENDING, PAUSED):
                    job.state = RUNNING   # until its cleanup is done; no other thread picks it
                    cleanup = True
                elif state == SUCCESS:
                    raise self._refused(job, action)
            elif action == "resubmit":
                if state != FAILURE:
                    raise self._refused(job, action)
                job.state = PENDING
                job.error_code, job.error_description = 0, "Success"
                job.completion_time = None
                job.stop = None
        if cleanup:
            thread = threading.Thread(target=self._cancel_idle, args=(job,), daemon=True,
                                      name="transfers-cancel")
            with self.lock:
                self.running[job.id] = thread
            thread.start()
            return
        self.save(job)
        self._dispatch()

    @staticmethod
    def _refused(job: Job, action: str) -> PluginError:
        return PluginError(BAD_SEQUENCE_OF_CALLS, "job %s is %s and cannot be %s" % (
            job.id, job.state, {"pause": "paused", "resume": "resumed", "cancel": "cancelled",
                                "resubmit": "resubmitted (only failed jobs can)"}[action]))

    def _cancel_idle(self, job: Job) -> None:
        try:
            self._cleanup(job)
        finally:
            self._finish(job, FAILURE, CANCELED_JOB, "Job was canceled")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Orthanc is stopping: pause the running jobs (they resume after the restart
        from their checkpoint) instead of keeping Orthanc waiting until they finish."""
        with self.lock:
            running = [(self.jobs[jid], thread) for jid, thread in self.running.items() if jid in self.jobs]
            for job, _ in running:
                if job.state == RUNNING and job.stop is None:
                    job.stop = "pause"
        deadline = time.monotonic() + timeout
        for _, thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        for job, _ in running:
            self.save(job)

    # --- running -------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self.lock:
            free = self.concurrency - len(self.running)
            waiting = sorted((j for j in self.jobs.values() if j.state == PENDING and j.id not in self.running),
                             key=lambda j: (-j.priority, j.creation_time))
            chosen = []
            for job in waiting[:max(0, free)]:
                job.state = RUNNING
                job.stop = None
                job.started = time.monotonic()
                thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                          name="transfers-job")
                self.running[job.id] = thread
                chosen.append((job, thread))
        for job, thread in chosen:
            self.save(job)
            thread.start()

    def _run(self, job: Job) -> None:
        runner = self.runners[job.type]
        try:
            runner.run(job)
        except JobStopped as stop:
            if stop.action == "pause":
                self._finish(job, PAUSED)
            else:
                self._cleanup(job)
                self._finish(job, FAILURE, CANCELED_JOB, "Job was canceled")
        except PluginError as exc:
            self._cleanup(job)
            self._finish(job, FAILURE, exc.code, exc.details)
        except Exception as exc:  # a bug or a peer error: report it in words, keep the plugin alive
            description = getattr(exc, "description", None) or str(exc) or type(exc).__name__
            if not hasattr(exc, "status"):   # PeerErrors are expected; anything else is logged in full
                self.log_error("transfers: job %s failed:\n%s" % (job.id, traceback.format_exc()))
            self._cleanup(job)
            code = getattr(exc, "code", INTERNAL_ERROR)
            self._finish(job, FAILURE, code if isinstance(code, int) else INTERNAL_ERROR, description)
        else:
            self._finish(job, SUCCESS)

    def _cleanup(self, job: Job) -> None:
        try:
            self.runners[job.type].cleanup(job)
        except Exception as exc:  # cleanup is best effort; say so rather than hide it
            self.log_warning("transfers: could not clean up after job %s: %s" % (job.id, exc))

    def _finish(self, job: Job, state: str, code: int = 0, description: str = "Success") -> None:
        with self.lock:
            if job.started is not None:
                job.runtime += time.monotonic() - job.started
                job.started = None
            job.stop = None
            job.state = state
            if state in FINISHED:
                job.error_code, job.error_description = code, description
                job.completion_time = now_text()
                if state == SUCCESS:
                    job.progress = 1.0
            self.running.pop(job.id, None)
        if state == FAILURE:
            self.log_warning("transfers: job %s failed: %s" % (job.id, description))
        self.save(job)
        self._trim()
        self._dispatch()

    # --- files ---------------------------------------------------------------------

    def path_of(self, job_id: str) -> str:
        return os.path.join(self.directory, job_id + ".json")

    def save(self, job: Job) -> None:
        path = self.path_of(job.id)
        with self.save_lock:
            try:
                record = job.to_record()
            except RuntimeError:  # a worker changed the checkpoint meanwhile: the next save takes it
                return
            job.last_save = time.monotonic()
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                with open(path + ".tmp", "w", encoding="utf-8") as handle:
                    json.dump(record, handle)
                os.replace(path + ".tmp", path)
            except OSError as exc:
                self.log_warning("transfers: cannot save job %s (%s); it will not survive a restart"
                                 % (job.id, exc.strerror))

    def save_soon(self, job: Job) -> None:
        """Save a running job's checkpoint, at most every SAVE_INTERVAL seconds."""
        if time.monotonic() - job.last_save >= SAVE_INTERVAL:
            self.save(job)

    def _trim(self) -> None:
        with self.lock:
            finished = sorted((j for j in self.jobs.values() if j.state in FINISHED),
                              key=lambda j: j.completion_time or "")
            victims = finished[:max(0, len(finished) - HISTORY)]
            for job in victims:
                del self.jobs[job.id]
        for job in victims:
            try:
                os.unlink(self.path_of(job.id))
            except OSError:
                pass
