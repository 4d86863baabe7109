"""A main window wired to a real engine and two real Orthanc servers, for the transfers UI tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Set

import pytest
from PySide6.QtCore import QModelIndex

from gui.client.peer import Peer
from gui.config.settings import AppConfig, TransferOptions
from gui.engine import TransferEngine
from gui.engine.events import CommitmentReport
from tests.devtools.netem.wan_proxy import ThreadedWanProxy
from gui.sandbox.orthanc_process import OrthancProcess
from gui.ui.main_window import MainWindow

LOCAL, REMOTE = "Local demo", "Remote demo"


async def until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Wait on the loop (Qt keeps running) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


class TransfersBed:
    def __init__(self, qtbot: Any, qloop: Any, source: OrthancProcess, target: OrthancProcess,
                 data_dir: Path, config_path: Path, throttle_mbit: Optional[float] = None,
                 bucket_kb: int = 64) -> None:
        self.qtbot = qtbot
        self.qloop = qloop
        self.source = source
        self.target = target
        self.data_dir = data_dir
        self.proxy: Optional[ThreadedWanProxy] = None
        target_url = target.url
        if throttle_mbit:
            # A slow link to the target keeps a job running long enough to pause it.
            self.proxy = ThreadedWanProxy("127.0.0.1", target.http_port, bandwidth_mbit=throttle_mbit).start()
            target_url = self.proxy.url
        self.config = AppConfig(path=config_path)
        self.config.peers = [Peer(LOCAL, source.url, local=True), Peer(REMOTE, target_url)]
        self.config.transfers = TransferOptions(BucketSize=bucket_kb, Threads=2)
        self.config.ui["ConfirmTransfers"] = False
        self.engine: Optional[TransferEngine] = None
        self.windows: List[MainWindow] = []
        self.refreshes: dict = {}
        self.open_window()

    # --- lifecycle ------------------------------------------------------------

    def open_window(self) -> MainWindow:
        self.engine = TransferEngine(self.config.transfers, data_dir=self.data_dir)
        self.qloop.run_coro(self.engine.start())
        window = MainWindow(self.config, self.engine)
        window.resize(1400, 850)
        self.qtbot.addWidget(window)
        window.show()
        for pane in window.panes:
            self._count_refreshes(pane)
        self.windows.append(window)
        return window

    async def reopen(self) -> Any:
        """A new session on the same data: new engine, new window."""
        old = self.window
        old.force_close()
        await old.shutdown()
        self.engine = TransferEngine(self.config.transfers, data_dir=self.data_dir)
        await self.engine.start()
        window = MainWindow(self.config, self.engine)
        self.qtbot.addWidget(window)
        window.show()
        self.windows.append(window)
        return window.transfers

    def close(self) -> None:
        for window in self.windows:
            window.force_close()
            self.qloop.run_coro(window.shutdown())
        if self.engine is not None:
            self.qloop.run_coro(self.engine.close())
        if self.proxy is not None:
            self.proxy.stop()

    def run(self, coro: Any, timeout: float = 180.0) -> Any:
        return self.qloop.run_coro(coro, timeout)

    # --- shortcuts ----------------------------------------------------------------

    @property
    def window(self) -> MainWindow:
        return self.windows[-1]

    @property
    def ui(self) -> Any:
        return self.window.transfers

    @property
    def left(self) -> Any:
        return self.window.panes[0]

    @property
    def right(self) -> Any:
        return self.window.panes[1]

    def _count_refreshes(self, pane: Any) -> None:
        original = pane.refresh
        self.refreshes[id(pane)] = 0

        def counting() -> None:
            self.refreshes[id(pane)] += 1
            original()
        pane.refresh = counting

    def refresh_count(self, pane: Any) -> int:
        return self.refreshes.get(id(pane), 0)

    def load_source(self, files: Iterable[bytes]) -> str:
        """Upload a study to the source server; its Orthanc study ID."""
        study = ""
        for data in files:
            study = self.source.upload(data)["ParentStudy"]
        return study

    async def study_index(self, pane: Any, study_id: str) -> QModelIndex:
        """The study's row in a pane, loading the list and the patient's children as needed."""
        model = pane.model
        pane.refresh()
        patient = self.source.request("GET", f"/studies/{study_id}")["ParentPatient"]
        await until(lambda: model.index_of("Patient", patient).isValid(), what="the patient row")
        pane.tree.expand(model.index_of("Patient", patient))
        await until(lambda: model.index_of("Study", study_id).isValid(), what="the study row")
        return model.index_of("Study", study_id)

    async def wait_for_job(self, exclude: Set[str] = frozenset()) -> Any:  # type: ignore[assignment]
        """The job just started from the UI (it shows in the panel)."""
        def new_jobs() -> List[Any]:
            return [j for j in self.engine.jobs() if j.id not in exclude
                    and self.ui.panel.model.row_of(j.id) >= 0]
        await until(lambda: bool(new_jobs()), what="a job in the Transfers panel")
        return new_jobs()[-1]

    async def wait_for_report(self, job_id: str, fresh: bool = False) -> CommitmentReport:
        """The job's commitment, once the panel shows it."""
        panel = self.ui.panel
        if fresh:
            await until(lambda: panel.model.job_row(job_id).report is None, what="the job to restart")
        await until(lambda: (panel.model.job_row(job_id) is not None
                             and panel.model.job_row(job_id).report is not None), timeout=120,
                    what="the job's storage commitment in the panel")
        return panel.model.job_row(job_id).report


@pytest.fixture
def make_bed(qtbot, qloop, orthanc_factory, tmp_path) -> Iterator[Callable[..., TransfersBed]]:
    beds: List[TransfersBed] = []

    def make(**kwargs: Any) -> TransfersBed:
        bed = TransfersBed(qtbot, qloop, orthanc_factory("source"), orthanc_factory("target"),
                           tmp_path / "engine-data", tmp_path / "config.json", **kwargs)
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()
