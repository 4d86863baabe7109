"""Run one engine transfer inside this process with the stall probe on its loop.

This is what the GUI does: the engine shares the event loop with the UI,
so any blocking step of the engine (compression, hashing, file I/O done on
the loop) would freeze the window. The probe measures exactly that.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from tests.devtools.bench.stall_probe import StallProbe


async def _transfer(source_url: str, target_url: str, resource: Dict[str, str], mode: str,
                    data_dir: Path) -> Dict[str, Any]:
    from gui.client.peer import Peer
    from gui.engine import TransferEngine

    engine = TransferEngine(data_dir=data_dir)
    await engine.start()
    try:
        probe = StallProbe(capture_stacks=True, stack_threshold=0.050).start()
        t0 = time.monotonic()
        job = await engine.submit(Peer(name="bench source", url=source_url),
                                  Peer(name="bench target", url=target_url),
                                  [dict(resource)], mode=mode)
        report = await job.wait()
        seconds = time.monotonic() - t0
        stall = probe.stop()
    finally:
        await engine.close()
    return {**stall.to_json(), "seconds": round(seconds, 3), "state": report.state.value,
            "verified": report.verified, "instances": report.planned}


def measure(source_url: str, target_url: str, resource: Dict[str, str], mode: str, where: str) -> Dict[str, Any]:
    """The probe's figures during one transfer, or ``{"note": why not}``."""
    with tempfile.TemporaryDirectory(prefix="bench-stall-") as data_dir:
        try:
            result = asyncio.run(_transfer(source_url, target_url, resource, mode, Path(data_dir)))
        except Exception as exc:  # any engine failure is reported, the benchmark goes on
            return {"note": f"in-process transfer failed: {type(exc).__name__}: {exc}"[:300]}
    result["where"] = where
    return result
