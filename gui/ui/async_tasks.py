"""Run coroutines from Qt slots on the qasync loop.

A slot cannot await. ``TaskRunner.start`` schedules the coroutine as an
asyncio task on the loop qasync installed, keeps a reference (asyncio only
keeps weak ones, so an unreferenced task may vanish mid-flight), and turns
failures into one-line messages for the UI instead of tracebacks.
Tasks started under a ``key`` replace the previous task of that key, which
is how stale requests are cancelled (a new search, another peer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, Optional, Set

from PySide6.QtCore import QObject, Signal

from gui.client.errors import OrthancError

log = logging.getLogger(__name__)

ResultCallback = Callable[[Any], None]
ErrorCallback = Callable[[BaseException, str], None]

# Fire-and-forget tasks (closing a client) must be referenced somewhere too.
_DETACHED: Set["asyncio.Task[Any]"] = set()


def user_message(exc: BaseException, what: str = "") -> str:
    """A sentence for the user: what failed, and why, without a traceback."""
    if isinstance(exc, OrthancError):
        reason = str(exc)
    elif isinstance(exc, (OSError, ValueError)) and str(exc):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{what}: {reason}" if what else reason


def event_loop() -> asyncio.AbstractEventLoop:
    """The loop to run on: the running one, else the one qasync installed."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop_policy().get_event_loop()


def spawn_detached(coro: Awaitable[Any], what: str = "background task") -> "asyncio.Task[Any]":
    """Run a coroutine nobody waits for; failures are logged, not raised."""
    task = event_loop().create_task(coro)  # type: ignore[arg-type]
    _DETACHED.add(task)

    def done(t: "asyncio.Task[Any]") -> None:
        _DETACHED.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("%s", user_message(t.exception(), what))  # type: ignore[arg-type]
    task.add_done_callback(done)
    return task


class TaskRunner(QObject):
    """Owns the asyncio tasks started on behalf of one widget or model."""

    #: A task failed and had no ``on_error``: the message for the user.
    failed = Signal(str)
    #: True while at least one task runs (for busy indicators).
    busyChanged = Signal(bool)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._keyed: Dict[str, "asyncio.Task[Any]"] = {}
        # Plain Python state the ``destroyed`` handler can reach once the
        # C++ object is gone (a bound method of ``self`` may not run then).
        self._life = _Life(self._tasks)
        self.destroyed.connect(self._life.end)

    @property
    def _alive(self) -> bool:
        return self._life.alive

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def start(self, coro: Awaitable[Any], *, what: str = "", key: Optional[str] = None,
              on_result: Optional[ResultCallback] = None,
              on_error: Optional[ErrorCallback] = None) -> "asyncio.Task[Any]":
        """Schedule ``coro``; callbacks run on the loop (the GUI thread)."""
        if key is not None:
            self.cancel(key)
        task = event_loop().create_task(coro)  # type: ignore[arg-type]
        was_busy = self.busy
        self._tasks.add(task)
        if key is not None:
            self._keyed[key] = task
        task.add_done_callback(lambda t: self._finished(t, what, key, on_result, on_error))
        if not was_busy:
            self.busyChanged.emit(True)
        return task

    def cancel(self, key: str) -> None:
        task = self._keyed.pop(key, None)
        if task is not None and not task.done():
            task.cancel()

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._keyed.clear()

    async def wait_idle(self) -> None:
        """Wait until every task has finished (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _finished(self, task: "asyncio.Task[Any]", what: str, key: Optional[str],
                  on_result: Optional[ResultCallback], on_error: Optional[ErrorCallback]) -> None:
        self._tasks.discard(task)
        if key is not None and self._keyed.get(key) is task:
            del self._keyed[key]
        if not self._alive:
            return  # the owning widget is gone: nobody to tell
        try:
            if task.cancelled():
                return
            exc = task.exception()
            if exc is None:
                if on_result is not None:
                    on_result(task.result())
                return
            self._report(exc, what, on_error)
        except Exception as exc:  # noqa: BLE001 - a failing callback must not kill the loop
            self._report(exc, what or "updating the window", None)
        finally:
            if self._alive and not self._tasks:
                self.busyChanged.emit(False)

    def _report(self, exc: BaseException, what: str, on_error: Optional[ErrorCallback]) -> None:
        message = user_message(exc, what)
        if isinstance(exc, OrthancError):
            log.info("%s", message)
        else:
            # Unexpected: keep the traceback in the log, show one line to the user.
            log.warning("%s", message, exc_info=exc)
        if on_error is not None:
            try:
                on_error(exc, message)
                return
            except Exception as inner:  # noqa: BLE001
                message = user_message(inner, what)
                log.warning("%s", message, exc_info=inner)
        self.failed.emit(message)


class _Life:
    def __init__(self, tasks: Set["asyncio.Task[Any]"]) -> None:
        self.alive = True
        self.tasks = tasks

    def end(self, *_: object) -> None:
        self.alive = False
        for task in list(self.tasks):
            task.cancel()
