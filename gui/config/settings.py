"""The app's configuration: peers and transfer options, in one JSON file.

Location: the platform's user config directory (platformdirs), overridable
with ``ORTHANC_TRANSFERS_CONFIG`` or an explicit path. Shape::

    {
      "OrthancPeers": {"Local demo": {"Url": ..., "Username": ..., "Local": true}, ...},
      "Transfers": {"Threads": 4, "BucketSize": 4096, ...},
      "Ui": {"ConfirmTransfers": true}
    }

Passwords go to the OS keyring when one works; otherwise they stay in the
file, which is always written with 0600 permissions. A config file that
cannot be parsed is renamed aside (``.corrupt-<time>``) and reported, never
silently overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gui.client.peer import Peer, PeerConfigError

log = logging.getLogger(__name__)

APP_NAME = "orthanc-transfers"
KEYRING_SERVICE = "orthanc-transfers"
CONFIG_ENV = "ORTHANC_TRANSFERS_CONFIG"
KEYRING_ENV = "ORTHANC_TRANSFERS_KEYRING"  # "0" disables the keyring (tests, headless servers)


class ConfigError(ValueError):
    """The configuration cannot be used; the text says what and where."""


@dataclass
class TransferOptions:
    """Options with the C++ plugin's names and defaults (docs/engine.md, Options)."""

    Threads: int = 4
    BucketSize: int = 4096          # KB
    CacheSize: int = 512            # MB
    MaxPushTransactions: int = 4
    MaxHttpRetries: int = 3
    HttpTimeout: int = 60           # s
    PeerCommitTimeout: int = 600    # s
    Compression: str = "auto"       # gzip | none | auto
    MaxConcurrentJobs: int = 2
    # Push to our plugin: import each instance once its bytes are verified,
    # before the commit (visible early; still undone on failure). Off: nothing
    # is imported until everything is verified.
    ImportAsItArrives: bool = False
    # Bandwidth caps in KB/s, 0 for none (ours, not the C++ plugin's): MaxRate
    # for each job (all its connections together), MaxTotalRate for all jobs at once.
    MaxRate: int = 0
    MaxTotalRate: int = 0

    LIMITS = {
        "Threads": (1, 64), "BucketSize": (16, 1024 * 1024), "CacheSize": (1, 64 * 1024),
        "MaxPushTransactions": (1, 1000), "MaxHttpRetries": (0, 100), "HttpTimeout": (1, 86400),
        "PeerCommitTimeout": (1, 86400), "MaxConcurrentJobs": (1, 32),
        "MaxRate": (0, 100 * 1024 * 1024), "MaxTotalRate": (0, 100 * 1024 * 1024),
    }

    @classmethod
    def validate_field(cls, name: str, value: Any) -> Any:
        """Return the value if valid for ``name``; raise ConfigError with the reason."""
        if name == "Compression":
            if value not in ("gzip", "none", "auto"):
                raise ConfigError(f"Compression must be gzip, none or auto, not {value!r}")
            return value
        if name == "ImportAsItArrives":
            if not isinstance(value, bool):
                raise ConfigError(f"ImportAsItArrives must be true or false, not {value!r}")
            return value
        if name not in cls.LIMITS:
            raise ConfigError(f"unknown transfer option {name!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, not {value!r}")
        low, high = cls.LIMITS[name]
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
        return value

    @classmethod
    def from_json(cls, data: Any) -> "TransferOptions":
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("\"Transfers\" must be an object")
        known = {f.name for f in fields(cls)}
        values = {k: cls.validate_field(k, v) for k, v in data.items() if k in known}
        return cls(**values)

    def to_json(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def bucket_size_bytes(self) -> int:
        return self.BucketSize * 1024

    @property
    def cache_size_bytes(self) -> int:
        return self.CacheSize * 1024 * 1024


@dataclass
class AppConfig:
    peers: List[Peer] = field(default_factory=list)
    transfers: TransferOptions = field(default_factory=TransferOptions)
    ui: Dict[str, Any] = field(default_factory=lambda: {"ConfirmTransfers": True})
    path: Optional[Path] = None
    passwords_in_file: bool = False   # True when no keyring: the settings UI says so
    recovered_from: Optional[Path] = None  # where a corrupt file was moved

    def peer(self, name: str) -> Peer:
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise ConfigError(f"no peer named {name!r} (configured: {', '.join(p.name for p in self.peers) or 'none'})")

    def peer_for(self, name: str, url: str, extra: Sequence[Peer] = ()) -> Peer:
        """The peer a stored job names: credentials are never stored with
        jobs, so it is found again here (one of ``extra``, e.g. given on the
        command line, with that URL; else the configured one with the same
        name and URL), else it is the bare URL."""
        for peer in extra:
            if peer.url == url:
                return peer
        for peer in self.peers:
            if peer.name == name and peer.url == url:
                return peer
        return Peer(name=name, url=url)

    def set_peer(self, peer: Peer, old_name: Optional[str] = None) -> None:
        key = old_name or peer.name
        for n, existing in enumerate(self.peers):
            if existing.name == key:
                self.peers[n] = peer
                return
        self.peers.append(peer)

    def remove_peer(self, name: str) -> None:
        self.peers = [p for p in self.peers if p.name != name]


# --- comments-tolerant JSON (orthanc.json allows // and /* */) -------------------

_COMMENT_RE = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)


def loads_with_comments(text: str) -> Any:
    def strip(match: "re.Match[str]") -> str:
        token = match.group(0)
        return token if token.startswith('"') else ""
    return json.loads(_COMMENT_RE.sub(strip, text))


# --- paths -------------------------------------------------------------------------

def default_config_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    import platformdirs
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.json"


def default_data_dir() -> Path:
    override = os.environ.get("ORTHANC_TRANSFERS_DATA")
    if override:
        return Path(override)
    import platformdirs
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


# --- keyring -----------------------------------------------------------------------

class SecretStore:
    """Passwords in the OS keyring, when one is usable."""

    def __init__(self, enabled: Optional[bool] = None) -> None:
        if enabled is None:
            enabled = os.environ.get(KEYRING_ENV, "1") != "0"
        self._keyring = None
        if enabled:
            try:
                import keyring
                from keyring.backends import fail
                backend = keyring.get_keyring()
                if not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 1) > 0:
                    self._keyring = keyring
            except Exception:  # noqa: BLE001 - any keyring problem means "no keyring"
                self._keyring = None

    @property
    def available(self) -> bool:
        return self._keyring is not None

    def get(self, peer_name: str) -> Optional[str]:
        if not self._keyring:
            return None
        try:
            password = self._keyring.get_password(KEYRING_SERVICE, peer_name)
        except Exception:  # noqa: BLE001
            return None
        return password if isinstance(password, str) else None

    def set(self, peer_name: str, password: Optional[str]) -> bool:
        if not self._keyring:
            return False
        try:
            if password:
                self._keyring.set_password(KEYRING_SERVICE, peer_name, password)
            else:
                try:
                    self._keyring.delete_password(KEYRING_SERVICE, peer_name)
                except Exception:  # noqa: BLE001 - nothing stored
                    pass
            return True
        except Exception:  # noqa: BLE001
            return False


# --- load / save -----------------------------------------------------------------------

def parse_peers(section: Any) -> List[Peer]:
    if section is None:
        return []
    if not isinstance(section, dict):
        raise ConfigError("\"OrthancPeers\" must be an object mapping names to peers")
    peers = []
    for name, value in section.items():
        try:
            peers.append(Peer.from_orthanc(name, value))
        except PeerConfigError as exc:
            raise ConfigError(str(exc)) from None
    return peers


def import_orthanc_json(path: Path) -> Tuple[List[Peer], TransferOptions]:
    """Peers and transfer options from an Orthanc configuration file."""
    try:
        data = loads_with_comments(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    peers = parse_peers(data.get("OrthancPeers"))
    options = dict(data.get("Transfers") or {})
    if "HttpTimeout" in data and "HttpTimeout" not in options:
        options["HttpTimeout"] = data["HttpTimeout"]
    return peers, TransferOptions.from_json(options)


def load_config(path: Optional[Path] = None, secrets: Optional[SecretStore] = None) -> AppConfig:
    """Read the config; a missing file gives an empty config, a corrupt one is moved aside."""
    path = Path(path) if path else default_config_path()
    secrets = secrets or SecretStore()
    config = AppConfig(path=path, passwords_in_file=not secrets.available)
    if not path.exists():
        return config
    try:
        data = loads_with_comments(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object")
        config.peers = parse_peers(data.get("OrthancPeers"))
        config.transfers = TransferOptions.from_json(data.get("Transfers"))
        if isinstance(data.get("Ui"), dict):
            config.ui.update(data["Ui"])
    except (ValueError, UnicodeDecodeError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        config.recovered_from = aside
        log.warning("configuration %s is unreadable (%s); kept aside as %s", path, exc, aside)
        return config
    for peer in config.peers:
        if peer.username and not peer.password:
            peer.password = secrets.get(peer.name)
    return config


def save_config(config: AppConfig, secrets: Optional[SecretStore] = None) -> Path:
    """Write atomically with 0600 permissions; passwords to the keyring when possible."""
    secrets = secrets or SecretStore()
    path = config.path or default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    peers_json: Dict[str, Any] = {}
    in_file = False
    for peer in config.peers:
        stored = bool(peer.password) and secrets.set(peer.name, peer.password)
        entry = peer.to_orthanc(include_password=not stored)
        in_file = in_file or ("Password" in entry)
        peers_json[peer.name] = entry
    config.passwords_in_file = in_file or not secrets.available
    data = {"OrthancPeers": peers_json, "Transfers": config.transfers.to_json(), "Ui": config.ui}
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    config.path = path
    return path
