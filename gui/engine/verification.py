"""Storage commitment: after the transport, check every instance on the target.

The target's stored MD5 (``/instances/{id}/attachments/dicom/md5``) must equal
the source's MD5 for every planned instance; only then is a job a success.
"""

from __future__ import annotations

from typing import Dict, Mapping, List, Optional, Sequence

from gui.client.errors import OrthancError
from gui.client.orthanc_client import OrthancClient
from gui.engine.events import CommitmentReport, InstanceStatus, InstanceVerdict, JobState, TransferMode
from gui.engine.target_md5 import md5s_on
from gui.protocol.wire import InstanceInfo


async def target_md5s(target: OrthancClient, ids: Sequence[str], concurrency: int,
                      retries: int = 0, *, bulk: bool = False) -> Dict[str, object]:
    """MD5 per instance: a string, None when absent, or the OrthancError met
    (after ``retries`` retries of retryable errors). ``bulk``: the target
    speaks the protocol, one lookup may answer for all (``target_md5``)."""
    return await md5s_on(target, ids, bulk=bulk, concurrency=concurrency, retries=retries)


def verdicts(instances: Sequence[InstanceInfo], found: Dict[str, object],
             statuses: Mapping[str, InstanceStatus]) -> List[InstanceVerdict]:
    """One verdict per planned instance.

    ``statuses`` says what the job did with each instance (TRANSFERRED,
    SKIPPED_PRESENT, NOT_SENT); it becomes FAILED when the check fails.
    """
    out = []
    for info in instances:
        status = statuses.get(info.id, InstanceStatus.TRANSFERRED)
        value = found.get(info.id)
        if isinstance(value, OrthancError):
            out.append(InstanceVerdict(info.id, info.size, info.md5, None, False, InstanceStatus.FAILED,
                                       f"cannot read the MD5 on the target: {value}"))
        elif value is None:
            reason = "not on the target" + (" (never sent)" if status == InstanceStatus.NOT_SENT else "")
            never_sent = status == InstanceStatus.NOT_SENT
            out.append(InstanceVerdict(info.id, info.size, info.md5, None, False,
                                       InstanceStatus.NOT_SENT if never_sent else InstanceStatus.FAILED, reason))
        elif value != info.md5:
            out.append(InstanceVerdict(info.id, info.size, info.md5, str(value), False, InstanceStatus.FAILED,
                                       f"MD5 mismatch: source {info.md5}, target {value}"))
        else:
            out.append(InstanceVerdict(info.id, info.size, info.md5, str(value), True,
                                       InstanceStatus.SKIPPED_PRESENT if status == InstanceStatus.SKIPPED_PRESENT
                                       else InstanceStatus.TRANSFERRED))
    return out


def unverified(instances: Sequence[InstanceInfo], statuses: Mapping[str, InstanceStatus],
               reason: str) -> List[InstanceVerdict]:
    """Verdicts when the target could not be checked at all (e.g. unreachable)."""
    return [InstanceVerdict(i.id, i.size, i.md5, None, False,
                            InstanceStatus.FAILED if statuses.get(i.id) == InstanceStatus.TRANSFERRED
                            else InstanceStatus.NOT_SENT, reason)
            for i in instances]


def build_report(job_id: str, *, state: JobState, mode: Optional[TransferMode], source: str,
                 target: str, verdicts_: List[InstanceVerdict], bytes_: int, wire_bytes: int,
                 seconds: float, error: Optional[str], compression: Optional[str],
                 notes: Optional[List[str]] = None) -> CommitmentReport:
    """The final report; ``state`` is downgraded to Failure if anything is unverified."""
    if state is JobState.SUCCESS and any(not v.verified for v in verdicts_):
        state = JobState.FAILURE
        bad = [v for v in verdicts_ if not v.verified]
        error = error or f"{len(bad)} of {len(verdicts_)} instances not verified on the target: {bad[0].reason}"
    return CommitmentReport(job_id=job_id, state=state, mode=mode, source=source, target=target,
                            instances=list(verdicts_), bytes=bytes_, wire_bytes=wire_bytes,
                            seconds=seconds, error=error, compression=compression,
                            notes=list(notes or []))
