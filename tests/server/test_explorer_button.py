"""The Orthanc Explorer button, clicked in a real (headless) Chromium.

The README's test command installs Debian's ``chromium``. With
``ORTHANC_TRANSFERS_SCREENSHOTS=<prefix>`` the test also saves the
screenshots the README shows (``<prefix>peers.png``, ``<prefix>done.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gui.sandbox import synthetic_studies as synth
from tests.server.explorer_cdp import Page, chromium_binary, open_browser

PANEL = "$('#transfers-accelerator-study')"
BUTTON = "$('#transfers-accelerator-button-study')"


@pytest.fixture
def page():
    binary = chromium_binary()
    assert binary, "chromium is not installed (./scripts/run-tests.sh installs it)"
    yield from open_browser(binary)


def test_the_button_lists_peers_sends_and_shows_the_outcome(orthanc_factory, page: Page):
    archive = orthanc_factory("archive")
    dst = orthanc_factory("dst", with_accelerator=True)
    src = orthanc_factory("hospital", with_accelerator=True, extra_config={
        "OrthancPeers": {"dst": {"Url": dst.url}, "archive": [archive.url]}})
    spec = synth.make_study_spec(3, "CT CHEST")
    for data in synth.ct_series(spec, 8, seed=3):
        study = src.upload(data)["ParentStudy"]
    shots = os.environ.get("ORTHANC_TRANSFERS_SCREENSHOTS")

    page.call("Emulation.setDeviceMetricsOverride", width=1100, height=640, deviceScaleFactor=1, mobile=False)
    page.call("Page.navigate", url="%s/app/explorer.html#study?uuid=%s" % (src.url, study))
    page.wait_for("typeof $ !== 'undefined' && %s.length > 0 && $('#study-info li').length > 0" % BUTTON,
                  "the button")
    assert page.evaluate(BUTTON + ".text()").strip() == "Transfers accelerator"

    page.evaluate(BUTTON + ".click()")
    page.wait_for(PANEL + ".find('a[data-peer]').length > 0", "the peers")
    peers = page.evaluate(PANEL + ".text()")
    assert "dst — transfers plugin" in peers and "archive — no transfers plugin" in peers
    if shots:
        page.screenshot(Path(shots + "peers.png"))

    page.evaluate(PANEL + ".find('a[data-peer=\"dst\"]').click()")
    page.wait_for("/Sent to|Failed|Not started/.test(%s.text())" % PANEL, "the outcome", timeout=60)
    assert "Sent to dst: 8 instance(s) checked by MD5 there" in page.evaluate(PANEL + ".text()")
    if shots:
        page.screenshot(Path(shots + "done.png"))
    assert dst.instance_md5s() == src.instance_md5s()
