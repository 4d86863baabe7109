"""The transfers side of the main window: starting jobs, the Transfers dock,
live bucket progress, storage commitment, notifications and closing.

``install_transfers_ui(main_window)`` is called once at the end of
``MainWindow.__init__``; it needs from the window only ``panes``, ``engine``,
``config``, ``add_dock(widget, title)`` and ``before_close()``.
"""

from __future__ import annotations

from typing import Any, List, Optional

from PySide6.QtGui import QAction
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMenu, QToolButton

from gui.engine.events import BucketProgress
from gui.ui.transfers.event_bridge import EngineEventBridge
from gui.ui.transfers.jobs_panel import JobsPanel
from gui.ui.transfers.notifications import Notifier
from gui.ui.transfers.transfers_controller import TransfersController

__all__ = ["TransfersUi", "install_transfers_ui"]


class TransfersUi:
    """Everything ``install_transfers_ui`` built, reachable as ``main_window.transfers``."""

    def __init__(self, window: Any) -> None:
        self.window = window
        self.bridge = EngineEventBridge(parent=window)
        self.notifier = Notifier(window)
        self.panel = JobsPanel(actions=None, buckets_of=self._buckets_of)  # type: ignore[arg-type]
        self.controller = TransfersController(window, self.panel, self.notifier)
        self.panel.actions = self.controller
        self.dock = window.add_dock(self.panel, "Transfers")
        self._size_dock()
        self.bridge.jobsProgressed.connect(self.controller.on_jobs_progressed)
        self.bridge.bucketsProgressed.connect(self.panel.apply_buckets)
        self.bridge.jobFinished.connect(self.controller.on_job_finished)
        self._engine: Any = None
        self._add_controls()
        for pane in getattr(window, "panes", []):
            self._hook_pane(pane)
        self._wrap_before_close()
        self.attach_engine(getattr(window, "engine", None))

    def _size_dock(self) -> None:
        """Give the dock about half the window, so the buckets and the commitment have room."""
        resize = getattr(self.window, "resizeDocks", None)
        if callable(resize) and hasattr(self.dock, "widget"):
            height = max(320, int(self.window.height() * 0.52))
            resize([self.dock], [height], Qt.Orientation.Vertical)

    # --- engine ------------------------------------------------------------------

    def attach_engine(self, engine: Any) -> None:
        """Follow ``engine`` (call again if the window starts its engine later)."""
        if engine is None or engine is self._engine:
            return
        self._engine = engine
        self.bridge.attach(engine)
        self.controller.load_existing_jobs()

    def _buckets_of(self, job_id: str) -> List[BucketProgress]:
        engine = getattr(self.window, "engine", None)
        if engine is None:
            return []
        if engine is not self._engine:
            self.attach_engine(engine)
        try:
            return list(engine.job(job_id).buckets)
        except Exception:  # noqa: BLE001 - an unknown job has no buckets to show
            return []

    # --- window wiring -------------------------------------------------------------

    def _add_controls(self) -> None:
        """"Send →" on the left pane, "← Retrieve" on the right, and a Transfers menu."""
        panes = list(getattr(self.window, "panes", []))
        self.send_action = QAction("Send →", self.window)
        self.send_action.setToolTip("Send the selection of the left pane to the right pane")
        self.retrieve_action = QAction("← Retrieve", self.window)
        self.retrieve_action.setToolTip("Retrieve the selection of the right pane into the left pane")
        self.send_button: Optional[QToolButton] = None
        self.retrieve_button: Optional[QToolButton] = None
        if len(panes) >= 2:
            left, right = panes[0], panes[1]
            self.send_action.triggered.connect(lambda: self.controller.send_from(left, right))
            self.retrieve_action.triggered.connect(lambda: self.controller.send_from(right, left))
            self.send_button = self._pane_button(left, self.send_action, "sendButton")
            self.retrieve_button = self._pane_button(right, self.retrieve_action, "retrieveButton")
            for pane in (left, right):
                for signal in ("selectionChanged", "peerChanged"):
                    if hasattr(pane, signal):
                        getattr(pane, signal).connect(lambda *_: self._update_controls())
        self._update_controls()
        add_menu = getattr(self.window, "add_menu", None)
        if callable(add_menu):
            menu = add_menu("&Transfers")   # placed before Help by the window
            menu.addAction(self.send_action)
            menu.addAction(self.retrieve_action)
            if hasattr(self.dock, "toggleViewAction"):
                menu.addSeparator()
                menu.addAction(self.dock.toggleViewAction())
            self.menu = menu

    @staticmethod
    def _pane_button(pane: Any, action: QAction, name: str) -> Optional[QToolButton]:
        add = getattr(pane, "add_header_widget", None)
        if not callable(add):
            return None
        button = QToolButton(pane)
        button.setObjectName(name)
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setStyleSheet("QToolButton { font-weight: bold; padding: 3px 10px; }")
        add(button)
        return button

    def _update_controls(self) -> None:
        panes = list(getattr(self.window, "panes", []))
        if len(panes) < 2:
            return
        left, right = panes[0], panes[1]

        def possible(source: Any, target: Any) -> bool:
            return (source.peer is not None and target.peer is not None
                    and source.peer.name != target.peer.name and bool(source.selected_resources()))
        self.send_action.setEnabled(possible(left, right))
        self.retrieve_action.setEnabled(possible(right, left))

    def _hook_pane(self, pane: Any) -> None:
        pane.set_drop_handler(self.controller.handle_drop)
        pane.set_drag_enter_handler(self.controller.accepts_drag)
        hook = getattr(pane, "add_context_menu_provider", None)
        if callable(hook):
            hook(self.extend_context_menu)

    def extend_context_menu(self, pane: Any, menu: QMenu) -> Optional[QMenu]:
        """Add "Send to ▸ <peer>" to a pane's context menu."""
        if pane.peer is None:
            return None
        sub = menu.addMenu("Send to")
        sub.setObjectName("sendToMenu")
        targets = self.controller.send_menu_targets(pane)
        has_selection = bool(pane.selected_resources())
        for peer in targets:
            action = sub.addAction(peer.name)
            action.setEnabled(has_selection)
            action.triggered.connect(lambda _=False, target=peer: self.controller.send_to_peer(pane, target))
        sub.setEnabled(bool(targets) and has_selection)
        return sub

    def _wrap_before_close(self) -> None:
        original = getattr(self.window, "before_close", None)

        def before_close() -> bool:
            running = self.controller.running_jobs()
            if running and not self.controller.ask_pause_on_close(len(running)):
                return False
            # The window closes the engine next, which pauses and persists running jobs.
            return original() if callable(original) else True
        self.window.before_close = before_close

    def show(self) -> None:
        if hasattr(self.dock, "show"):
            self.dock.show()
            self.dock.raise_()


def install_transfers_ui(main_window: Any) -> TransfersUi:
    ui = TransfersUi(main_window)
    main_window.transfers = ui
    if not hasattr(main_window, "show_transfers"):
        main_window.show_transfers = ui.show
    return ui
