"""Settings: peers (add, edit, remove, test, import from orthanc.json) and transfer options.

Edits go to a working copy; nothing reaches the configuration until "Save",
which writes it with ``gui.config.save_config``. Invalid values are refused
where they are typed, with the reason next to the field, and "Save" stays
disabled until they are fixed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QListWidget, QListWidgetItem, QPushButton, QTabWidget, QVBoxLayout,
                               QWidget)

from gui.client import OrthancClient, OrthancError, Peer, PeerConfigError
from gui.config import (AppConfig, ConfigError, SecretStore, TransferOptions, import_orthanc_json,
                        loads_with_comments, save_config)
from gui.ui.async_tasks import TaskRunner, spawn_detached
from gui.ui.peer_pane import PLAIN_HTTP_WARNING, describe_connection_error, plain_http_icon

log = logging.getLogger(__name__)

BadgeRole = int(Qt.ItemDataRole.UserRole) + 1   # "plain-http" on peers with the warning badge
TEST_TIMEOUT = 20.0

OPTION_LABELS = {
    "Threads": "Threads",
    "BucketSize": "Bucket size (KB)",
    "CacheSize": "Cache size (MB)",
    "MaxPushTransactions": "Max push transactions",
    "MaxHttpRetries": "Max HTTP retries",
    "HttpTimeout": "HTTP timeout (s)",
    "PeerCommitTimeout": "Peer commit timeout (s)",
    "MaxConcurrentJobs": "Max concurrent jobs",
    "Compression": "Compression",
    "ImportAsItArrives": "Import as it arrives",
    "MaxRate": "Speed limit per job (KB/s)",
    "MaxTotalRate": "Speed limit, all jobs (KB/s)",
}

#: What each option does, as a tooltip (in the words of the docs).
OPTION_TIPS = {
    "Threads": "Buckets moved at the same time within one job",
    "BucketSize": "Small instances are grouped into buckets of about this size; larger ones are split",
    "CacheSize": "Memory for buckets waiting to be delivered in pull mode",
    "MaxPushTransactions": "Push transactions a target may have open at once",
    "MaxHttpRetries": "How often a failed HTTP request is tried again before the job fails",
    "HttpTimeout": "Seconds without an answer before an HTTP request counts as failed",
    "PeerCommitTimeout": "Seconds the target may take to import and commit a push transaction",
    "MaxConcurrentJobs": "Jobs running at once; more wait as Pending",
    "Compression": "auto: measured on the first bucket (gzip when it pays on this link); "
                   "plain REST mode uses HTTP gzip on downloads whatever is chosen here",
    "ImportAsItArrives": "The target imports each verified instance while the other buckets arrive "
                         "(our plugin only); a failed commit removes them again",
    "MaxRate": "Most bytes per second one job moves through this computer, all its connections "
               "together (0: no limit); a job's context menu changes it for that job",
    "MaxTotalRate": "Most bytes per second all jobs together move through this computer (0: no limit); "
                    "applies at once, also to running jobs",
}


def parse_option(name: str, text: str) -> Any:
    """The value typed for option ``name``; ConfigError with the reason when invalid."""
    if name == "Compression":
        return TransferOptions.validate_field(name, text)
    cleaned = text.strip()
    try:
        value = int(cleaned)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {cleaned!r}" if cleaned
                          else f"{name} is empty: enter a whole number") from None
    return TransferOptions.validate_field(name, value)


class SettingsDialog(QDialog):
    def __init__(self, config: AppConfig, parent: Optional[QWidget] = None, *,
                 secrets: Optional[SecretStore] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.resize(820, 560)
        self.config = config
        self._secrets = secrets
        self._peers: List[Peer] = [copy.deepcopy(p) for p in config.peers]
        self._row = -1
        self._peer_error: Optional[str] = None
        self._option_errors: Dict[str, str] = {}
        self._runner = TaskRunner(self)

        tabs = QTabWidget(self)
        tabs.addTab(self._build_peers_tab(), "Peers")
        tabs.addTab(self._build_options_tab(), "Transfers")
        self.tabs = tabs

        self.message_label = QLabel(self)
        self.message_label.setObjectName("settingsMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                        | QDialogButtonBox.StandardButton.Cancel, self)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(tabs, 1)
        layout.addWidget(self.message_label)
        layout.addWidget(self.buttons)

        self._fill_peer_list()
        self.peer_list.setCurrentRow(0 if self._peers else -1)
        self._show_peer(self.peer_list.currentRow())
        self._update_save_button()

    # --- building ---------------------------------------------------------------

    def _build_peers_tab(self) -> QWidget:
        page = QWidget(self)
        self.peer_list = QListWidget(page)
        self.peer_list.setObjectName("peerList")
        self.peer_list.currentRowChanged.connect(self._row_changed)
        self.add_button = QPushButton("Add", page)
        self.remove_button = QPushButton("Remove", page)
        self.import_button = QPushButton("Import from orthanc.json…", page)
        self.add_button.clicked.connect(self.add_peer)
        self.remove_button.clicked.connect(self.remove_peer)
        self.import_button.clicked.connect(self._choose_import_file)
        left = QVBoxLayout()
        left.addWidget(self.peer_list, 1)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        left.addLayout(row)
        left.addWidget(self.import_button)

        self.name_edit = QLineEdit(page)
        self.url_edit = QLineEdit(page)
        self.url_edit.setPlaceholderText("https://orthanc.example.org:8042")
        self.username_edit = QLineEdit(page)
        self.password_edit = QLineEdit(page)
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.timeout_edit = QLineEdit(page)
        self.timeout_edit.setPlaceholderText("default: the HTTP timeout of the Transfers tab")
        self.ca_bundle_edit = QLineEdit(page)
        self.ca_bundle_edit.setPlaceholderText("optional: a CA file to trust for https")
        self.local_check = QCheckBox("This is the local server", page)
        self.verify_tls_check = QCheckBox("Verify TLS certificates", page)
        self.url_warning = QLabel(page)
        self.url_warning.setObjectName("urlWarning")
        self.url_warning.setProperty("role", "warning")
        self.url_warning.setWordWrap(True)
        self.url_warning.hide()
        self.peer_error_label = QLabel(page)
        self.peer_error_label.setObjectName("peerError")
        self.peer_error_label.setProperty("role", "fieldError")
        self.peer_error_label.setWordWrap(True)
        self.test_button = QPushButton("Test connection", page)
        self.test_button.clicked.connect(self.test_peer)
        self.test_result = QLabel(page)
        self.test_result.setObjectName("testResult")
        self.test_result.setWordWrap(True)
        self.test_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # Messages that come and go (the plain-HTTP warning, an error, a test's result) are
        # below every field and button, and grow downwards: what the pointer is on stays put.
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("URL", self.url_edit)
        form.addRow("Username", self.username_edit)
        form.addRow("Password", self.password_edit)
        form.addRow("Timeout (s)", self.timeout_edit)
        form.addRow("CA bundle", self.ca_bundle_edit)
        form.addRow("", self.verify_tls_check)
        form.addRow("", self.local_check)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button, 0, Qt.AlignmentFlag.AlignTop)
        test_row.addWidget(self.test_result, 1)
        form.addRow("", test_row)
        form.addRow("", self.url_warning)
        form.addRow("", self.peer_error_label)
        self.peer_form = QGroupBox("Peer", page)
        self.peer_form.setLayout(form)
        for edit in (self.name_edit, self.url_edit, self.username_edit, self.password_edit,
                     self.timeout_edit, self.ca_bundle_edit):
            edit.textEdited.connect(lambda _text: self._peer_fields_edited())
        for check in (self.local_check, self.verify_tls_check):
            check.clicked.connect(lambda _checked: self._peer_fields_edited())

        self.keyring_note = QLabel(page)
        self.keyring_note.setObjectName("keyringNote")
        self.keyring_note.setProperty("role", "warning")
        self.keyring_note.setWordWrap(True)
        self._update_keyring_note()

        columns = QHBoxLayout()
        columns.addLayout(left, 2)
        columns.addWidget(self.peer_form, 3)
        layout = QVBoxLayout(page)
        layout.addLayout(columns, 1)
        layout.addWidget(self.keyring_note)
        return page

    def _build_options_tab(self) -> QWidget:
        page = QWidget(self)
        grid = QGridLayout()
        self.option_edits: Dict[str, QLineEdit] = {}
        self.option_checks: Dict[str, QCheckBox] = {}
        self.option_error_labels: Dict[str, QLabel] = {}
        options = self.config.transfers
        row = 0
        for field in dataclasses.fields(TransferOptions):
            name = field.name
            grid.addWidget(QLabel(OPTION_LABELS.get(name, name), page), row, 0)
            error = QLabel(page)
            error.setObjectName(f"error:{name}")
            error.setProperty("role", "fieldError")
            if name == "Compression":
                self.compression_combo = QComboBox(page)
                self.compression_combo.addItems(["auto", "gzip", "none"])
                self.compression_combo.setCurrentText(str(options.Compression))
                self.compression_combo.setToolTip(OPTION_TIPS["Compression"])
                grid.addWidget(self.compression_combo, row, 1)
            elif isinstance(getattr(options, name), bool):
                check = QCheckBox(page)
                check.setObjectName(f"option:{name}")
                check.setChecked(bool(getattr(options, name)))
                check.setToolTip(OPTION_TIPS.get(name, name))
                self.option_checks[name] = check
                grid.addWidget(check, row, 1)
            else:
                edit = QLineEdit(str(getattr(options, name)), page)
                edit.setObjectName(f"option:{name}")
                low, high = TransferOptions.LIMITS[name]
                edit.setToolTip(f"{OPTION_TIPS.get(name, name)}. A whole number from {low} to {high}.")
                edit.textChanged.connect(lambda text, n=name: self._option_edited(n, text))
                self.option_edits[name] = edit
                grid.addWidget(edit, row, 1)
            self.option_error_labels[name] = error
            grid.addWidget(error, row, 2)
            row += 1
        grid.setColumnStretch(2, 1)
        self.confirm_check = QCheckBox("Confirm before each transfer", page)
        self.confirm_check.setObjectName("confirmTransfers")
        self.confirm_check.setChecked(bool(self.config.ui.get("ConfirmTransfers", True)))
        self.confirm_check.setToolTip("Before a transfer starts, show what it will move (instances, size, what the "
                                      "target already has, mode, compression) and wait for Start transfer")
        layout = QVBoxLayout(page)
        layout.addLayout(grid)
        layout.addWidget(self.confirm_check)
        layout.addStretch(1)
        return page

    # --- public API (also used by tests) -------------------------------------------

    @property
    def peers(self) -> List[Peer]:
        """The working copy of the peers."""
        return list(self._peers)

    @property
    def peer_error(self) -> Optional[str]:
        return self._peer_error

    def option_error(self, name: str) -> str:
        return self.option_error_labels[name].text()

    def select_peer(self, name: str) -> None:
        for row, peer in enumerate(self._peers):
            if peer.name == name:
                self.peer_list.setCurrentRow(row)
                return

    def add_peer(self) -> None:
        names = {p.name for p in self._peers}
        name = "New peer"
        number = 2
        while name in names:
            name = f"New peer {number}"
            number += 1
        self._peers.append(Peer(name, "http://localhost:8042"))
        self._fill_peer_list()
        self.peer_list.setCurrentRow(len(self._peers) - 1)
        self.name_edit.setFocus()
        self.name_edit.selectAll()

    def remove_peer(self) -> None:
        row = self.peer_list.currentRow()
        if row < 0 or row >= len(self._peers):
            return
        removed = self._peers.pop(row)
        self._peer_error = None
        self._row = -1
        self._fill_peer_list()
        self.peer_list.setCurrentRow(min(row, len(self._peers) - 1))
        if not self._peers:
            self._show_peer(-1)
        self._say(f"Removed {removed.name} (saved when you click Save).")
        self._update_save_button()

    def test_peer(self) -> None:
        """Ask the peer in the form for its version and the accelerator."""
        peer = self._peer_from_fields()
        if peer is None:
            self.test_result.setText(f"Cannot test: {self._peer_error}")
            return
        self.test_result.setText(f"Testing {peer.url}…")
        timeout = min(peer.timeout or float(self.config.transfers.HttpTimeout), TEST_TIMEOUT)

        async def probe() -> str:
            client = OrthancClient(peer, timeout=timeout)
            try:
                info = await client.system()
                try:
                    accelerator = await client.accelerator()
                    acc_text = (f"accelerator present ({accelerator.flavour})" if accelerator.available
                                else "no accelerator (standard REST transfers)")
                except OrthancError as exc:
                    acc_text = f"accelerator unknown ({exc.reason})"
                name = f" “{info.name}”" if info.name else ""
                return f"✔ Orthanc {info.version}{name} — {acc_text}"
            finally:
                spawn_detached(client.aclose(), "closing the test connection")

        self._runner.start(probe(), key="test", what=f"Testing {peer.name}",
                           on_result=self.test_result.setText,
                           on_error=lambda exc, _m: self.test_result.setText(
                               "✘ " + describe_connection_error(peer, exc)))

    def import_from(self, path: Path) -> bool:
        """Merge peers (and the transfer options it sets) from an Orthanc configuration file."""
        path = Path(path)
        try:
            peers, options = import_orthanc_json(path)
            present = self._options_present(path)
        except ConfigError as exc:
            self._say(f"Nothing imported: {exc}", error=True)
            return False
        names = {p.name for p in self._peers}
        replaced = [p.name for p in peers if p.name in names]
        for peer in peers:
            for n, existing in enumerate(self._peers):
                if existing.name == peer.name:
                    self._peers[n] = peer
                    break
            else:
                self._peers.append(peer)
        for name in present:
            if name in self.option_edits:
                self.option_edits[name].setText(str(getattr(options, name)))
            elif name in self.option_checks:
                self.option_checks[name].setChecked(bool(getattr(options, name)))
            elif name == "Compression":
                self.compression_combo.setCurrentText(str(options.Compression))
        self._row = -1
        self._fill_peer_list()
        if peers:
            self.peer_list.setCurrentRow(self._peers.index(peers[0]))
        text = (f"Imported {len(peers)} peer(s) from {path.name}: {', '.join(p.name for p in peers)}"
                if peers else f"{path.name} defines no peers")
        if replaced:
            text += f" (replacing {', '.join(replaced)})"
        if present:
            text += f". Transfer options taken from the file: {', '.join(present)}"
        self._say(text + ". Click Save to keep them.")
        return True

    def save(self) -> bool:
        """Write the configuration; refuses (and says why) while something is invalid."""
        problems = self.problems()
        if problems:
            self._say("Not saved: " + "; ".join(problems), error=True)
            return False
        values = {name: parse_option(name, edit.text()) for name, edit in self.option_edits.items()}
        values["Compression"] = self.compression_combo.currentText()
        values.update({name: check.isChecked() for name, check in self.option_checks.items()})
        backup = (self.config.peers, self.config.transfers, dict(self.config.ui))
        self.config.peers = [copy.deepcopy(p) for p in self._peers]
        self.config.transfers = TransferOptions(**values)
        self.config.ui["ConfirmTransfers"] = self.confirm_check.isChecked()
        try:
            save_config(self.config, self._secrets)
        except OSError as exc:
            self.config.peers, self.config.transfers, self.config.ui = backup
            self._say(f"Not saved: cannot write {self.config.path}: {exc.strerror or exc}", error=True)
            return False
        self.accept()
        return True

    def problems(self) -> List[str]:
        out = []
        if self._peer_error:
            out.append(self._peer_error)
        out.extend(self._option_errors.values())
        return out

    # --- peers ------------------------------------------------------------------------

    def _fill_peer_list(self) -> None:
        self.peer_list.blockSignals(True)
        self.peer_list.clear()
        for peer in self._peers:
            self.peer_list.addItem(self._peer_item(peer))
        self.peer_list.blockSignals(False)

    @staticmethod
    def _peer_item(peer: Peer) -> QListWidgetItem:
        item = QListWidgetItem(peer.name + ("  (local)" if peer.local else ""))
        if peer.is_plain_http_to_remote:
            item.setIcon(plain_http_icon())
            item.setToolTip(f"{peer.url}\n{PLAIN_HTTP_WARNING}")
            item.setData(BadgeRole, "plain-http")
        else:
            item.setToolTip(peer.url)
        return item

    def _row_changed(self, row: int) -> None:
        if self._peer_error and self._row >= 0 and self._row < len(self._peers):
            self._say(f"Changes to {self._peers[self._row].name} were not kept: {self._peer_error}",
                      error=True)
        self._peer_error = None
        self._show_peer(row)
        self._update_save_button()

    def _show_peer(self, row: int) -> None:
        self._row = row
        self._runner.cancel("test")
        self.test_result.clear()
        self.peer_error_label.clear()
        for edit in (self.name_edit, self.url_edit):
            _mark_invalid(edit, False)
        peer = self._peers[row] if 0 <= row < len(self._peers) else None
        self.peer_form.setEnabled(peer is not None)
        self.remove_button.setEnabled(peer is not None)
        self.name_edit.setText(peer.name if peer else "")
        self.url_edit.setText(peer.url if peer else "")
        self.username_edit.setText(peer.username or "" if peer else "")
        self.password_edit.setText(peer.password or "" if peer else "")
        self.timeout_edit.setText(_number(peer.timeout) if peer and peer.timeout else "")
        self.ca_bundle_edit.setText(peer.ca_bundle or "" if peer else "")
        self.local_check.setChecked(bool(peer and peer.local))
        self.verify_tls_check.setChecked(bool(peer is None or peer.verify_tls))
        self._update_url_warning(peer)

    def _peer_fields_edited(self) -> None:
        if not 0 <= self._row < len(self._peers):
            return
        peer = self._peer_from_fields()
        if peer is not None:
            if peer.local:  # one local server at most
                for other in self._peers:
                    if other is not self._peers[self._row] and other.local:
                        other.local = False
            self._peers[self._row] = peer
            for row, each in enumerate(self._peers):
                fresh = self._peer_item(each)
                item = self.peer_list.item(row)
                item.setText(fresh.text())
                item.setIcon(fresh.icon())
                item.setToolTip(fresh.toolTip())
                item.setData(BadgeRole, fresh.data(BadgeRole))
        self._update_url_warning(peer)
        self._update_save_button()

    def _peer_from_fields(self) -> Optional[Peer]:
        """The peer as typed, or None with ``_peer_error`` saying why not."""
        if not 0 <= self._row < len(self._peers):
            self._peer_error = "no peer selected"
            return None
        original = self._peers[self._row]
        name = self.name_edit.text().strip()
        error: Optional[Tuple[QLineEdit, str]] = None
        peer: Optional[Peer] = None
        if not name:
            error = (self.name_edit, "The name is empty.")
        elif any(p.name == name for n, p in enumerate(self._peers) if n != self._row):
            error = (self.name_edit, f"Another peer is already called {name!r}.")
        timeout: Optional[float] = None
        text = self.timeout_edit.text().strip()
        if error is None and text:
            try:
                timeout = float(text)
                if not timeout > 0:
                    raise ValueError
            except ValueError:
                error = (self.timeout_edit, f"Timeout must be a positive number of seconds, not {text!r}.")
        if error is None:
            username = self.username_edit.text().strip() or None
            try:
                peer = Peer.from_url(
                    name, self.url_edit.text().strip(),
                    username=username,
                    password=(self.password_edit.text() or None) if username else None,
                    http_headers=dict(original.http_headers),
                    ca_bundle=self.ca_bundle_edit.text().strip() or None,
                    certificate_file=original.certificate_file,
                    certificate_key_file=original.certificate_key_file,
                    certificate_key_password=original.certificate_key_password,
                    timeout=timeout,
                    verify_tls=self.verify_tls_check.isChecked(),
                    remote_self=original.remote_self,
                    local=self.local_check.isChecked())
            except PeerConfigError as exc:
                reason = str(exc)
                for prefix in (f"{name}: ", "peer: "):
                    reason = reason[len(prefix):] if reason.startswith(prefix) else reason
                error = (self.url_edit, f"URL: {reason}.")
        for edit in (self.name_edit, self.url_edit, self.timeout_edit):
            _mark_invalid(edit, error is not None and edit is error[0])
        if error is not None:
            self._peer_error = error[1]
            self.peer_error_label.setText(error[1])
            return None
        self._peer_error = None
        self.peer_error_label.clear()
        return peer

    def _update_url_warning(self, peer: Optional[Peer]) -> None:
        if peer is not None and peer.is_plain_http_to_remote:
            self.url_warning.setText("⚠ " + PLAIN_HTTP_WARNING)
            self.url_warning.show()
        else:
            self.url_warning.hide()

    def _choose_import_file(self) -> None:
        dialog = QFileDialog(self, "Import peers from an Orthanc configuration file")
        dialog.setNameFilters(["Orthanc configuration (*.json)", "All files (*)"])
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda chosen: self.import_from(Path(chosen)))
        dialog.open()

    @staticmethod
    def _options_present(path: Path) -> List[str]:
        """Which transfer options the file really sets (the others keep their values)."""
        data = loads_with_comments(path.read_text(encoding="utf-8"))
        section = data.get("Transfers") if isinstance(data, dict) else None
        names = [f.name for f in dataclasses.fields(TransferOptions)]
        present = [n for n in names if isinstance(section, dict) and n in section]
        if isinstance(data, dict) and "HttpTimeout" in data and "HttpTimeout" not in present:
            present.append("HttpTimeout")
        return present

    def _update_keyring_note(self) -> None:
        if self._secrets is None:
            self._secrets = SecretStore()
        if self.config.passwords_in_file or not self._secrets.available:
            where = self.config.path or "the configuration file"
            self.keyring_note.setText(
                "No system keyring is available: passwords are stored in the configuration file "
                f"{where}, which only your user account can read (permissions 0600).")
            self.keyring_note.show()
        else:
            self.keyring_note.hide()

    # --- options ------------------------------------------------------------------------

    def _option_edited(self, name: str, text: str) -> None:
        label = self.option_error_labels[name]
        try:
            parse_option(name, text)
        except ConfigError as exc:
            self._option_errors[name] = str(exc)
            label.setText(str(exc))
            _mark_invalid(self.option_edits[name], True)
        else:
            self._option_errors.pop(name, None)
            label.clear()
            _mark_invalid(self.option_edits[name], False)
        self._update_save_button()

    # --- misc --------------------------------------------------------------------------------

    def _update_save_button(self) -> None:
        problems = self.problems()
        self.save_button.setEnabled(not problems)
        self.save_button.setToolTip("Fix first: " + "; ".join(problems) if problems else "")

    def _say(self, text: str, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setProperty("role", "fieldError" if error else "")
        self.message_label.style().unpolish(self.message_label)
        self.message_label.style().polish(self.message_label)
        if error:
            log.info("%s", text)


def _mark_invalid(edit: QLineEdit, invalid: bool) -> None:
    if bool(edit.property("invalid")) != invalid:
        edit.setProperty("invalid", invalid)
        edit.style().unpolish(edit)
        edit.style().polish(edit)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
