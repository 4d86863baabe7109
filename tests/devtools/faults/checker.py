"""The one judge of every fault scenario: snapshot before, classify after.

A transfer under faults may end in exactly two ways:

- **completed-verified**: the job says Success, every instance it had to
  deliver is on the target with the source's MD5, and nothing else on the
  target changed;
- **unchanged-clean-failure**: the job says it failed, with a readable
  reason, and the target holds exactly what it held before.

Anything else — a half-imported study, a success report over a target that
lacks instances, a failure without a reason, a modified source — is
**FAILED**. The source must never change in either case.

The comparison is on instance IDs and stored MD5s (``/instances`` and
``/instances/{id}/attachments/dicom/md5``), read with blocking calls: call
:meth:`TransferChecker.before` / :meth:`TransferChecker.classify` through
``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol


class Outcome(str, enum.Enum):
    COMPLETED_VERIFIED = "completed-verified"
    UNCHANGED_CLEAN_FAILURE = "unchanged-clean-failure"
    FAILED = "FAILED"

    @property
    def acceptable(self) -> bool:
        return self is not Outcome.FAILED


@dataclass
class Verdict:
    outcome: Outcome
    detail: str = ""
    faults_injected: int = 0
    # Anything the scenario wants to show in the table's notes (e.g. the error text).
    notes: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.outcome.value}: {self.detail}" if self.detail else self.outcome.value


class InstanceLister(Protocol):
    """What the checker needs from a server (``OrthancProcess`` has it)."""

    def instance_md5s(self) -> Dict[str, str]: ...


def snapshot(server: InstanceLister, *, settle_timeout: float = 20.0,
             interval: float = 0.25) -> Dict[str, str]:
    """The server's instances and MD5s once they stop changing.

    A target may still be importing when a job gives up (commit timeout), so
    one read is not enough: read until two consecutive reads agree, within
    ``settle_timeout`` seconds (then the last read is returned).
    """
    deadline = time.monotonic() + settle_timeout
    last = _read(server)
    while time.monotonic() < deadline:
        time.sleep(interval)
        current = _read(server)
        if current == last:
            return current
        last = current
    return last


def _read(server: InstanceLister) -> Dict[str, str]:
    # An instance can vanish between the listing and its MD5 read (a rollback
    # in progress); retry the whole read a few times rather than fail.
    error: Optional[Exception] = None
    for _ in range(5):
        try:
            return dict(server.instance_md5s())
        except Exception as exc:  # noqa: BLE001 - urllib raises several types
            error = exc
            time.sleep(0.2)
    raise RuntimeError(f"cannot list the instances of the server: {error}")


def _describe_diff(want: Mapping[str, str], have: Mapping[str, str]) -> str:
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(i for i in set(want) & set(have) if want[i] != have[i])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if wrong:
        parts.append(f"{len(wrong)} with a wrong MD5 (e.g. {wrong[0]})")
    return ", ".join(parts) or "no difference"


def is_clear_error(text: Optional[str]) -> bool:
    """A reason a user can read: present, one paragraph, not a traceback."""
    if not text or not text.strip():
        return False
    return "Traceback (most recent call last)" not in text and len(text) < 4000


class TransferChecker:
    """Snapshot a source and a target before a transfer; classify the end state.

    ``expected`` names the instances the transfer must deliver (default:
    every instance on the source at :meth:`before`).
    """

    def __init__(self, source: InstanceLister, target: InstanceLister,
                 expected: Optional[Iterable[str]] = None, *, settle_interval: float = 0.25) -> None:
        self.settle_interval = settle_interval
        self.source = source
        self.target = target
        self._expected = set(expected) if expected is not None else None
        self.source_before: Dict[str, str] = {}
        self.target_before: Dict[str, str] = {}

    def before(self) -> "TransferChecker":
        self.source_before = snapshot(self.source, interval=self.settle_interval)
        self.target_before = snapshot(self.target, interval=self.settle_interval)
        if self._expected is None:
            self._expected = set(self.source_before)
        absent = self._expected - set(self.source_before)
        if absent:
            raise ValueError(f"{len(absent)} expected instances are not on the source")
        return self

    @property
    def expected(self) -> Dict[str, str]:
        assert self._expected is not None, "call before() first"
        return {i: self.source_before[i] for i in self._expected}

    @property
    def whole(self) -> Dict[str, str]:
        """What the target must hold after a completed transfer."""
        want = dict(self.target_before)
        want.update(self.expected)
        return want

    def classify(self, *, succeeded: bool, error: Optional[str] = None,
                 report: Optional[Mapping[str, Any]] = None) -> Verdict:
        """Compare the end state with the snapshots.

        ``succeeded``: the job (or every job) reported Success. ``error``: the
        text shown to the user when it did not. ``report``: the job's JSON
        report (``CommitmentReport.to_json()`` / the CLI's ``--json``), checked
        for consistency when given.
        """
        source_after = snapshot(self.source, interval=self.settle_interval)
        if source_after != self.source_before:
            return Verdict(Outcome.FAILED, "the source was modified: "
                           + _describe_diff(self.source_before, source_after))
        target_after = snapshot(self.target, interval=self.settle_interval)
        whole = self.whole
        if succeeded:
            if target_after != whole:
                return Verdict(Outcome.FAILED, "reported Success but the target differs from "
                               "source + before: " + _describe_diff(whole, target_after))
            if report is not None:
                problem = _report_problem(report, len(self.expected))
                if problem:
                    return Verdict(Outcome.FAILED, problem)
            return Verdict(Outcome.COMPLETED_VERIFIED, f"{len(self.expected)} instances verified")
        if target_after == self.target_before:
            if not is_clear_error(error):
                return Verdict(Outcome.FAILED, f"target unchanged but the failure has no clear "
                               f"reason: {error!r:.200}")
            return Verdict(Outcome.UNCHANGED_CLEAN_FAILURE, _one_line(error))
        if target_after == whole and whole != self.target_before:
            return Verdict(Outcome.FAILED, "the target holds the whole transfer but the job "
                           f"reported a failure: {_one_line(error)}")
        return Verdict(Outcome.FAILED, "partial import: the target is neither as before nor "
                       "complete: " + _describe_diff(whole, target_after)
                       + f"; compared with before: {_describe_diff(self.target_before, target_after)}")


def _report_problem(report: Mapping[str, Any], expected: int) -> Optional[str]:
    state = report.get("state")
    if state != "Success":
        return f"the report says {state!r} while the job succeeded"
    instances, verified = report.get("instances"), report.get("verified")
    if instances != expected or verified != expected:
        return f"the report counts {instances} planned / {verified} verified, expected {expected}"
    if report.get("failures"):
        return f"a Success report lists failures: {report.get('failures')!r:.200}"
    return None


def _one_line(text: Optional[str]) -> str:
    return " ".join((text or "").split())[:300]
