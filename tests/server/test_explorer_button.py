"""The Orthanc Explorer button, clicked in a real (headless) Chromium.

Needs ``chromium`` and ``node`` (20 or later, for its WebSocket); skipped
without them. With ``ORTHANC_TRANSFERS_SCREENSHOTS=<prefix>`` it also saves
the screenshots the README shows (``<prefix>peers.png``, ``<prefix>done.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
DRIVER = Path(__file__).with_name("explorer_cdp.js")



def node_has_websocket() -> bool:
    if not NODE:
        return False
    probe = subprocess.run([NODE, "--experimental-websocket", "-e", "new WebSocket('ws://127.0.0.1:9')"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not (CHROMIUM and node_has_websocket()),
                                reason="needs chromium and node >= 20 (WebSocket)")


@pytest.fixture
def chromium():
    port = free_port()
    profile = tempfile.mkdtemp(prefix="chromium-")
    process = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=%d" % port,
                                "--user-data-dir=" + profile, "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        yield pages[0]["webSocketDebuggerUrl"]
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def test_the_button_lists_peers_sends_and_shows_the_outcome(orthanc_factory, chromium):
    archive = orthanc_factory("archive")
    dst = orthanc_factory("dst", with_accelerator=True)
    src = orthanc_factory("hospital", with_accelerator=True, extra_config={
        "OrthancPeers": {"dst": {"Url": dst.url}, "archive": [archive.url]}})
    spec = synth.make_study_spec(3, "CT CHEST")
    for data in synth.ct_series(spec, 8, seed=3):
        study = src.upload(data)["ParentStudy"]
    command = [NODE, "--experimental-websocket", str(DRIVER), chromium,
               "%s/app/explorer.html#study?uuid=%s" % (src.url, study), "dst"]
    if os.environ.get("ORTHANC_TRANSFERS_SCREENSHOTS"):
        command.append(os.environ["ORTHANC_TRANSFERS_SCREENSHOTS"])
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    stages = {line["stage"]: line["text"] for line in map(json.loads, result.stdout.splitlines())}
    assert stages["button"].strip() == "Transfers accelerator"
    assert "dst — transfers plugin" in stages["peers"] and "archive — no transfers plugin" in stages["peers"]
    assert "Sent to dst: 8 instance(s) checked by MD5 there" in stages["outcome"]
    assert dst.instance_md5s() == src.instance_md5s()
