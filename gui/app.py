"""``orthanc-transfers-gui``: the desktop app.

Options:
  --demo         start two local demo Orthanc servers with sample studies and use them
                 (stopped again on quit, Ctrl+C, SIGTERM or an error)
  --config FILE  use this configuration file instead of the user's one
  --self-test    open the window offscreen-friendly, print "self-test ok", exit 0
  --version      print the version (needs no display)

Qt and asyncio share one thread through qasync: network work runs as
asyncio tasks on the Qt event loop, so the window never waits on a peer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from gui import __version__

log = logging.getLogger("gui.app")

PROGRAM = "orthanc-transfers-gui"
ENGINE_CLOSE_TIMEOUT = 30.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Move DICOM studies between Orthanc servers.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--demo", action="store_true",
                        help="start two local demo Orthanc servers with sample studies and use them")
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="configuration file (default: the one in your user config directory)")
    parser.add_argument("--self-test", action="store_true",
                        help="open the window, check it shows, print 'self-test ok' and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    # Smaller demo data sets (tests of the demo's life cycle).
    parser.add_argument("--demo-studies", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--demo-slices", type=int, default=24, help=argparse.SUPPRESS)
    args, qt_args = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    args.qt_args = qt_args  # left for Qt (e.g. -platform offscreen, -style fusion)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.version:
        # Before any Qt import: this must work on a machine without a display.
        print(f"{PROGRAM} {__version__}")
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise

    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([PROGRAM, *args.qt_args])
    app.setApplicationName("Orthanc Transfers")
    app.setOrganizationName("orthanc-transfers")   # where QSettings keeps column widths
    app.setApplicationVersion(__version__)
    app.setDesktopFileName(PROGRAM)
    # The window's closed signal ends the app, after the async clean-up.
    app.setQuitOnLastWindowClosed(False)
    _apply_look(app)

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    session = AppSession(app, args)
    try:
        return loop.run_until_complete(session.run())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user; details in the log
        log.debug("unexpected failure", exc_info=exc)
        print(f"{PROGRAM}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        session.stop_demo()  # whatever happened, no demo server outlives the app
        if not loop.is_closed():
            loop.close()


def settle_heap() -> None:
    """Move everything alive after start-up (Qt bindings, the HTTP stack, the window) out of
    the cyclic collector's reach: a full collection over it stalled the loop for 50-100 ms
    while a large server's list was loading."""
    import gc
    gc.collect()
    gc.freeze()


def _apply_look(app: Any) -> None:
    from gui.resource_paths import resource_path
    from gui.ui.main_window import app_icon
    app.setWindowIcon(app_icon())
    # A missing stylesheet stops the app with its name (MissingResourceError).
    app.setStyleSheet(resource_path("style.qss").read_text(encoding="utf-8"))


class AppSession:
    """One run of the app: config (or demo servers), engine, window, clean-up."""

    def __init__(self, app: Any, args: argparse.Namespace) -> None:
        self.app = app
        self.args = args
        self.demo: Any = None
        self.engine: Any = None
        self.window: Any = None
        self._quit = asyncio.Event()
        self._splash: Any = None
        self._self_test_passed = False

    async def run(self) -> int:
        self._install_signal_handlers()
        try:
            try:
                config = await self._config()
            except Exception as exc:  # noqa: BLE001 - told to the user, not a traceback
                self._fatal(f"Cannot start: {exc}")
                return 1
            if self._quit.is_set():
                return 0
            self.engine, engine_error = await self._start_engine(config)
            from gui.ui.main_window import MainWindow
            self.window = MainWindow(config, self.engine, demo=self.demo is not None)
            if engine_error:
                self.window.show_notice(engine_error)
            self.window.closed.connect(self._quit.set)
            self.window.show()
            settle_heap()
            if self.args.self_test:
                await self._self_test()
                self._self_test_passed = True
            else:
                await self._quit.wait()
            return 0
        finally:
            await self._shutdown()
            if self._self_test_passed:
                print("self-test ok", flush=True)

    def request_quit(self) -> None:
        """Ctrl+C / SIGTERM: close without questions (the engine pauses jobs)."""
        log.warning("quitting on a signal")
        if self.window is not None:
            self.window.force_close()
        self._quit.set()

    def stop_demo(self) -> None:
        if self.demo is not None:
            demo, self.demo = self.demo, None
            demo.stop()

    # --- steps -------------------------------------------------------------------

    async def _config(self) -> Any:
        from gui.config import load_config
        if self.args.demo:
            from gui.sandbox.demo import DemoServers
            self._show_splash("Starting the demo Orthanc servers and generating sample studies…")
            self.demo = DemoServers(studies=self.args.demo_studies, ct_slices=self.args.demo_slices)
            try:
                # Blocking work (processes, uploads) off the GUI thread.
                config = await asyncio.get_running_loop().run_in_executor(None, self.demo.start)
            finally:
                self._hide_splash()
            urls = ", ".join(f"{peer.name} at {peer.url}" for peer in config.peers)
            print(f"Demo servers running: {urls}, {self.demo.accelerator_summary()}"
                  " (stopped when the app quits)", flush=True)
            return config
        return load_config(self.args.config)

    async def _start_engine(self, config: Any) -> "tuple[Any, Optional[str]]":
        try:
            from gui.engine import TransferEngine
        except ImportError as exc:
            log.warning("the transfer engine is not available: %s", exc)
            return None, None
        data_dir = self.demo.workdir / "data" if self.demo is not None and self.demo.workdir else None

        try:
            engine = TransferEngine(config.transfers, data_dir=data_dir, peer_resolver=config.peer_for)
            await engine.start()
        except Exception as exc:  # noqa: BLE001 - browsing still works without it
            log.warning("the transfer engine failed to start", exc_info=exc)
            return None, f"The transfer engine failed to start ({exc}); browsing still works."
        return engine, None

    async def _self_test(self) -> None:
        window = self.window
        for _ in range(500):  # at most ~5 s
            if window.isVisible() and window.windowHandle() is not None \
                    and window.windowHandle().isExposed():
                break
            await asyncio.sleep(0.01)
        if not window.isVisible():
            raise RuntimeError("the main window did not show")
        window.force_close()

    async def _shutdown(self) -> None:
        if self.window is not None:
            try:
                await self.window.shutdown()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the panes failed: %s", exc)
        if self.engine is not None:
            engine, self.engine = self.engine, None
            try:
                await asyncio.wait_for(engine.close(), ENGINE_CLOSE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - quitting must not fail
                log.warning("closing the transfer engine failed: %s", exc)
        if self.demo is not None:
            demo, self.demo = self.demo, None
            await asyncio.get_running_loop().run_in_executor(None, demo.stop)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self.request_quit)
            except (NotImplementedError, RuntimeError, ValueError):
                # No asyncio signal support (Windows): the Python handler runs
                # when a Qt timer gives the interpreter control.
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(self.request_quit))
                self._keep_python_awake()

    def _keep_python_awake(self) -> None:
        from PySide6.QtCore import QTimer
        if getattr(self, "_wake_timer", None) is None:
            self._wake_timer = QTimer()
            self._wake_timer.timeout.connect(lambda: None)
            self._wake_timer.start(250)

    def _show_splash(self, text: str) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QLabel
        label = QLabel(text)
        label.setWindowTitle("Orthanc Transfers")
        label.setWindowFlag(Qt.WindowType.SplashScreen)
        label.setMargin(24)
        label.show()
        self._splash = label

    def _hide_splash(self) -> None:
        if self._splash is not None:
            self._splash.close()
            self._splash.deleteLater()
            self._splash = None

    def _fatal(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        if self.args.self_test:
            return
        from PySide6.QtWidgets import QMessageBox
        box = QMessageBox(QMessageBox.Icon.Critical, "Orthanc Transfers", message)
        box.exec()


if __name__ == "__main__":
    sys.exit(main())
