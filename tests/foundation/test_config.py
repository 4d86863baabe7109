"""Peers and options: Orthanc's shapes, keyring, permissions, corrupt files."""

from __future__ import annotations

import json
import os
import stat

import keyring
import pytest
from keyring.backend import KeyringBackend

from gui.client.peer import Peer
from gui.config import (AppConfig, ConfigError, SecretStore, TransferOptions, import_orthanc_json,
                        load_config, save_config)

ORTHANC_JSON = """
{
  // Orthanc's configuration allows comments
  "Name" : "MyOrthanc",
  "HttpTimeout" : 30,
  /* peers in both shapes */
  "OrthancPeers" : {
    "sample" : [ "http://127.0.0.1:8043/", "alice", "al//ice-pw" ],
    "secure" : {
      "Url" : "https://pacs.example.org/orthanc/",
      "Username" : "bob",
      "Password" : "b*b",
      "HttpHeaders" : { "Token" : "abc" },
      "CertificateFile" : "/etc/client.crt",
      "CertificateKeyFile" : "/etc/client.key",
      "CertificateKeyPassword" : "kp",
      "Timeout" : 12,
      "RemoteSelf" : "hospital-a"
    }
  },
  "Transfers" : { "Threads" : 6, "BucketSize" : 8192, "MaxHttpRetries" : 2 }
}
"""


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring backend, standing in for the desktop's secret service."""
    priority = 10

    def __init__(self):
        super().__init__()
        self.store = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        self.store.pop((service, username), None)


def test_import_orthanc_json_with_comments_and_both_peer_shapes(tmp_path):
    path = tmp_path / "orthanc.json"
    path.write_text(ORTHANC_JSON)
    peers, options = import_orthanc_json(path)
    sample, secure = peers
    assert (sample.name, sample.url, sample.username, sample.password) == \
        ("sample", "http://127.0.0.1:8043", "alice", "al//ice-pw")
    assert secure.url == "https://pacs.example.org/orthanc"
    assert secure.http_headers == {"Token": "abc"}
    assert (secure.certificate_file, secure.certificate_key_file, secure.certificate_key_password) == \
        ("/etc/client.crt", "/etc/client.key", "kp")
    assert secure.timeout == 12 and secure.remote_self == "hospital-a"
    assert (options.Threads, options.BucketSize, options.MaxHttpRetries, options.HttpTimeout) == (6, 8192, 2, 30)


def test_save_without_keyring_keeps_password_in_a_0600_file(tmp_path):
    config = AppConfig(path=tmp_path / "cfg" / "config.json")
    config.peers = [Peer("a", "http://127.0.0.1:8042", username="u", password="pw")]
    path = save_config(config, SecretStore(enabled=False))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert config.passwords_in_file
    again = load_config(path, SecretStore(enabled=False))
    assert again.peer("a").password == "pw"


def test_save_with_keyring_keeps_password_out_of_the_file(tmp_path, monkeypatch):
    backend = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        secrets = SecretStore(enabled=True)
        assert secrets.available
        config = AppConfig(path=tmp_path / "config.json")
        config.peers = [Peer("a", "http://127.0.0.1:8042", username="u", password="top-secret")]
        path = save_config(config, secrets)
        assert "top-secret" not in path.read_text()
        assert not config.passwords_in_file
        assert load_config(path, secrets).peer("a").password == "top-secret"
    finally:
        keyring.set_keyring(previous)


def test_corrupt_config_is_kept_aside_and_reported(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"OrthancPeers": {"a": ["http://x"]')  # truncated
    config = load_config(path, SecretStore(enabled=False))
    assert config.peers == []
    assert config.recovered_from is not None and config.recovered_from.exists()
    assert config.recovered_from.read_text().startswith('{"OrthancPeers"')
    assert not path.exists()  # nothing overwritten until the user saves


def test_invalid_values_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="Threads must be between"):
        TransferOptions.validate_field("Threads", 0)
    with pytest.raises(ConfigError, match="whole number"):
        TransferOptions.validate_field("BucketSize", "big")
    with pytest.raises(ConfigError, match="gzip, none or auto"):
        TransferOptions.validate_field("Compression", "zstd")
    with pytest.raises(ConfigError, match="Url"):
        load_config_from_text('{"OrthancPeers": {"a": {"Username": "x"}}}')


def load_config_from_text(text, tmp=None):
    import tempfile
    from pathlib import Path
    directory = Path(tempfile.mkdtemp())
    path = directory / "c.json"
    path.write_text(text)
    from gui.config.settings import parse_peers
    return parse_peers(json.loads(text)["OrthancPeers"])
