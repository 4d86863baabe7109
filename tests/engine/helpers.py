"""Helpers shared by the engine tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional, TypeVar

from gui.client.peer import Peer
from gui.config.settings import TransferOptions
from gui.engine import TransferEngine
from gui.sandbox.orthanc_process import OrthancProcess

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 180.0) -> T:
    """Run a coroutine to completion on a fresh loop, with a safety timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def peer(server: OrthancProcess, name: Optional[str] = None) -> Peer:
    return Peer(name=name or server.name, url=server.url, username=server.username,
                password=server.password)


def small_options(**overrides: object) -> TransferOptions:
    """Small buckets so that ordinary CT slices are split into several pieces."""
    values = dict(Threads=3, BucketSize=64, MaxHttpRetries=1, HttpTimeout=30)
    values.update(overrides)
    return TransferOptions(**values)  # type: ignore[arg-type]


def upload_files(server: OrthancProcess, files: List[bytes]) -> Dict[str, str]:
    """Upload; return {instance id: parent study id}."""
    out = {}
    for data in files:
        answer = server.upload(data)
        out[answer["ID"]] = answer["ParentStudy"]
    return out


def study_resource(study_id: str) -> List[dict]:
    return [{"Level": "Study", "ID": study_id}]


async def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll a condition on the event loop (without blocking it) until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make_engine(data_dir: Path, options: Optional[TransferOptions] = None, **kwargs) -> TransferEngine:
    return TransferEngine(options or small_options(), data_dir=data_dir, **kwargs)
