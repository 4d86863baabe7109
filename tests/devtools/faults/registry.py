"""The scenario registry: rows of the matrix and how to run one cell.

A scenario is an async function ``run(lab, transport) -> Verdict``
registered with :func:`scenario`. ``transports`` lists the matrix columns
it applies to; ``"any"`` marks checks that do not depend on a transport
(bad input answered by the client, the plugin's own defences, file
permissions). Columns a scenario cannot be tested on carry the reason in
``not_applicable``.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

from tests.devtools.faults.checker import Outcome, Verdict
from tests.devtools.faults.lab import Lab

TRANSPORTS = ("push", "pull", "plain", "delegate", "any")
GROUPS = ("faults", "bad input", "security")

Runner = Callable[[Lab, str], Awaitable[Verdict]]


@dataclass
class Scenario:
    key: str
    title: str
    group: str
    transports: Tuple[str, ...]
    run: Runner
    not_applicable: Dict[str, str] = field(default_factory=dict)


SCENARIOS: Dict[str, Scenario] = {}


def scenario(key: str, title: str, group: str, transports: Tuple[str, ...],
             not_applicable: Optional[Dict[str, str]] = None) -> Callable[[Runner], Runner]:
    assert group in GROUPS and all(t in TRANSPORTS for t in transports)

    def register(run: Runner) -> Runner:
        SCENARIOS[key] = Scenario(key, title, group, tuple(transports), run,
                                  dict(not_applicable or {}))
        return run
    return register


def load_all() -> Dict[str, Scenario]:
    """Import the scenario modules (they register themselves)."""
    from tests.devtools.faults import scenarios_input, scenarios_network, scenarios_security  # noqa: F401
    return SCENARIOS


def cells() -> List[Tuple[Scenario, str]]:
    return [(s, t) for s in load_all().values() for t in s.transports]


@dataclass
class CellResult:
    scenario: str
    transport: str
    verdict: Verdict
    seconds: float


async def run_cell_async(item: Scenario, transport: str, workdir: Path, seed: int = 0,
                         time_limit: float = 120.0) -> CellResult:
    """Run one cell on fresh servers; any crash of the scenario itself is FAILED."""
    lab = Lab(workdir, seed)
    started = time.monotonic()
    try:
        verdict = await asyncio.wait_for(item.run(lab, transport), time_limit)
    except asyncio.TimeoutError:
        verdict = Verdict(Outcome.FAILED, f"the scenario did not end within {time_limit:.0f} s")
    except Exception as exc:  # noqa: BLE001 - reported in the table, with where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        verdict = Verdict(Outcome.FAILED, f"{type(exc).__name__}: {exc} "
                          f"({Path(where.filename).name}:{where.lineno})")
    finally:
        await lab.aclose()
    verdict.faults_injected = max(verdict.faults_injected, lab.faults_injected)
    return CellResult(item.key, transport, verdict, time.monotonic() - started)


def run_cell(item: Scenario, transport: str, workdir: Path, seed: int = 0) -> CellResult:
    return asyncio.run(run_cell_async(item, transport, workdir, seed))
