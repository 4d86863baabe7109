"""Start and stop real Orthanc servers on free loopback ports.

Used by the demo (``orthanc-transfers demo``), the tests and the benchmark.
Each server gets a temporary storage directory that is removed on stop.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from gui.resource_paths import resource_path

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")
PYTHON_PLUGIN = os.environ.get("ORTHANC_PYTHON_PLUGIN",
                               "/usr/share/orthanc/plugins/libOrthancPython.so")


def accelerator_plugin_script() -> Path:
    """The server plugin's entry script; MissingResourceError if not installed."""
    return resource_path("server_plugin", "transfers_accelerator.py")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class OrthancStartError(RuntimeError):
    pass


@dataclass
class OrthancProcess:
    """One Orthanc server process with temporary storage.

    ``with_accelerator`` loads this project's server-side plugin through
    orthanc-python. ``extra_config`` is merged into the configuration.
    """

    name: str = "orthanc"
    with_accelerator: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    extra_config: Dict[str, Any] = field(default_factory=dict)
    http_port: int = 0
    dicom_port: int = 0
    workdir: Optional[Path] = None
    keep_storage: bool = False
    process: Optional["subprocess.Popen[bytes]"] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def auth(self) -> Optional[Tuple[str, str]]:
        return (self.username, self.password or "") if self.username else None

    @property
    def storage_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "orthanc.log"

    def config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.name.upper().replace(" ", "_")[:16] or "ORTHANC",
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": True,
            "AuthenticationEnabled": bool(self.username),
            "ConcurrentJobs": 4,
            "HttpThreadsCount": 50,
            "StableAge": 1,
            "SaveJobs": False,
            "OrthancPeers": {},
            "DicomModalities": {},
            "Plugins": [],
        }
        if self.username:
            cfg["RegisteredUsers"] = {self.username: self.password or ""}
        if self.with_accelerator:
            cfg["Plugins"] = [PYTHON_PLUGIN]
            cfg["PythonScript"] = str(accelerator_plugin_script())
            cfg["PythonVerbose"] = False
        for key, value in self.extra_config.items():
            cfg[key] = value
        return cfg

    def start(self, timeout: float = 30.0) -> "OrthancProcess":
        if not os.path.exists(ORTHANC_BINARY):
            raise OrthancStartError(
                f"Orthanc is not installed ({ORTHANC_BINARY} is missing): apt-get install orthanc orthanc-python")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"orthanc-{self.name.replace(' ', '_')}-"))
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        last_error = None
        for _attempt in range(5):
            # A free port can be taken between choosing it and Orthanc binding it.
            if not self.http_port or _attempt:
                self.http_port = free_port()
            if not self.dicom_port or _attempt:
                self.dicom_port = free_port()
            cfg_path = self.workdir / "orthanc.json"
            cfg_path.write_text(json.dumps(self.config(), indent=2))
            os.chmod(cfg_path, 0o600)
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(
                [ORTHANC_BINARY, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            try:
                self.wait_ready(timeout)
                return self
            except OrthancStartError as exc:
                last_error = exc
                self._kill()
        raise OrthancStartError(f"{self.name}: Orthanc did not start: {last_error}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                timeout: float = 30.0, raw: bool = False) -> Any:
        """Blocking helper for fixtures: JSON in and out (bytes with ``raw``)."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            data = answer.read()
        if raw:
            return data
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise OrthancStartError(f"exited with status {self.process.returncode}")
            try:
                self.request("GET", "/system", timeout=2)
                if self.with_accelerator:
                    self.request("POST", "/transfers/lookup", b"[]", timeout=2)
                return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.1)
        raise OrthancStartError(f"not answering after {timeout:.0f} s")

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        self._kill()
        if self.workdir is not None and not self.keep_storage:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def restart(self, timeout: float = 30.0, while_stopped: Optional[Callable[[], None]] = None) -> None:
        """Stop and start again on the same ports with the same storage
        (``while_stopped`` runs in between: a test may damage the storage)."""
        self._kill()
        if while_stopped is not None:
            while_stopped()
        self.start(timeout)

    # --- conveniences for tests and the demo ------------------------------

    def upload(self, data: bytes) -> Any:
        return self.request("POST", "/instances", data)

    def instance_md5s(self) -> Dict[str, str]:
        """Every instance ID on this server with its stored MD5."""
        ids: List[str] = self.request("GET", "/instances") or []
        return {i: self.request("GET", f"/instances/{i}/attachments/dicom/md5", raw=True).decode().strip()
                for i in ids}

    def __enter__(self) -> "OrthancProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
