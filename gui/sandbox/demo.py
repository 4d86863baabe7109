"""The embedded default: two local demo Orthanc servers with sample studies.

``orthanc-transfers-gui --demo`` (the README's *run* command) starts them on
free loopback ports with temporary storage, with this project's accelerator
plugin loaded when orthanc-python is installed, fills "Local demo" with
generated studies and "Remote demo" with one study of its own, and writes a
private config naming them as the app's peers. Quitting the app stops them
and removes their storage.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

from gui.client.peer import Peer
from gui.config.settings import AppConfig, save_config
from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import PYTHON_PLUGIN, OrthancProcess, accelerator_plugin_script, free_port

log = logging.getLogger(__name__)

LOCAL_NAME = "Local demo"
REMOTE_NAME = "Remote demo"


def accelerator_available() -> bool:
    """Whether the demo servers can load the accelerator: orthanc-python is
    installed (a system package, so its absence is only a warning). The
    plugin itself ships with the app; a missing one raises
    MissingResourceError rather than quietly starting stock servers."""
    accelerator_plugin_script()
    if not os.path.exists(PYTHON_PLUGIN):
        log.warning("demo servers start without the accelerator: orthanc-python is not installed"
                    " (%s is missing)", PYTHON_PLUGIN)
        return False
    return True


class DemoServers:
    def __init__(self, studies: int = 4, ct_slices: int = 24, with_accelerator: Optional[bool] = None) -> None:
        self.studies = studies
        self.ct_slices = ct_slices
        self.with_accelerator = accelerator_available() if with_accelerator is None else with_accelerator
        self.servers: List[OrthancProcess] = []
        self.workdir: Optional[Path] = None

    def start(self) -> AppConfig:
        """Start both servers, load samples, return a config naming them."""
        self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-transfers-demo-"))
        # Each server knows the other as an Orthanc peer, so that with the
        # plugin they can also send server to server (delegated mode).
        ports = [free_port(), free_port()]
        urls = ["http://127.0.0.1:%d" % port for port in ports]
        local = OrthancProcess("Local demo", with_accelerator=self.with_accelerator, http_port=ports[0],
                               extra_config={"OrthancPeers": {"remote": {"Url": urls[1]}}})
        remote = OrthancProcess("Remote demo", with_accelerator=self.with_accelerator, http_port=ports[1],
                                extra_config={"OrthancPeers": {"local": {"Url": urls[0]}}})
        try:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda s: s.start(), (local, remote)))
        finally:
            self.servers = [s for s in (local, remote) if s.process is not None]
        if len(self.servers) != 2:
            self.stop()
            raise RuntimeError("the demo Orthanc servers did not start")
        files = synth.sample_collection(seed=1, studies=self.studies, ct_slices=self.ct_slices, tiny=8)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(local.upload, files))
        spec = synth.make_study_spec(9001, "MR KNEE (already remote)")
        for data in synth.ct_series(spec, 6, rows=256, cols=256, seed=9001):
            remote.upload(data)
        config = AppConfig(path=self.workdir / "config.json")
        config.peers = [Peer(LOCAL_NAME, local.url, local=True), Peer(REMOTE_NAME, remote.url)]
        config.ui["ConfirmTransfers"] = True
        save_config(config)
        return config

    def accelerator_summary(self) -> str:
        """What the user is told: both servers accelerated or neither (why)."""
        if self.with_accelerator:
            return "both with the transfers accelerator"
        return f"without the transfers accelerator (needs orthanc-python: {PYTHON_PLUGIN})"

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []
        if self.workdir is not None:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> AppConfig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
