"""The plugin's HTTP client to peers: a kept-alive connection the peer closed is not a failure.

Real Orthanc servers sometimes close an idle kept-alive connection (seen as a
"Broken pipe" on a bucket PUT of a send job, one in a few hundred), which a
test cannot provoke on demand: this tiny server closes every connection after
one answer without saying so, as such a server does.
"""

from __future__ import annotations

import socket
import threading

from gui.resources.server_plugin.transfers_plugin.orthanc_peers import PeerConfig
from gui.resources.server_plugin.transfers_plugin.peer_http import PeerHttp


def one_answer_per_connection(listener: socket.socket, answers: list) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
            if not data:
                continue
            answers.append(data.split(b" ", 2)[1])
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


def test_a_connection_closed_by_the_peer_is_reopened_not_failed():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    answers: list = []
    thread = threading.Thread(target=one_answer_per_connection, args=(listener, answers), daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    client = PeerHttp(PeerConfig("closer", "http://127.0.0.1:%d/" % port), timeout=5, retries=0)
    try:
        for n in range(5):
            assert client.json("GET", "/system?n=%d" % n) == {}
    finally:
        client.close()
        listener.close()
    assert answers == [b"/system?n=%d" % n for n in range(5)]
