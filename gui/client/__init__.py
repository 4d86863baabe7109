"""Async Orthanc REST client (httpx)."""

from gui.client.errors import OrthancError, redact_url
from gui.client.orthanc_client import AcceleratorInfo, OrthancClient, ServerInfo
from gui.client.peer import Peer, PeerConfigError

__all__ = ["OrthancError", "redact_url", "OrthancClient", "ServerInfo", "AcceleratorInfo",
           "Peer", "PeerConfigError"]
