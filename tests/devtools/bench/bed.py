"""The benchmark's test bed: Orthanc servers and the proxies between them.

Two pairs of servers:

- stock source -> stock target, for Orthanc's own paths (peer store,
  C-STORE), the naive copy and the engine's plain mode. The source knows the
  target as peer ``bench`` and modality ``bench`` whose URL / DICOM port are
  proxies in front of the target;
- accelerated source -> accelerated target (this project's server plugin),
  for the engine's push mode (target behind a proxy) and pull mode (source
  behind a proxy).

Every proxy gets the same link settings, so every path crosses the same
emulated link.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from tests.devtools.bench.links import Link
from tests.devtools.netem import ThreadedWanProxy
from gui.resource_paths import MissingResourceError
from gui.sandbox.orthanc_process import OrthancProcess, OrthancStartError, accelerator_plugin_script

log = logging.getLogger(__name__)

PEER_NAME = "bench"
TARGET_AET = "BENCH_TARGET"
# Long operations through a 10 Mbit/s link: a 200 MB instance takes minutes.
LONG_TIMEOUT_S = 7200


def dataset_md5(dicom_file: bytes) -> str:
    """MD5 of a DICOM file without its preamble and file meta group.

    C-STORE does not carry the file meta group: the receiver writes its own
    (e.g. its implementation UID), so the file's MD5 changes while the
    dataset is the same. This digest compares what C-STORE does carry.
    """
    start = 0
    if dicom_file[128:132] == b"DICM" and dicom_file[132:136] == b"\x02\x00\x00\x00":
        # (0002,0000) UL, explicit VR: tag 4 + VR 2 + length 2, then the group length.
        group_length = struct.unpack("<I", dicom_file[140:144])[0]
        start = 144 + group_length
    return hashlib.md5(memoryview(dicom_file)[start:]).hexdigest()


@dataclass
class Uploaded:
    studies: List[str] = field(default_factory=list)    # Orthanc IDs, in upload order
    patients: List[str] = field(default_factory=list)
    digests: Dict[str, str] = field(default_factory=dict)  # instance ID -> dataset_md5

    def collect(self, futures: List[Tuple[concurrent.futures.Future, str]]) -> None:
        for future, digest in futures:
            answer = future.result()
            if isinstance(answer, dict):
                for key, seen in (("ParentStudy", self.studies), ("ParentPatient", self.patients)):
                    if answer.get(key) and answer[key] not in seen:
                        seen.append(answer[key])
                self.digests[answer["ID"]] = digest


class BenchBed:
    """Start with :meth:`start`, stop with :meth:`stop` (or use ``with``)."""

    def __init__(self, stock: bool = True, accelerated: bool = True) -> None:
        self.want_stock = stock
        self.want_accelerated = accelerated
        self.stock_source: Optional[OrthancProcess] = None
        self.stock_target: Optional[OrthancProcess] = None
        self.accel_source: Optional[OrthancProcess] = None
        self.accel_target: Optional[OrthancProcess] = None
        self.proxies: Dict[str, ThreadedWanProxy] = {}
        self.accelerated_problem: Optional[str] = None
        self._servers: List[OrthancProcess] = []

    # --- life cycle ------------------------------------------------------

    def start(self) -> "BenchBed":
        try:
            if self.want_stock:
                self._start_stock()
            if self.want_accelerated:
                self._start_accelerated()
        except BaseException:
            self.stop()
            raise
        return self

    def _server(self, name: str, **kwargs) -> OrthancProcess:  # type: ignore[no-untyped-def]
        server = OrthancProcess(name=name, **kwargs)
        self._servers.append(server)
        return server.start()

    def _proxy(self, key: str, port: int) -> ThreadedWanProxy:
        proxy = ThreadedWanProxy("127.0.0.1", port).start()
        self.proxies[key] = proxy
        return proxy

    def _start_stock(self) -> None:
        self.stock_target = self._server("bench_target")
        http = self._proxy("stock-http", self.stock_target.http_port)
        dicom = self._proxy("stock-dicom", self.stock_target.dicom_port)
        self.stock_source = self._server("bench_source", extra_config={
            "OrthancPeers": {PEER_NAME: {"Url": http.url + "/"}},
            "DicomModalities": {PEER_NAME: [TARGET_AET, "127.0.0.1", dicom.port]},
            "HttpTimeout": LONG_TIMEOUT_S,
            "DicomScuTimeout": LONG_TIMEOUT_S,
            # Orthanc's default, as the engine's MaxConcurrentJobs (2): the queued
            # dataset's ten store jobs run two at a time, like the engine's ten jobs.
            "ConcurrentJobs": 2,
        })
        # Retrieve: the engine beside the target, the source across the link.
        self._proxy("stock-source-http", self.stock_source.http_port)

    def _start_accelerated(self) -> None:
        try:
            accelerator_plugin_script()
        except MissingResourceError as exc:
            self.accelerated_problem = str(exc)
            return
        try:
            self.accel_target = self._server("bench_accel_target", with_accelerator=True)
            self.accel_source = self._server("bench_accel_source", with_accelerator=True)
        except OrthancStartError as exc:
            first_line = str(exc).splitlines()[0]
            self.accelerated_problem = f"Orthanc with the server plugin did not start: {first_line}"
            return
        self._proxy("accel-push", self.accel_target.http_port)   # engine -> proxy -> target
        self._proxy("accel-pull", self.accel_source.http_port)   # engine -> proxy -> source

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        self.proxies.clear()
        for server in self._servers:
            server.stop()
        self._servers.clear()

    def __enter__(self) -> "BenchBed":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- link and counters -----------------------------------------------

    def set_link(self, link: Link) -> None:
        for proxy in self.proxies.values():
            proxy.set_link(link.one_way_ms, link.bandwidth_mbit)

    def reset_counters(self) -> None:
        for proxy in self.proxies.values():
            proxy.reset_stats()

    def wire_bytes(self) -> Tuple[int, int]:
        """(up, down) bytes forwarded by every proxy since the last reset."""
        up = down = 0
        for proxy in self.proxies.values():
            stats = proxy.stats
            up += stats.bytes_up
            down += stats.bytes_down
        return up, down

    # --- data ------------------------------------------------------------

    @property
    def sources(self) -> List[OrthancProcess]:
        return [s for s in (self.stock_source, self.accel_source) if s is not None]

    @property
    def targets(self) -> List[OrthancProcess]:
        return [s for s in (self.stock_target, self.accel_target) if s is not None]

    def upload(self, files: Iterable[bytes]) -> "Uploaded":
        """Upload to every source; the studies and patients it made, in order, and
        the :func:`dataset_md5` of each instance."""
        uploaded = Uploaded()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pending: List[Tuple[concurrent.futures.Future, str]] = []
            for data in files:
                digest = dataset_md5(data)
                pending += [(pool.submit(src.request, "POST", "/instances", data, LONG_TIMEOUT_S), digest)
                            for src in self.sources]
                # Bounded window: large instances must not pile up in memory.
                if len(pending) >= 16:
                    uploaded.collect(pending[:8])
                    pending = pending[8:]
            uploaded.collect(pending)
        return uploaded

    @staticmethod
    def clear(server: OrthancProcess) -> None:
        """Delete everything on ``server`` (the target is reset between runs)."""
        for patient in server.request("GET", "/patients") or []:
            server.request("DELETE", f"/patients/{patient}", timeout=LONG_TIMEOUT_S)

    def clear_sources(self) -> None:
        for server in self.sources:
            self.clear(server)

    @staticmethod
    def md5s(server: OrthancProcess, instance_ids: Iterable[str]) -> Dict[str, Optional[str]]:
        """MD5 of each instance as stored on ``server``; None for a missing one."""
        def one(instance: str) -> Tuple[str, Optional[str]]:
            try:
                raw = server.request("GET", f"/instances/{instance}/attachments/dicom/md5", raw=True)
                return instance, raw.decode().strip()
            except OSError:  # urllib's HTTPError (404) is an OSError
                return instance, None
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, list(instance_ids)))

    @staticmethod
    def dataset_md5s(server: OrthancProcess, instance_ids: Iterable[str]) -> Dict[str, Optional[str]]:
        """:func:`dataset_md5` of each instance on ``server``; None for a missing one."""
        def one(instance: str) -> Tuple[str, Optional[str]]:
            try:
                return instance, dataset_md5(server.request("GET", f"/instances/{instance}/file",
                                                            timeout=LONG_TIMEOUT_S, raw=True))
            except OSError:
                return instance, None
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return dict(pool.map(one, list(instance_ids)))


class StagingSampler:
    """Samples a plugin server's staging area while a transfer runs: the bytes
    really in its staging directory, and what its open transactions announced
    (the plugin's ``transfers_staged_bytes_reserved`` metric), at their peaks.

    ``GET /transfers/storage`` gives the server's storage, not its staging
    area, so the directory itself is measured; the plugin's bound for it is
    ``MaxStagedSize`` (declared bytes of all open transactions)."""

    def __init__(self, server: OrthancProcess, interval: float = 0.1) -> None:
        self.server = server
        self.interval = interval
        self.peak_bytes = 0           # everything in the staging directory
        self.peak_data_bytes = 0      # the staged instance files alone (``*.dcm``)
        self.peak_reserved = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._before: Dict[str, int] = {}

    @property
    def directory(self) -> Path:
        staging = (self.server.config().get("Transfers") or {}).get("StagingDirectory")
        return Path(staging) if staging else self.server.storage_dir / "transfers-staging"

    def _metrics(self) -> Dict[str, int]:
        """The plugin's staging metrics, by name; empty when they cannot be read."""
        try:
            text = self.server.request("GET", "/tools/metrics-prometheus", raw=True).decode()
        except OSError:
            return {}
        values: Dict[str, int] = {}
        for line in text.splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("transfers_staged_bytes"):
                try:
                    values[name] = int(float(rest.split()[0]))
                except (IndexError, ValueError):
                    pass
        return values

    def _run(self) -> None:
        from tests.devtools.bench.engine_cli import directory_bytes
        directory = self.directory
        while True:
            data: List[int] = []
            self.peak_bytes = max(self.peak_bytes, directory_bytes(directory, data_suffix=".dcm", data=data))
            self.peak_data_bytes = max(self.peak_data_bytes, sum(data))
            reserved = self._metrics().get("transfers_staged_bytes_reserved")
            if reserved is not None:
                self.peak_reserved = max(self.peak_reserved, reserved)
            self.samples += 1
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> "StagingSampler":
        self._before = self._metrics()
        self._thread = threading.Thread(target=self._run, name="staging-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # A job shorter than the sampling interval can come and go between two
        # samples; the plugin's high-water marks, when they rose during the
        # run, are this run's peaks (they only ever grow).
        after = self._metrics()
        for name, attribute in (("transfers_staged_bytes_peak", "peak_data_bytes"),
                                ("transfers_staged_bytes_reserved_peak", "peak_reserved")):
            if after.get(name, 0) > self._before.get(name, 0):
                setattr(self, attribute, max(getattr(self, attribute), after[name]))
        self.peak_bytes = max(self.peak_bytes, self.peak_data_bytes)
