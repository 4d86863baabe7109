"""Drive a transport without the scheduler: a TransferContext built by hand
around real OrthancClients, and a recorder of bucket events."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from gui.client.orthanc_client import OrthancClient
from gui.client.peer import Peer
from gui.config.settings import TransferOptions
from gui.engine.events import BucketProgress, BucketState
from gui.engine.journal import Journal
from gui.engine.transport_base import TransferContext
from gui.protocol.wire import InstanceInfo
from gui.sandbox.orthanc_process import OrthancProcess


def client_for(server: OrthancProcess, **kwargs) -> OrthancClient:
    peer = Peer(name=server.name, url=server.url, username=server.username, password=server.password)
    return OrthancClient(peer, **kwargs)


def infos_of(files: Sequence[bytes], server: OrthancProcess) -> List[InstanceInfo]:
    """Instance infos computed here (MD5 of the bytes), IDs given by the server at upload."""
    out = []
    for data in files:
        answer = server.upload(data)
        out.append(InstanceInfo(answer["ID"], len(data), hashlib.md5(data).hexdigest()))
    return sorted({i.id: i for i in out}.values(), key=lambda i: i.id)


class Recorder:
    """Keeps every bucket event, and the journal a runner would persist."""

    def __init__(self) -> None:
        self.events: List[BucketProgress] = []
        self.journal = Journal()
        self.hooks: List = []

    def __call__(self, event: BucketProgress) -> None:
        self.events.append(event)
        for hook in list(self.hooks):
            hook(event)

    def states(self, index: int) -> List[BucketState]:
        return [e.state for e in self.events if e.index == index]

    def final_states(self) -> Dict[int, BucketState]:
        out: Dict[int, BucketState] = {}
        for event in self.events:
            out[event.index] = event.state
        return out


def make_ctx(source: OrthancClient, target: OrthancClient, instances: Sequence[InstanceInfo],
             staging: Path, recorder: Recorder, *, compression: str = "none",
             options: Optional[TransferOptions] = None, source_accelerated: bool = True,
             target_accelerated: bool = True) -> TransferContext:
    ctx = TransferContext(job_id="job-" + uuid.uuid4().hex[:8], transfer_id=str(uuid.uuid4()),
                          source=source, target=target, instances=list(instances),
                          options=options or TransferOptions(), compression=compression,
                          staging_dir=staging, report_bucket=recorder,
                          journal=recorder.journal)
    ctx.source_accelerated = source_accelerated
    ctx.target_accelerated = target_accelerated
    return ctx


def run(coro, timeout: float = 120.0):
    """Run one coroutine on a fresh loop, with an upper bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def transaction_exists(server: OrthancProcess, transaction_id: str) -> bool:
    """Whether the target's plugin still knows a push transaction (its commit
    status route answers 404 for an unknown one)."""
    import urllib.error
    try:
        server.request("GET", f"/transfers/push/{transaction_id}/commit")
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
