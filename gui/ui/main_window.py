"""The main window: two peer panes side by side, menus, docks.

It builds the transfers UI itself (``TransfersUi(self)``, reachable as
``window.transfers``) on a typed engine. Extension points: ``panes``,
``engine``, ``config``, ``demo``, ``add_dock``, ``add_menu``, ``view_menu``,
``show_notice``, ``add_close_veto`` (a callable that returns False to keep the
window open) and the ``configChanged`` signal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, List, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFrame, QHBoxLayout, QLabel, QMainWindow,
                               QMenu, QMessageBox, QSplitter, QToolButton, QVBoxLayout, QWidget)

import gui
from gui.config import AppConfig
from gui.resource_paths import resource_path
from gui.ui.async_tasks import TaskRunner
from gui.ui.peer_pane import PeerPane
from gui.ui.study_tree_model import DEFAULT_PAGE_SIZE

if TYPE_CHECKING:
    from gui.engine.transfer_engine import TransferEngine
    from gui.ui.settings_dialog import SettingsDialog
    from gui.ui.transfers import TransfersUi

log = logging.getLogger(__name__)

#: Asked when the user closes the window; False keeps it open.
CloseVeto = Callable[[], bool]

APP_TITLE = "Orthanc Transfers"


def app_icon() -> QIcon:
    """The window icon: the one SVG every other icon size is rendered from."""
    return QIcon(str(resource_path("icons", "orthanc-transfers.svg")))


class MainWindow(QMainWindow):
    #: The configuration was edited and saved (the AppConfig).
    configChanged = Signal(object)
    #: The window closed for good (after ``before_close`` agreed).
    closed = Signal()

    def __init__(self, config: AppConfig, engine: Optional["TransferEngine"] = None, *,
                 page_size: int = DEFAULT_PAGE_SIZE, demo: bool = False,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.config = config
        self.engine = engine
        #: Demo servers: their storage (and the jobs' data) is deleted on quit.
        self.demo = demo
        self.runner = TaskRunner(self)
        self._force_close = False
        self._notices: List[str] = []
        self._close_vetoes: List[CloseVeto] = []
        self.transfers: Optional["TransfersUi"] = None
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.resize(1200, 760)
        self.setDockNestingEnabled(True)

        timeout = float(config.transfers.HttpTimeout)
        self.panes: List[PeerPane] = [
            PeerPane(config.peers, name="leftPane", page_size=page_size, http_timeout=timeout),
            PeerPane(config.peers, name="rightPane", page_size=page_size, http_timeout=timeout),
        ]
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setObjectName("paneSplitter")
        self.splitter.setChildrenCollapsible(False)
        for pane in self.panes:
            self.splitter.addWidget(pane)

        self._notice_bar = QFrame(self)
        self._notice_bar.setObjectName("noticeBar")
        self.notice_label = QLabel(self._notice_bar)
        self.notice_label.setWordWrap(True)
        self.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        dismiss = QToolButton(self._notice_bar)
        dismiss.setText("✕")
        dismiss.setToolTip("Dismiss")
        dismiss.clicked.connect(self._notice_bar.hide)
        bar_layout = QHBoxLayout(self._notice_bar)
        bar_layout.setContentsMargins(8, 4, 4, 4)
        bar_layout.addWidget(self.notice_label, 1)
        bar_layout.addWidget(dismiss)
        self._notice_bar.hide()

        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._notice_bar)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        self._build_menus()
        self.runner.failed.connect(lambda message: self.statusBar().showMessage(message, 15000))
        self.statusBar().showMessage("Ready" if engine is not None
                                     else "Browsing only: the transfer engine is not available")

        if config.recovered_from is not None:
            self.show_notice(
                f"The configuration file {config.path} could not be read and was kept aside as "
                f"{config.recovered_from}. The app started with an empty configuration; "
                f"nothing was overwritten.")
        self._choose_initial_peers()
        self._install_transfers_ui()

    # --- public API -----------------------------------------------------------

    def add_dock(self, widget: QWidget, title: str,
                 area: Qt.DockWidgetArea = Qt.DockWidgetArea.BottomDockWidgetArea) -> QDockWidget:
        """Add a dock; its show/hide toggle goes into the View menu."""
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock:{title}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.view_menu.addAction(dock.toggleViewAction())
        return dock

    def add_menu(self, title: str) -> QMenu:
        """A new top-level menu, placed before Help."""
        menu = QMenu(title, self)
        self.menuBar().insertMenu(self.help_menu.menuAction(), menu)
        return menu

    @property
    def notices(self) -> List[str]:
        """Every notice shown so far (newest last)."""
        return list(self._notices)

    def show_notice(self, text: str) -> None:
        """A message across the top of the window (not modal, dismissable)."""
        self._notices.append(text)
        self.notice_label.setText(text)
        self._notice_bar.show()
        log.warning("%s", text)

    def refresh(self) -> None:
        for pane in self.panes:
            pane.refresh()

    def open_settings(self) -> "SettingsDialog":
        """Open the settings dialog (window-modal, does not block the loop)."""
        from gui.ui.settings_dialog import SettingsDialog
        dialog = SettingsDialog(self.config, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(self.apply_config)
        dialog.open()
        return dialog

    def apply_config(self) -> None:
        """The configuration changed: update the panes, tell listeners."""
        for pane in self.panes:
            pane.http_timeout = float(self.config.transfers.HttpTimeout)
            pane.set_peers(self.config.peers)
        if all(p.peer is None for p in self.panes):
            self._choose_initial_peers()
        self.configChanged.emit(self.config)

    def add_close_veto(self, veto: CloseVeto) -> None:
        """``veto()`` is asked when the user closes the window; False keeps it open."""
        self._close_vetoes.append(veto)

    def before_close(self) -> bool:
        """Whether the window may close: every veto agrees (the transfers UI asks about jobs).
        A veto that fails is logged and does not trap the user."""
        for veto in list(self._close_vetoes):
            try:
                if not veto():
                    return False
            except Exception as exc:  # noqa: BLE001 - a broken hook must not trap the user
                log.warning("a close veto failed; ignoring it", exc_info=exc)
        return True

    def force_close(self) -> None:
        """Close without asking (SIGINT/SIGTERM, self-test)."""
        self._force_close = True
        self.close()

    async def shutdown(self) -> None:
        """Cancel the panes' requests and close their connections."""
        self.runner.cancel_all()
        for pane in self.panes:
            await pane.aclose()

    # --- Qt events ----------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._force_close and not self.before_close():
            event.ignore()
            return
        event.accept()
        self.closed.emit()

    # --- internals --------------------------------------------------------------------

    def _build_menus(self) -> None:
        bar = self.menuBar()
        self.file_menu = bar.addMenu("&File")
        self.settings_action = QAction("&Settings…", self)
        # Ctrl+, everywhere (the platform's Preferences key is empty on some desktops).
        self.settings_action.setShortcuts([QKeySequence("Ctrl+,"), *QKeySequence.keyBindings(
            QKeySequence.StandardKey.Preferences)])
        self.settings_action.triggered.connect(self.open_settings)
        self.file_menu.addAction(self.settings_action)
        self.file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        self.file_menu.addAction(self.quit_action)

        self.view_menu = bar.addMenu("&View")
        self.refresh_action = QAction("&Refresh", self)
        self.refresh_action.setShortcut(QKeySequence(Qt.Key.Key_F5))
        self.refresh_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.refresh_action.triggered.connect(self.refresh)
        self.view_menu.addAction(self.refresh_action)
        self.view_menu.addSeparator()

        self.help_menu = bar.addMenu("&Help")
        about = QAction("&About", self)
        about.triggered.connect(self._about)
        self.help_menu.addAction(about)

    def _about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, f"About {APP_TITLE}",
                          f"<b>{APP_TITLE}</b> {gui.__version__}<br>"
                          "Fast, verified, all-or-nothing transfers of medical images "
                          "between Orthanc servers.", QMessageBox.StandardButton.Ok, self)
        box.setIconPixmap(app_icon().pixmap(64, 64))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _choose_initial_peers(self) -> None:
        peers = self.config.peers
        if not peers:
            return
        left = next((p for p in peers if p.local), peers[0])
        right = next((p for p in peers if p.name != left.name), left)
        self.panes[0].select_peer(left.name)
        self.panes[1].select_peer(right.name)

    def _install_transfers_ui(self) -> None:
        from gui.ui.transfers import TransfersUi
        try:
            self.transfers = TransfersUi(self)
        except Exception as exc:  # noqa: BLE001 - browsing must keep working
            log.warning("the transfers UI failed to start", exc_info=exc)
            self.show_notice(f"The transfers panel failed to start: {exc}")
