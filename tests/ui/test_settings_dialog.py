"""The settings dialog: peers, transfer options, import, badges, saving."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt

from gui.client import Peer
from gui.config import AppConfig, load_config
from gui.ui.settings_dialog import BadgeRole, SettingsDialog

WAIT = 30000


def make_dialog(qtbot, config: AppConfig) -> SettingsDialog:
    dialog = SettingsDialog(config)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def retype(qtbot, edit, text: str) -> None:
    """Replace a field's text the way a user does (textEdited fires)."""
    edit.setFocus()
    edit.selectAll()
    if text:
        qtbot.keyClicks(edit, text)
    else:
        qtbot.keyClick(edit, Qt.Key.Key_Delete)


def test_invalid_option_values_are_refused_with_the_reason(qtbot, qloop, tmp_path):
    config = AppConfig(path=tmp_path / "config.json")
    dialog = make_dialog(qtbot, config)
    threads = dialog.option_edits["Threads"]

    retype(qtbot, threads, "lots")
    assert "Threads must be a whole number" in dialog.option_error("Threads")
    assert not dialog.save_button.isEnabled()
    retype(qtbot, threads, "0")
    assert "between 1 and 64" in dialog.option_error("Threads")
    retype(qtbot, dialog.option_edits["BucketSize"], "")
    assert "BucketSize is empty" in dialog.option_error("BucketSize")

    assert dialog.save() is False
    assert "Not saved" in dialog.message_label.text()
    assert not config.path.exists() and config.transfers.Threads == 4

    retype(qtbot, threads, "8")
    retype(qtbot, dialog.option_edits["BucketSize"], "2048")
    assert dialog.option_error("Threads") == "" and dialog.save_button.isEnabled()
    dialog.compression_combo.setCurrentText("gzip")
    dialog.confirm_check.setChecked(False)
    assert dialog.save() is True
    saved = load_config(config.path)
    assert saved.transfers.Threads == 8 and saved.transfers.BucketSize == 2048
    assert saved.transfers.Compression == "gzip"
    assert saved.ui["ConfirmTransfers"] is False


def test_add_edit_remove_peers_and_save(qtbot, qloop, tmp_path):
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Old", "http://127.0.0.1:8042")]
    dialog = make_dialog(qtbot, config)

    dialog.add_peer()
    assert dialog.peer_list.count() == 2
    retype(qtbot, dialog.name_edit, "Paris")
    retype(qtbot, dialog.url_edit, "https://paris.example.org:8043/orthanc/")
    retype(qtbot, dialog.username_edit, "bob")
    retype(qtbot, dialog.password_edit, "s3cret")
    retype(qtbot, dialog.timeout_edit, "30")
    assert dialog.peer_error is None
    assert dialog.peer_list.item(1).text() == "Paris"

    # A malformed URL and a duplicate name are refused where they are typed.
    retype(qtbot, dialog.url_edit, "ftp://paris")
    assert "must start with http:// or https://" in dialog.peer_error_label.text()
    assert not dialog.save_button.isEnabled()
    retype(qtbot, dialog.url_edit, "http://[bad")
    assert "malformed URL" in dialog.peer_error_label.text()
    retype(qtbot, dialog.url_edit, "https://paris.example.org:8043/orthanc/")
    retype(qtbot, dialog.name_edit, "Old")
    assert "already called" in dialog.peer_error_label.text()
    retype(qtbot, dialog.name_edit, "Paris")
    assert dialog.save_button.isEnabled()

    dialog.select_peer("Old")
    dialog.remove_peer()
    assert [p.name for p in dialog.peers] == ["Paris"]

    assert dialog.save() is True
    assert dialog.result() == dialog.DialogCode.Accepted
    saved = load_config(config.path)
    assert [p.name for p in saved.peers] == ["Paris"]
    paris = saved.peers[0]
    assert paris.url == "https://paris.example.org:8043/orthanc"
    assert paris.username == "bob" and paris.password == "s3cret" and paris.timeout == 30
    # No keyring in the tests: the dialog said passwords stay in the file, which is private.
    assert dialog.keyring_note.isVisibleTo(dialog) and "0600" in dialog.keyring_note.text()
    assert (config.path.stat().st_mode & 0o777) == 0o600


def test_testing_a_peer_shows_version_and_accelerator_or_the_error(
        qtbot, qloop, orthanc_factory, closed_port_url, tmp_path):
    server = orthanc_factory("tested")
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Tested", server.url), Peer("Down", closed_port_url)]
    dialog = make_dialog(qtbot, config)

    dialog.select_peer("Tested")
    dialog.test_button.click()
    qtbot.waitUntil(lambda: dialog.test_result.text().startswith(("✔", "✘")), timeout=WAIT)
    assert "Orthanc 1.10.1" in dialog.test_result.text()
    assert "no accelerator" in dialog.test_result.text()

    dialog.select_peer("Down")
    dialog.test_peer()
    qtbot.waitUntil(lambda: dialog.test_result.text().startswith(("✔", "✘")), timeout=WAIT)
    assert "connection refused" in dialog.test_result.text()


def test_import_peers_and_options_from_an_orthanc_json_with_comments(qtbot, qloop, tmp_path):
    source = tmp_path / "orthanc.json"
    source.write_text("""{
      // peers of the hospital
      "Name" : "MyOrthanc",
      /* two peers, one per form
         of OrthancPeers */
      "OrthancPeers" : {
        "lyon" : [ "http://10.0.0.5:8042/", "alice", "pw" ],
        "nantes" : { "Url" : "https://nantes.example.org/", "Username" : "n", "Password" : "p",
                     "Timeout" : 12 }  // object form
      },
      "Transfers" : { "Threads" : 6, "MaxHttpRetries" : 7 }
    }""")
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("lyon", "http://127.0.0.1:1")]
    config.transfers.BucketSize = 1024
    dialog = make_dialog(qtbot, config)

    assert dialog.import_from(source) is True
    names = [p.name for p in dialog.peers]
    assert names == ["lyon", "nantes"]
    assert "replacing lyon" in dialog.message_label.text()
    assert dialog.option_edits["Threads"].text() == "6"
    assert dialog.option_edits["MaxHttpRetries"].text() == "7"
    assert dialog.option_edits["BucketSize"].text() == "1024"   # not in the file: kept
    # The imported remote plain-HTTP peer carries the warning badge.
    assert dialog.peer_list.item(0).data(BadgeRole) == "plain-http"
    assert dialog.peer_list.item(1).data(BadgeRole) is None

    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    assert dialog.import_from(broken) is False
    assert "Nothing imported" in dialog.message_label.text() and "broken.json" in dialog.message_label.text()

    assert dialog.save() is True
    saved = load_config(config.path)
    assert [p.name for p in saved.peers] == ["lyon", "nantes"]
    assert saved.peer("lyon").username == "alice" and saved.peer("nantes").timeout == 12
    assert saved.transfers.Threads == 6 and saved.transfers.BucketSize == 1024


def test_plain_http_badge_in_dialog_and_pane_selector(qtbot, make_window, tmp_path):
    config = AppConfig(path=tmp_path / "config.json")
    config.peers = [Peer("Here", "http://localhost:8042"), Peer("Far", "http://192.0.2.10:8042"),
                    Peer("Safe", "https://192.0.2.11")]
    dialog = make_dialog(qtbot, config)
    badges = [dialog.peer_list.item(row).data(BadgeRole) for row in range(3)]
    assert badges == [None, "plain-http", None]
    far = dialog.peer_list.item(1)
    assert not far.icon().isNull() and "unencrypted" in far.toolTip()
    dialog.select_peer("Far")
    assert dialog.url_warning.isVisibleTo(dialog) and "unencrypted" in dialog.url_warning.text()
    dialog.select_peer("Here")
    assert not dialog.url_warning.isVisibleTo(dialog)
    # Typing a remote plain-HTTP URL shows the badge at once.
    retype(qtbot, dialog.url_edit, "http://203.0.113.7:8042")
    assert dialog.peer_list.item(0).data(BadgeRole) == "plain-http"

    window = make_window(config)
    selector = window.panes[0].selector
    row = selector.findData("Far")
    assert not selector.itemIcon(row).isNull()
    assert "unencrypted" in selector.itemData(row, Qt.ItemDataRole.ToolTipRole)
    assert selector.itemIcon(selector.findData("Here")).isNull()


def test_saving_settings_updates_the_window(qtbot, make_window, orthanc_factory, tmp_path):
    server = orthanc_factory("added")
    config = AppConfig(path=tmp_path / "config.json")
    window = make_window(config)
    assert window.panes[0].peer is None
    changed = []
    window.configChanged.connect(changed.append)

    dialog = window.open_settings()
    dialog.add_peer()
    retype(qtbot, dialog.name_edit, "Added")
    retype(qtbot, dialog.url_edit, server.url)
    assert dialog.save() is True
    assert changed == [config]
    assert json.loads(Path(config.path).read_text())["OrthancPeers"]["Added"]["Url"] == server.url
    pane = window.panes[0]
    assert pane.peer is not None and pane.peer.name == "Added"
    qtbot.waitUntil(lambda: pane.state == "ok", timeout=WAIT)


def test_the_form_does_not_shift_under_the_pointer_while_typing(qtbot, qloop, tmp_path):
    """A warning or an error appearing must not move the fields and buttons around it (the user
    is about to click "Test connection" or the next field)."""
    config = AppConfig(path=tmp_path / "config.json", peers=[Peer("Local", "http://127.0.0.1:8042/")])
    dialog = make_dialog(qtbot, config)
    dialog.resize(900, 560)
    peer_widgets = [dialog.name_edit, dialog.url_edit, dialog.username_edit, dialog.password_edit,
                    dialog.timeout_edit, dialog.ca_bundle_edit, dialog.verify_tls_check, dialog.local_check,
                    dialog.test_button]

    def places(widgets) -> list:
        qtbot.wait(50)   # let the layouts settle
        return [(w.mapTo(dialog, w.rect().topLeft()), w.size()) for w in widgets]

    before = places(peer_widgets)
    retype(qtbot, dialog.url_edit, "http://pacs.example.org:8042/")     # plain HTTP to a remote host
    assert dialog.url_warning.isVisible() and dialog.url_warning.text()
    assert places(peer_widgets) == before
    retype(qtbot, dialog.name_edit, "")                                  # an error under the fields
    assert dialog.peer_error_label.text()
    assert places(peer_widgets) == before

    dialog.tabs.setCurrentIndex(1)
    option_widgets = list(dialog.option_edits.values()) + list(dialog.option_checks.values())
    before = places(option_widgets)
    size = dialog.size()
    retype(qtbot, dialog.option_edits["Threads"], "0")
    retype(qtbot, dialog.option_edits["HttpTimeout"], "nothing")
    assert dialog.option_error("Threads") and dialog.option_error("HttpTimeout")
    assert places(option_widgets) == before and dialog.size() == size


def test_every_transfer_option_says_what_it_does(qtbot, qloop, tmp_path):
    import dataclasses

    from gui.config.settings import TransferOptions
    dialog = make_dialog(qtbot, AppConfig(path=tmp_path / "config.json"))
    widgets = {**dialog.option_edits, **dialog.option_checks, "Compression": dialog.compression_combo,
               "ConfirmTransfers": dialog.confirm_check}
    assert set(widgets) == {f.name for f in dataclasses.fields(TransferOptions)} | {"ConfirmTransfers"}
    for name, widget in widgets.items():
        tip = widget.toolTip()
        assert tip and tip != name and len(tip) > 20, (name, tip)
