"""Fixtures for the Qt tests: a qasync loop per test, panes waiting helpers.

``qloop``: a qasync QEventLoop installed as the running asyncio loop for the
test. Qt events (``qtbot.waitUntil``, ``qtbot.waitSignal``) drive it, so
coroutines started from slots make progress while the test waits on a
condition. Use ``qloop.run_coro(coro, timeout)`` to await something from
the test body.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Iterator, List

import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEventLoop as _QtEventLoop

from gui.sandbox import synthetic_studies as synth
from tests.ui.transfers_harness import make_bed  # noqa: F401 - the transfers tests' fixture


def _process_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        QCoreApplication.processEvents(_QtEventLoop.ProcessEventsFlag.AllEvents, 50)
    return True


class QLoop:
    """The test's qasync loop plus a way to await a coroutine from a test."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run_coro(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        task = self.loop.create_task(coro)  # type: ignore[arg-type]
        if not _process_until(task.done, timeout):
            task.cancel()
            _process_until(task.done, 5)
            raise TimeoutError(f"coroutine did not finish within {timeout} s")
        return task.result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


@pytest.fixture
def qloop(qapp) -> Iterator[QLoop]:
    """A qasync loop set as the running asyncio loop for this test."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    try:
        yield QLoop(loop)
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        _process_until(lambda: all(t.done() for t in pending), 10)
        # Undo "already running" by hand: loop.stop() would call app.exit(),
        # which makes later nested Qt event loops (waitSignal) return at once.
        try:
            qapp.aboutToQuit.disconnect(loop._after_run_forever)
        except (RuntimeError, TypeError):
            pass
        asyncio.events._set_running_loop(None)
        loop._QEventLoop__is_running = False  # type: ignore[attr-defined]
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture(scope="session")
def tiny_studies() -> Callable[[int, int], List[List[bytes]]]:
    """``tiny_studies(count, first_seed)``: studies of 2 tiny instances each,
    every one with its own patient (seed → PAT<seed>)."""
    def make(count: int, first_seed: int = 100) -> List[List[bytes]]:
        out = []
        for seed in range(first_seed, first_seed + count):
            spec = synth.make_study_spec(seed, f"TINY {seed}")
            out.append(list(synth.tiny_instances(spec, 2, size=2048, seed=seed)))
        return out
    return make


@pytest.fixture
def make_window(qtbot, qloop):
    """``make_window(config, page_size=...)``: a shown MainWindow whose
    connections are closed at the end of the test."""
    from gui.ui.main_window import MainWindow
    windows = []

    def make(config, engine=None, page_size: int = 200):
        window = MainWindow(config, engine, page_size=page_size)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        try:
            qloop.run_coro(window.shutdown(), timeout=10)
        except RuntimeError:
            pass  # the window was already deleted


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers a byte."""
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def closed_port_url():
    """A loopback URL where nothing listens (connection refused)."""
    from gui.sandbox.orthanc_process import free_port
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def html_server():
    """A plain web server (not Orthanc) answering 200 with an HTML page to everything."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _page(self) -> None:
            body = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._page()

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._page()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wait_loaded(qtbot, pane, timeout: int = 30000) -> None:
    """Wait until a pane is connected and its whole list has loaded."""
    qtbot.waitUntil(lambda: pane.state == "error" or (pane.state == "ok" and pane.model.is_complete),
                    timeout=timeout)
    assert pane.state == "ok", pane.status_text


@pytest.fixture(autouse=True)
def no_modal_question_on_close(monkeypatch):
    """Closing a window with running jobs asks a modal question; offscreen
    nobody answers it, so a test that ends (or fails) with a job running
    would hang in pytest-qt's teardown. Tests that check the question
    override this on their controller."""
    from gui.ui.transfers.transfers_controller import TransfersController
    monkeypatch.setattr(TransfersController, "ask_pause_on_close", lambda self, count: True)
