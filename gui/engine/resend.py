"""Re-sending instances that failed their MD5 check, before giving up.

A corrupted byte on the link (or a flaky disk) spoils one instance, not the
whole transfer. Where an instance fails verification — in the pull staging
area (bytes fetched from the source), at a push commit (the target's
plugin checks every staged instance), or at the read-back after the
transport (the target's stored MD5) — it is sent again, up to
``MaxHttpRetries`` times per instance; only then does the job fail and roll
back. Each re-send is recorded with its reason, and the report lists them
(``CommitmentReport.resent``).

:class:`ResendLog` is the budget and the record, one per job run
(``TransferContext.resends``). :func:`resend_unverified` is the read-back
step, called once by the scheduler: it removes the bad copies this job
created, runs the transport again on just those instances, and returns the
instances re-sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

from gui.client.errors import OrthancError
from gui.engine.retry import with_retries

if TYPE_CHECKING:
    from gui.engine.events import InstanceStatus, InstanceVerdict
    from gui.engine.transport_base import TransferContext, Transport
    from gui.protocol.wire import InstanceInfo

log = logging.getLogger(__name__)


@dataclass
class ResendLog:
    retries: int
    reasons: Dict[str, List[str]] = field(default_factory=dict)

    def allow(self, instance_id: str, reason: str) -> bool:
        """Whether ``instance_id`` may be sent once more (and record why)."""
        done = self.reasons.setdefault(instance_id, [])
        if len(done) >= self.retries:
            return False
        done.append(reason)
        log.warning("re-sending instance %s (attempt %d of %d): %s", instance_id, len(done),
                    self.retries, reason)
        return True

    def allow_all(self, problems: Dict[str, str]) -> bool:
        """All or none: whether every instance of ``problems`` may be re-sent."""
        if not problems or any(len(self.reasons.get(i, [])) >= self.retries for i in problems):
            return False
        for instance_id, reason in problems.items():
            self.allow(instance_id, reason)
        return True

    def report(self) -> List[Dict[str, Any]]:
        return [{"instance": i, "attempts": len(r), "reasons": list(r)}
                for i, r in sorted(self.reasons.items()) if r]


def _quiet(ctx: "TransferContext", instances: Sequence["InstanceInfo"]) -> "TransferContext":
    """A context for re-sending ``instances`` only: same clients, options and
    rollback list; bucket numbers of its own, so neither its bucket events
    nor its journal's buckets may reach the job's (they would mark buckets
    of the main plan)."""
    paused = not ctx.running.is_set()
    def ignore(event: object) -> None:
        pass

    sub = replace(ctx, instances=list(instances), report_bucket=ignore,
                  done_buckets=set(), journal=ctx.journal.for_subrun(),
                  created_on_target=ctx.created_on_target, running=ctx.running)
    if paused:
        ctx.running.clear()   # replace() ran __post_init__, which sets it
    return sub


async def resend_unverified(ctx: "TransferContext", transport: "Transport",
                            verdicts: Sequence["InstanceVerdict"]) -> List[str]:
    """Send again the instances whose read-back failed; the IDs re-sent
    (empty: nothing could or may be re-sent, the verdicts stand).

    Only instances this job created may be re-sent: a bad copy must be
    deleted first (Orthanc keeps the stored file when the same instance
    arrives again, ``AlreadyStored``), and what was on the target before the
    job is never deleted."""
    by_id = {i.id: i for i in ctx.instances}
    problems = {v.instance_id: v.reason for v in verdicts
                if not v.verified and v.instance_id in by_id and v.instance_id in ctx.created_on_target}
    if not problems or len(problems) != sum(1 for v in verdicts if not v.verified):
        return []   # something cannot be re-sent (or nothing to do): fail as before
    if not ctx.resends.allow_all({i: f"read back from the target: {r}" for i, r in problems.items()}):
        return []
    for instance_id in problems:
        ctx.target_md5s.pop(instance_id, None)   # read back again once re-sent

        async def delete(i: str = instance_id) -> None:
            await ctx.target.delete("Instance", i)
        try:
            await with_retries(delete, ctx.options.MaxHttpRetries)
        except OrthancError as exc:
            if exc.status != 404:
                log.warning("cannot remove the bad copy of %s: %s", instance_id, exc)
                return []
    sub = _quiet(ctx, [by_id[i] for i in sorted(problems)])
    await transport.run(sub, transport.plan(sub))
    return sorted(problems)


def commit_problems(error_instances: Optional[object]) -> Dict[str, str]:
    """Instances a refused commit names as corrupted (wrong MD5 or size):
    ``{id: problem}`` from the plugin's ``Instances`` list, else empty."""
    out: Dict[str, str] = {}
    if not isinstance(error_instances, list):
        return out
    for item in error_instances:
        if isinstance(item, dict) and isinstance(item.get("ID"), str):
            problem = str(item.get("Problem", ""))
            if "MD5" in problem or "staged" in problem:
                out[item["ID"]] = problem
    return out


async def verify_with_resends(ctx: Optional["TransferContext"], transport: Optional["Transport"],
                              planned: Sequence["InstanceInfo"], statuses: Mapping[str, "InstanceStatus"], *,
                              concurrency: int,
                              bulk: bool) -> List["InstanceVerdict"]:
    """The storage commitment's read-back, re-sending what fails while the
    budget allows (the scheduler's one call into this module)."""
    from gui.engine import verification
    from gui.engine.transport_base import TransferFailed
    assert ctx is not None
    retries = ctx.options.MaxHttpRetries
    while True:
        # MD5s the transport already read back after each upload are not asked again.
        known = dict(ctx.target_md5s)
        found = await verification.target_md5s(ctx.target, [i.id for i in planned if i.id not in known],
                                               concurrency, retries, bulk=bulk)
        found.update(known)
        verdicts = verification.verdicts(planned, found, statuses)
        if all(v.verified for v in verdicts) or transport is None:
            return verdicts
        try:
            resent = await resend_unverified(ctx, transport, verdicts)
        except (TransferFailed, OrthancError) as exc:
            log.warning("re-sending unverified instances failed: %s", exc)
            return verdicts
        if not resent:
            return verdicts
