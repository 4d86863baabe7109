"""The plugin's options, read from the "Transfers" section of Orthanc's configuration.

The C++ plugin's option names keep their meaning; the options this plugin adds
are documented in docs/server-plugin.md. A bad value is reported in Orthanc's
log and replaced by the default, so a typo never keeps Orthanc from starting.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .codec import CODECS

MB = 1024 * 1024


@dataclass(frozen=True)
class Options:
    cache_size: int = 512 * MB            # CacheSize (MB): instance files kept for chunk GETs
    max_push_transactions: int = 4        # MaxPushTransactions
    commit_threads: int = 4               # CommitThreadsCount: instances one commit imports at once
    peer_timeout: float = 2.0             # PeerConnectivityTimeout (s): /transfers/peers probes
    staging_directory: str = ""           # StagingDirectory (default: <StorageDirectory>/transfers-staging)
    max_staged_size: int = 16384 * MB     # MaxStagedSize (MB): declared bytes of all open transactions
    min_free_disk: int = 1024 * MB        # MinFreeDiskSpace (MB): keep this free on the staging disk
    transaction_timeout: float = 3600.0   # TransactionTimeout (s): idle transactions are dropped
    max_instances: int = 100_000          # MaxInstancesPerTransaction
    max_buckets: int = 100_000            # MaxBucketsPerTransaction
    max_bucket_size: int = 256 * MB       # MaxBucketSize (MB): one bucket of a push transaction
    max_request_size: int = 64 * MB       # MaxRequestSize (MB): JSON bodies (lookup, push)
    max_answer_size: int = 256 * MB       # MaxChunksAnswerSize (MB): one chunks GET answer
    max_chunk_ids: int = 100              # MaxChunkIds: instances in one chunks URL
    max_lookup_resources: int = 10_000    # MaxLookupResources
    overwrite_instances: bool = False     # Orthanc's own "OverwriteInstances" (not in "Transfers")
    # Codecs: extension codecs announced to senders that ask ([]: gzip only, as the C++ plugin)
    codecs: tuple = ("split16-gzip", "split16-rle")
    # GzipLevel (1-9) of chunk answers: 1 favours speed (~3% more bytes on synthetic CT)
    gzip_level: int = 1
    # Orthanc's own storage (not in "Transfers"): where a piece of a large
    # instance is read from directly ("" when the files may be compressed)
    storage_directory: str = ""
    warnings: List[str] = field(default_factory=list, compare=False)


# option name -> (field, unit multiplier, minimum, maximum)
_NUMERIC = {
    "CacheSize": ("cache_size", MB, 0, 1 << 20),
    "MaxPushTransactions": ("max_push_transactions", 1, 1, 10_000),
    "CommitThreadsCount": ("commit_threads", 1, 1, 64),
    "PeerConnectivityTimeout": ("peer_timeout", 1, 1, 3600),
    "MaxStagedSize": ("max_staged_size", MB, 1, 1 << 30),
    "MinFreeDiskSpace": ("min_free_disk", MB, 0, 1 << 30),
    "TransactionTimeout": ("transaction_timeout", 1, 10, 10 ** 7),
    "MaxInstancesPerTransaction": ("max_instances", 1, 1, 10_000_000),
    "MaxBucketsPerTransaction": ("max_buckets", 1, 1, 10_000_000),
    "MaxBucketSize": ("max_bucket_size", MB, 1, 4096),
    "MaxRequestSize": ("max_request_size", MB, 1, 4096),
    "MaxChunksAnswerSize": ("max_answer_size", MB, 1, 4096),
    "MaxChunkIds": ("max_chunk_ids", 1, 1, 10_000),
    "MaxLookupResources": ("max_lookup_resources", 1, 1, 10_000_000),
    "GzipLevel": ("gzip_level", 1, 1, 9),
}


def parse_options(configuration: Dict[str, Any]) -> Options:
    """Options from Orthanc's whole configuration (a dict)."""
    section = configuration.get("Transfers") or {}
    warnings: List[str] = []
    if not isinstance(section, dict):
        warnings.append('"Transfers" must be a JSON object; using the defaults')
        section = {}
    values: Dict[str, Any] = {}
    for name, (attr, unit, low, high) in _NUMERIC.items():
        if name not in section:
            continue
        raw = section[name]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not low <= raw <= high:
            warnings.append("Transfers.%s: expected a number from %s to %s, got %r; using the default"
                            % (name, low, high, raw))
            continue
        values[attr] = type(getattr(Options, attr))(raw * unit)
    staging = section.get("StagingDirectory")
    if staging is not None and not isinstance(staging, str):
        warnings.append("Transfers.StagingDirectory: expected a path string; using the default")
        staging = None
    if not staging:
        storage = configuration.get("StorageDirectory") or "OrthancStorage"
        staging = os.path.join(storage, "transfers-staging")
    values["staging_directory"] = os.path.abspath(staging)
    if "Codecs" in section:
        codecs = section["Codecs"]
        if not isinstance(codecs, list) or any(c not in CODECS for c in codecs):
            warnings.append("Transfers.Codecs: expected a list of %s; using the default" % ", ".join(CODECS))
        else:
            values["codecs"] = tuple(codecs)
    values["overwrite_instances"] = configuration.get("OverwriteInstances") is True
    if configuration.get("StorageCompression") is not True:
        storage = configuration.get("StorageDirectory") or "OrthancStorage"
        if isinstance(storage, str):
            values["storage_directory"] = os.path.abspath(storage)
    return Options(warnings=warnings, **values)


def load_options(get_configuration: Callable[[], str]) -> Options:
    return parse_options(json.loads(get_configuration()))


def peer_credentials(configuration: Dict[str, Any], name: str) -> Optional[tuple]:
    """(username, password) of a peer declared in the configuration file, if any.

    Orthanc's Peers API gives names, URLs and user properties but no
    credentials, so they are read from "OrthancPeers" (both the array and
    the object forms Orthanc accepts).
    """
    peers = configuration.get("OrthancPeers") or {}
    entry = peers.get(name) if isinstance(peers, dict) else None
    if isinstance(entry, list) and len(entry) >= 3:
        return (str(entry[1]), str(entry[2]))
    if isinstance(entry, dict) and entry.get("Username"):
        return (str(entry["Username"]), str(entry.get("Password", "")))
    return None
