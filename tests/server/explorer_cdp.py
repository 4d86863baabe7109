"""Headless Chromium driven over its DevTools protocol, for the Orthanc
Explorer button test: start the browser, evaluate JavaScript on a page,
wait for a condition on the page, take screenshots.

Only what that test needs; messages that are not the answer to the call
in progress (events) are read and dropped.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from websockets.sync.client import ClientConnection, connect

from gui.sandbox.orthanc_process import free_port

# Without the background-networking switches Chromium keeps trying hosts
# that a closed network refuses; root needs --no-sandbox.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_binary() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab, over its DevTools WebSocket."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        call_id = next(self._ids)
        self._connection.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._connection.recv(timeout=60))
            if message.get("id") != call_id:
                continue  # an event, or a late answer
            if "error" in message:
                raise RuntimeError("%s failed: %s" % (method, message["error"]))
            result: Dict[str, Any] = message.get("result", {})
            return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError("%s threw: %s" % (expression, answer["exceptionDetails"].get("text")))
        return answer.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s" % what)
            time.sleep(0.1)  # polling the page: the condition lives in the browser

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


def open_browser(binary: str) -> Iterator[Page]:
    """A generator for a pytest fixture: yields a page, stops the browser after."""
    port = free_port()
    profile = tempfile.mkdtemp(prefix="chromium-")
    process = subprocess.Popen([binary, *CHROMIUM_FLAGS, "--remote-debugging-address=127.0.0.1",
                                "--remote-debugging-port=%d" % port, "--user-data-dir=" + profile,
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/json" % port, timeout=2) as answer:
                    pages = [t for t in json.load(answer) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert process.poll() is None, "chromium exited with status %s" % process.returncode
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as connection:
            page = Page(connection)
            page.call("Page.enable")
            page.call("Runtime.enable")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
