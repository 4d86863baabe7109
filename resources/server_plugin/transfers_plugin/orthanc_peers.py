"""The Orthanc peers a send or pull job talks to, as Orthanc declares them.

Orthanc's Peers API (``orthanc.GetPeers()``) gives each peer's name, URL
and user properties (``RemoteSelf``), but no credentials, headers or client
certificates: those are read from ``OrthancPeers`` in the configuration,
in both forms Orthanc accepts (``[url, user, password]`` and an object).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .errors import UNKNOWN_RESOURCE, PluginError


@dataclass
class PeerConfig:
    name: str
    url: str
    username: Optional[str] = None
    password: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)
    certificate_file: Optional[str] = None
    key_file: Optional[str] = None
    key_password: Optional[str] = None
    remote_self: Optional[str] = None     # the name this peer gives us, for pull mode
    timeout: Optional[float] = None       # the peer's own "Timeout" (s), else HttpTimeout

    def __repr__(self) -> str:  # never show the password in logs or errors
        return "PeerConfig(%r, %r)" % (self.name, self.url)


def _from_configuration(name: str, entry: Any) -> Optional[PeerConfig]:
    if isinstance(entry, list) and entry and isinstance(entry[0], str):
        peer = PeerConfig(name, entry[0])
        if len(entry) >= 3:
            peer.username, peer.password = str(entry[1]), str(entry[2])
        return peer
    if isinstance(entry, dict) and isinstance(entry.get("Url"), str):
        peer = PeerConfig(name, entry["Url"])
        if entry.get("Username"):
            peer.username = str(entry["Username"])
            peer.password = str(entry.get("Password", ""))
        headers = entry.get("HttpHeaders")
        if isinstance(headers, dict):
            peer.headers = {str(k): str(v) for k, v in headers.items()}
        for key, attr in (("CertificateFile", "certificate_file"), ("CertificateKeyFile", "key_file"),
                          ("CertificateKeyPassword", "key_password")):
            if isinstance(entry.get(key), str):
                setattr(peer, attr, entry[key])
        if isinstance(entry.get("RemoteSelf"), str):
            peer.remote_self = entry["RemoteSelf"]
        timeout = entry.get("Timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            peer.timeout = float(timeout)
        return peer
    return None


def peer_names(api: Any) -> List[str]:
    peers = api.GetPeers()
    return [peers.GetPeerName(n) for n in range(peers.GetPeersCount())]


def find_peer(api: Any, configuration: Dict[str, Any], name: Any) -> PeerConfig:
    """The peer called ``name``; an unknown name is a 404 that lists the known ones."""
    if not isinstance(name, str) or not name:
        raise PluginError(UNKNOWN_RESOURCE, "no peer given: \"Peer\" must name one of the OrthancPeers")
    peers = api.GetPeers()
    names = []
    for n in range(peers.GetPeersCount()):
        names.append(peers.GetPeerName(n))
        if names[-1] != name:
            continue
        declared = configuration.get("OrthancPeers") or {}
        entry = declared.get(name) if isinstance(declared, dict) else None
        peer = _from_configuration(name, entry) or PeerConfig(name, peers.GetPeerUrl(n))
        peer.url = peers.GetPeerUrl(n) or peer.url
        if peer.remote_self is None:
            try:
                remote_self = peers.GetPeerUserProperty(n, "RemoteSelf")
            except Exception:  # absent property
                remote_self = None
            if isinstance(remote_self, str) and remote_self:
                peer.remote_self = remote_self
        return peer
    raise PluginError(UNKNOWN_RESOURCE, "unknown peer %r: it is not one of this server's OrthancPeers (%s)"
                      % (name[:100], ", ".join(repr(n) for n in names) or "none declared"))


@dataclass(frozen=True)
class JobSettings:
    """The sending side's options (the C++ plugin's names), read for send and pull jobs."""

    threads: int = 4                  # Transfers.Threads: HTTP queries of one job at once
    bucket_size: int = 4096 * 1024    # Transfers.BucketSize (KB)
    max_retries: int = 0              # Transfers.MaxHttpRetries
    commit_timeout: float = 600.0     # Transfers.PeerCommitTimeout (s)
    http_timeout: float = 60.0        # Orthanc's HttpTimeout (s)
    concurrent_jobs: int = 2          # Orthanc's ConcurrentJobs: jobs running at once
    ca_file: Optional[str] = None     # Orthanc's HttpsCACertificates
    verify_peers: bool = True         # Orthanc's HttpsVerifyPeers


def _number(section: Dict[str, Any], key: str, default: float, low: float, high: float,
            warnings: List[str], where: str = "Transfers.") -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        warnings.append("%s%s: expected a number from %s to %s, got %r; using %s"
                        % (where, key, low, high, value, default))
        return default
    return value


def job_settings(configuration: Dict[str, Any], warnings: Optional[List[str]] = None) -> JobSettings:
    warnings = warnings if warnings is not None else []
    section = configuration.get("Transfers")
    section = section if isinstance(section, dict) else {}
    ca_file = configuration.get("HttpsCACertificates")
    return JobSettings(
        threads=int(_number(section, "Threads", 4, 1, 64, warnings)),
        bucket_size=int(_number(section, "BucketSize", 4096, 1, 256 * 1024, warnings)) * 1024,
        max_retries=int(_number(section, "MaxHttpRetries", 0, 0, 100, warnings)),
        commit_timeout=float(_number(section, "PeerCommitTimeout", 600, 1, 86400, warnings)),
        http_timeout=float(_number(configuration, "HttpTimeout", 60, 1, 86400, warnings, "")),
        concurrent_jobs=int(_number(configuration, "ConcurrentJobs", 2, 1, 64, warnings, "")),
        ca_file=ca_file if isinstance(ca_file, str) and ca_file else None,
        verify_peers=configuration.get("HttpsVerifyPeers", True) is not False,
    )
