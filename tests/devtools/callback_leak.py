"""``python -m tests.devtools.callback_leak``: does this orthanc-python keep request bodies?

Starts a bare Orthanc (no project code) with a Python REST callback that
ignores its request, sends it ``--requests`` PUTs of ``--kb`` KB, and prints
how much the server's RSS and the memory Python allocated outside any
Python frame grew per request. With orthanc-python 4.0 (Debian 4.0+ds-1)
both grow by the whole body every time: the keyword arguments given to a
REST callback are never released. The plugin's routes receive every pushed
bucket, so a plugin server's RSS grows by the bytes pushed to it
(docs/reliability.md, "Load"). Run it again on a new orthanc-python build.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SCRIPT = '''
import orthanc, tracemalloc
tracemalloc.start(1)
def ignore(output, uri, **request):
    output.AnswerBuffer(b"ok", "text/plain")
def unframed(output, uri, **request):
    size = sum(s.size for s in tracemalloc.take_snapshot().statistics("filename")
               if s.traceback[0].filename == "<unknown>")
    output.AnswerBuffer(str(size).encode(), "text/plain")
orthanc.RegisterRestCallback("/leak-probe/ignore", ignore)
orthanc.RegisterRestCallback("/leak-probe/unframed", unframed)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.devtools.callback_leak")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--kb", type=int, default=64)
    parser.add_argument("--orthanc", default="/usr/sbin/Orthanc")
    parser.add_argument("--python-plugin", default="/usr/share/orthanc/plugins/libOrthancPython.so")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="callback-leak-") as tmp:
        port = _free_port()
        (Path(tmp) / "probe.py").write_text(SCRIPT)
        (Path(tmp) / "config.json").write_text(json.dumps({
            "Name": "callback-leak", "HttpPort": port, "DicomServerEnabled": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "StorageDirectory": f"{tmp}/db", "IndexDirectory": f"{tmp}/db",
            "Plugins": [args.python_plugin], "PythonScript": f"{tmp}/probe.py"}))
        server = subprocess.Popen([args.orthanc, f"{tmp}/config.json"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def get(path: str) -> bytes:
                conn.request("GET", path)
                return conn.getresponse().read()

            for _ in range(300):   # until the callbacks are registered
                try:
                    get("/leak-probe/unframed")
                    break
                except OSError:
                    conn.close()
                    time.sleep(0.1)
            else:
                raise SystemExit("Orthanc did not start")
            process = psutil.Process(server.pid)
            body = b"x" * (args.kb * 1024)
            for _ in range(20):     # warm-up: thread pools, allocator arenas
                conn.request("PUT", "/leak-probe/ignore", body=body)
                conn.getresponse().read()
            rss0, py0 = process.memory_info().rss, int(get("/leak-probe/unframed"))
            for _ in range(args.requests):
                conn.request("PUT", "/leak-probe/ignore", body=body)
                conn.getresponse().read()
            rss1, py1 = process.memory_info().rss, int(get("/leak-probe/unframed"))
        finally:
            server.terminate()
            server.wait(30)
    n = args.requests
    result = {"requests": n, "body_kb": args.kb,
              "rss_growth_kb_per_request": round((rss1 - rss0) / 1024 / n, 1),
              "unframed_python_growth_kb_per_request": round((py1 - py0) / 1024 / n, 1)}
    result["keeps_bodies"] = result["unframed_python_growth_kb_per_request"] > args.kb / 2
    print(json.dumps(result, indent=2))
    return 1 if result["keeps_bodies"] else 0


if __name__ == "__main__":
    sys.exit(main())
