"""``GET /transfers/peers``: which configured Orthanc peers speak the protocol.

A peer is probed with an empty lookup (``POST /transfers/lookup`` with
``[]``), which every server with the C++ plugin or this one answers with a
JSON object holding ``Instances``. Probes run in parallel with a short
timeout (``PeerConnectivityTimeout``), so one dead peer costs seconds, not
minutes.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional

from .config import peer_credentials
from .safe_json import json_too_deep


def probe(url: str, credentials: Optional[tuple], timeout: float) -> bool:
    request = urllib.request.Request(url.rstrip("/") + "/transfers/lookup", data=b"[]", method="POST")
    if credentials:
        token = base64.b64encode(("%s:%s" % credentials).encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            data = answer.read(1 << 20)
        if json_too_deep(data):
            return False
        body = json.loads(data)
        return isinstance(body, dict) and isinstance(body.get("Instances"), list)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def peers_status(api: Any, configuration: Callable[[], Dict[str, Any]], timeout: float) -> Dict[str, str]:
    peers = api.GetPeers()
    config = configuration()
    entries: List[tuple] = []
    for n in range(peers.GetPeersCount()):
        name, url = peers.GetPeerName(n), peers.GetPeerUrl(n)
        try:
            remote_self = peers.GetPeerUserProperty(n, "RemoteSelf")
        except Exception:  # absent property
            remote_self = None
        entries.append((name, url, bool(remote_self)))
    result: Dict[str, str] = {}

    def run(name: str, url: str, remote_self: bool) -> None:
        ok = probe(url, peer_credentials(config, name), timeout)
        result[name] = ("bidirectional" if remote_self else "installed") if ok else "disabled"

    threads = [threading.Thread(target=run, args=entry, daemon=True) for entry in entries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    for name, _, _ in entries:
        result.setdefault(name, "disabled")
    return result
