"""The transfers side of the main window: starting jobs, the Transfers dock,
live bucket progress, storage commitment, notifications and closing.

``MainWindow`` builds one ``TransfersUi(window)`` at the end of its
``__init__`` (``window.transfers``). It uses the window's ``panes``,
``engine`` (a ``TransferEngine`` or None), ``config``, ``demo``,
``add_dock``, ``add_menu`` and registers a close veto with ``add_close_veto``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QToolButton

from gui.config import AppConfig
from gui.engine.events import BucketProgress
from gui.ui.peer_pane import PeerPane
from gui.ui.transfers.event_bridge import EngineEventBridge
from gui.ui.transfers.jobs_panel import JobsPanel
from gui.ui.transfers.notifications import Notifier
from gui.ui.transfers.transfers_controller import TransfersController

if TYPE_CHECKING:
    from gui.ui.main_window import MainWindow

__all__ = ["TransfersUi"]


class TransfersUi:
    """Everything the transfers side of the window is made of (``main_window.transfers``)."""

    def __init__(self, window: "MainWindow") -> None:
        self.window = window
        self.bridge = EngineEventBridge(parent=window)
        self.notifier = Notifier(window)
        self.panel = JobsPanel(buckets_of=self._buckets_of)
        self.controller = TransfersController(window, self.panel, self.notifier, show_panel=self.show)
        self.panel.actions = self.controller
        self.panel.set_global_limit(int(window.config.transfers.MaxTotalRate or 0))
        self.dock = window.add_dock(self.panel, "Transfers")
        self._size_dock()
        self.bridge.jobsProgressed.connect(self.controller.on_jobs_progressed)
        self.bridge.bucketsProgressed.connect(self.panel.apply_buckets)
        self.bridge.jobFinished.connect(self.controller.on_job_finished)
        self._had_jobs = False
        self.panel.model.rowsInserted.connect(lambda *_: self._jobs_count_changed())
        self.panel.model.rowsRemoved.connect(lambda *_: self._jobs_count_changed())
        self._add_controls()
        for pane in window.panes:
            self._hook_pane(pane)
        window.add_close_veto(self.controller.may_close)
        window.configChanged.connect(self._config_changed)
        if window.engine is not None:
            self.bridge.attach(window.engine)
            self.controller.load_existing_jobs()

    #: The dock's height without jobs: the buttons and a few empty rows.
    EMPTY_DOCK_HEIGHT = 170

    def _size_dock(self) -> None:
        """With jobs, about half the window, so the buckets and the commitment have room;
        without, only what the empty table needs (the panes get the rest)."""
        if self.panel.model.rowCount() == 0:
            height = self.EMPTY_DOCK_HEIGHT
        else:
            height = max(320, int(self.window.height() * 0.56))
        self.window.resizeDocks([self.dock], [height], Qt.Orientation.Vertical)

    def _jobs_count_changed(self) -> None:
        count = self.panel.model.rowCount()
        if (count > 0) != self._had_jobs:
            self._had_jobs = count > 0
            self._size_dock()

    # --- engine ------------------------------------------------------------------

    def _buckets_of(self, job_id: str) -> List[BucketProgress]:
        engine = self.window.engine
        if engine is None:
            return []
        try:
            return list(engine.job(job_id).buckets)
        except Exception:  # noqa: BLE001 - an unknown job has no buckets to show
            return []

    def _config_changed(self, config: AppConfig) -> None:
        """Saved settings apply to the next job at once (running jobs keep theirs)."""
        if self.window.engine is not None:
            self.window.engine.set_options(config.transfers)
        self.panel.set_global_limit(int(config.transfers.MaxTotalRate or 0))

    # --- window wiring -------------------------------------------------------------

    def _add_controls(self) -> None:
        """"Send →" on the left pane, "← Retrieve" on the right, and a Transfers menu."""
        left, right = self.window.panes[0], self.window.panes[1]
        self.send_action = QAction("Send →", self.window)
        self.send_action.setToolTip("Send the selection of the left pane to the right pane (Ctrl+Enter)")
        self.send_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.retrieve_action = QAction("← Retrieve", self.window)
        self.retrieve_action.setToolTip("Retrieve the selection of the right pane into the left pane "
                                        "(Ctrl+Shift+Enter)")
        self.retrieve_action.setShortcuts([QKeySequence("Ctrl+Shift+Return"),
                                           QKeySequence("Ctrl+Shift+Enter")])
        self.send_action.triggered.connect(lambda: self.controller.send_from(left, right))
        self.retrieve_action.triggered.connect(lambda: self.controller.send_from(right, left))
        self.send_button = self._pane_button(left, self.send_action, "sendButton")
        self.retrieve_button = self._pane_button(right, self.retrieve_action, "retrieveButton")
        for pane in (left, right):
            pane.selectionChanged.connect(self._update_controls)
            pane.peerChanged.connect(lambda _peer: self._update_controls())
        self._update_controls()
        self.menu = self.window.add_menu("&Transfers")   # placed before Help by the window
        self.menu.addAction(self.send_action)
        self.menu.addAction(self.retrieve_action)
        self.menu.addSeparator()
        self.menu.addAction(self.dock.toggleViewAction())

    @staticmethod
    def _pane_button(pane: PeerPane, action: QAction, name: str) -> QToolButton:
        button = QToolButton(pane)
        button.setObjectName(name)
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setStyleSheet("QToolButton { font-weight: bold; padding: 3px 10px; }")
        pane.add_header_widget(button)
        return button

    def _update_controls(self) -> None:
        left, right = self.window.panes[0], self.window.panes[1]

        def possible(source: PeerPane, target: PeerPane) -> bool:
            return (source.peer is not None and target.peer is not None
                    and source.peer.name != target.peer.name and bool(source.selected_resources()))
        self.send_action.setEnabled(possible(left, right))
        self.retrieve_action.setEnabled(possible(right, left))

    def _hook_pane(self, pane: PeerPane) -> None:
        pane.set_drop_handler(self.controller.handle_drop)
        pane.set_drag_enter_handler(self.controller.accepts_drag)
        pane.add_context_menu_provider(self.extend_context_menu)

    def extend_context_menu(self, pane: PeerPane, menu: QMenu) -> Optional[QMenu]:
        """Add "Send to ▸ <peer>" to a pane's context menu."""
        if pane.peer is None:
            return None
        sub = menu.addMenu("Send to")
        sub.setObjectName("sendToMenu")
        targets = self.controller.send_menu_targets(pane)
        has_selection = bool(pane.selected_resources())
        dead = {p.peer.name for p in self.window.panes if p.peer is not None and p.unreachable}
        for peer in targets:
            action = sub.addAction(f"{peer.name} — unreachable" if peer.name in dead else peer.name)
            if peer.name in dead:
                action.setToolTip("The pane showing this server could not reach it")
            action.setEnabled(has_selection)
            action.triggered.connect(lambda _=False, target=peer: self.controller.send_to_peer(pane, target))
        sub.setEnabled(bool(targets) and has_selection)
        return sub

    def show(self) -> None:
        self.dock.show()
        self.dock.raise_()
