"""GET /transfers/peers: which configured peers speak the protocol."""

from __future__ import annotations

from gui.protocol import wire
from gui.sandbox.orthanc_process import free_port
from tests.server.push_helpers import PluginHttp


def test_peers_are_probed_for_the_protocol(orthanc_factory):
    accelerated = orthanc_factory("accelerated", with_accelerator=True, username="bob", password="pw")
    stock = orthanc_factory("stock")
    peers = {
        "accel": {"Url": accelerated.url + "/", "Username": "bob", "Password": "pw"},
        "accel-both": {"Url": accelerated.url, "Username": "bob", "Password": "pw", "RemoteSelf": "me"},
        "accel-array": [accelerated.url, "bob", "pw"],
        "accel-no-auth": {"Url": accelerated.url},
        "stock": [stock.url],
        "dead": ["http://127.0.0.1:%d/" % free_port()],
    }
    server = orthanc_factory("asker", with_accelerator=True, extra_config={
        "OrthancPeers": peers, "Transfers": {"PeerConnectivityTimeout": 2}})
    http = PluginHttp(server)
    try:
        answer = http.client.get(wire.URI_PEERS)
        assert answer.status_code == 200
        assert answer.json() == {
            "accel": "installed", "accel-both": "bidirectional", "accel-array": "installed",
            "accel-no-auth": "disabled", "stock": "disabled", "dead": "disabled",
        }
        assert http.post_json(wire.URI_PEERS, b"").status_code == 405
    finally:
        http.close()


def test_no_peers_gives_an_empty_object(http):
    assert http.client.get(wire.URI_PEERS).json() == {}
