"""How to reach one Orthanc server: the shape of Orthanc's ``OrthancPeers`` entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


class PeerConfigError(ValueError):
    """A peer definition cannot be used; the text says which field and why."""


@dataclass
class Peer:
    name: str
    url: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    http_headers: Dict[str, str] = field(default_factory=dict, repr=False)
    ca_bundle: Optional[str] = None          # extra CA file to trust (None: system CAs)
    certificate_file: Optional[str] = None   # client certificate (mutual TLS)
    certificate_key_file: Optional[str] = None
    certificate_key_password: Optional[str] = field(default=None, repr=False)
    timeout: Optional[float] = None          # seconds; None: the app's HttpTimeout
    verify_tls: bool = True
    remote_self: Optional[str] = None
    local: bool = False

    def __post_init__(self) -> None:
        self.url = normalise_url(self.url)

    @property
    def is_plain_http_to_remote(self) -> bool:
        parts = urlsplit(self.url)
        return parts.scheme == "http" and (parts.hostname or "") not in LOOPBACK_HOSTS

    # --- OrthancPeers shapes -------------------------------------------------

    @classmethod
    def from_orthanc(cls, name: str, value: Any) -> "Peer":
        """Accept ``[url, user, password]`` or the object form of OrthancPeers."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) for v in value) or len(value) not in (1, 3):
                raise PeerConfigError(f"peer {name!r}: the array form is [url] or [url, user, password]")
            user, password = (value[1], value[2]) if len(value) == 3 else (None, None)
            return cls.from_url(name, value[0], username=user, password=password)
        if not isinstance(value, dict):
            raise PeerConfigError(f"peer {name!r}: expected an array or an object")
        url = value.get("Url")
        if not isinstance(url, str):
            raise PeerConfigError(f"peer {name!r}: missing \"Url\"")
        headers = value.get("HttpHeaders") or {}
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in headers.items()):
            raise PeerConfigError(f"peer {name!r}: \"HttpHeaders\" must map names to strings")
        timeout = value.get("Timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise PeerConfigError(f"peer {name!r}: \"Timeout\" must be a positive number of seconds")
        return cls.from_url(
            name, url,
            username=_opt_str(value, "Username", name),
            password=_opt_str(value, "Password", name),
            http_headers=dict(headers),
            ca_bundle=_opt_str(value, "CaBundle", name),
            certificate_file=_opt_str(value, "CertificateFile", name),
            certificate_key_file=_opt_str(value, "CertificateKeyFile", name),
            certificate_key_password=_opt_str(value, "CertificateKeyPassword", name),
            timeout=float(timeout) if timeout else None,
            verify_tls=bool(value.get("VerifyTls", True)),
            remote_self=_opt_str(value, "RemoteSelf", name),
            local=bool(value.get("Local", False)),
        )

    @classmethod
    def from_url(cls, name: str, url: str, **kwargs: Any) -> "Peer":
        """Build a peer from a URL that may carry ``user:password@``."""
        parts = _split(url, name)
        if parts.username is not None and not kwargs.get("username"):
            kwargs["username"] = unquote(parts.username)
            kwargs["password"] = unquote(parts.password or "")
        return cls(name=name, url=url, **kwargs)

    def to_orthanc(self, include_password: bool = True) -> Dict[str, Any]:
        out: Dict[str, Any] = {"Url": self.url}
        if self.username:
            out["Username"] = self.username
        if self.password and include_password:
            out["Password"] = self.password
        if self.http_headers:
            out["HttpHeaders"] = dict(self.http_headers)
        for key, value in (("CaBundle", self.ca_bundle), ("CertificateFile", self.certificate_file),
                           ("CertificateKeyFile", self.certificate_key_file),
                           ("Timeout", self.timeout), ("RemoteSelf", self.remote_self)):
            if value:
                out[key] = value
        if self.certificate_key_password and include_password:
            out["CertificateKeyPassword"] = self.certificate_key_password
        if not self.verify_tls:
            out["VerifyTls"] = False
        if self.local:
            out["Local"] = True
        return out


def _opt_str(value: Dict[str, Any], key: str, name: str) -> Optional[str]:
    item = value.get(key)
    if item is None:
        return None
    if not isinstance(item, str):
        raise PeerConfigError(f"peer {name!r}: \"{key}\" must be a string")
    return item


def _split(url: str, name: str = "peer") -> SplitResult:
    if not isinstance(url, str) or not url.strip():
        raise PeerConfigError(f"{name}: the URL is empty")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise PeerConfigError(f"{name}: malformed URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise PeerConfigError(f"{name}: the URL must start with http:// or https://")
    if not parts.hostname:
        raise PeerConfigError(f"{name}: the URL has no host name")
    return parts


def normalise_url(url: str) -> str:
    """Remove credentials and the trailing slash; keep any path prefix."""
    parts = _split(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return str(urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", "")))
