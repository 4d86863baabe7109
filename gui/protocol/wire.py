"""The transfers accelerator wire format: one module, shared by both ends.

This file is imported by the desktop engine *and* loaded by the server-side
plugin running inside Orthanc's embedded Python, so it must depend on the
standard library only and must not use package-relative imports.

Everything here follows ``docs/protocol.md``: instance infos, chunks and buckets
as JSON, the bucket planner (§2), chunk URLs, and the JSON bodies of the
push/lookup endpoints.  Parsing is strict: a peer that sends a number where
the protocol wants a decimal string, or an ID that is not an Orthanc ID, gets
a :class:`WireFormatError` naming the offending field.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

__all__ = [
    "WIRE_FORMAT_VERSION", "WireFormatError", "InstanceInfo", "Chunk", "Bucket", "plan_buckets",
    "is_orthanc_id", "check_orthanc_id", "parse_decimal", "parse_compression",
    "parse_instance_info", "parse_bucket", "parse_resources",
    "parse_lookup_answer", "parse_push_request", "build_lookup_answer",
    "build_push_request", "chunks_uri", "parse_chunk_ids", "COMPRESSIONS",
    "LEVELS", "MAX_PULL_URL_LENGTH", "URI_CHUNKS", "URI_LOOKUP", "URI_PUSH",
    "URI_PEERS", "URI_SEND", "URI_PULL", "URI_STORAGE", "SENDER_TRANSFER_ID_HEADER",
    "COMMIT_STAGING", "COMMIT_PENDING", "COMMIT_SUCCESS", "COMMIT_FAILURE",
    "CommitStatus", "commit_uri", "build_commit_status", "parse_commit_status",
    "CODEC_SPLIT16", "CODEC_SPLIT16_RLE", "CODECS", "LEGACY_CODECS", "CODEC_CONTENT_TYPE", "parse_codec",
    "parse_codec_list", "codec_of_content_type", "split16", "join16", "CodecError", "encode_split16_rle",
    "decode_split16_rle",
]

# The version of this module's shapes and rules, checked by the server plugin
# when it loads a copy (transfers_wire.py): raise it with any change the
# plugin depends on, together with EXPECTED_WIRE_FORMAT in
# resources/server_plugin/transfers_plugin/wire_loader.py.
WIRE_FORMAT_VERSION = 3

# Orthanc IDs: SHA-1 as five dash-separated groups of 8 lowercase hex digits.
ORTHANC_ID_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
MD5_RE = re.compile(r"^[0-9a-f]{32}$")
DECIMAL_RE = re.compile(r"^[0-9]{1,20}$")

COMPRESSIONS = ("none", "gzip")
LEVELS = ("Patient", "Study", "Series", "Instance")

URI_LOOKUP = "/transfers/lookup"
URI_CHUNKS = "/transfers/chunks"
URI_PUSH = "/transfers/push"
URI_PEERS = "/transfers/peers"
URI_SEND = "/transfers/send"
URI_PULL = "/transfers/pull"
URI_STORAGE = "/transfers/storage"     # extension: the target's storage limits and use
SENDER_TRANSFER_ID_HEADER = "sender-transfer-id"

# 2000 characters minus the length of one Orthanc ID, as the C++ plugin uses.
MAX_PULL_URL_LENGTH = 2000 - 44

# Upper bound for any size or offset on the wire: 1 TiB. Larger values are
# refused before anything is allocated for them.
MAX_WIRE_SIZE = 1 << 40


# A JSON object as json.loads gives it.
JsonObject = Dict[str, Any]


class WireFormatError(ValueError):
    """A JSON value or URL does not follow the protocol; the text names the field."""


def is_orthanc_id(value: object) -> bool:
    return isinstance(value, str) and ORTHANC_ID_RE.match(value) is not None


def check_orthanc_id(value: object, where: str = "ID") -> str:
    if not is_orthanc_id(value):
        raise WireFormatError(f"{where}: not an Orthanc ID: {str(value)[:60]!r}")
    return value  # type: ignore[return-value]


def parse_decimal(value: object, where: str, maximum: int = MAX_WIRE_SIZE) -> int:
    """Sizes and offsets travel as decimal *strings*; numbers are refused."""
    if not isinstance(value, str) or DECIMAL_RE.match(value) is None:
        raise WireFormatError(f"{where}: expected a decimal string, got {str(value)[:40]!r}")
    number = int(value)
    if number > maximum:
        raise WireFormatError(f"{where}: {number} exceeds the limit of {maximum}")
    return number


def parse_compression(value: object, where: str = "Compression") -> str:
    if not isinstance(value, str) or value not in COMPRESSIONS:
        raise WireFormatError(f"{where}: unknown compression {str(value)[:20]!r} (use 'gzip' or 'none')")
    return value


def _object(obj: object, where: str) -> JsonObject:
    if not isinstance(obj, dict):
        raise WireFormatError(f"{where}: expected a JSON object")
    return obj


def _require(obj: object, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise WireFormatError(f"{where}: expected a JSON object")
    if key not in obj:
        raise WireFormatError(f"{where}: missing key {key!r}")
    return obj[key]


@dataclass(frozen=True)
class InstanceInfo:
    id: str
    size: int
    md5: str

    def to_json(self) -> JsonObject:
        return {"ID": self.id, "Size": str(self.size), "MD5": self.md5}


@dataclass(frozen=True)
class Chunk:
    instance_id: str
    offset: int
    size: int

    def to_json(self) -> JsonObject:
        return {"ID": self.instance_id, "Offset": str(self.offset), "Size": str(self.size)}


@dataclass
class Bucket:
    """A list of chunks whose bytes travel concatenated in one HTTP body."""

    chunks: List[Chunk] = field(default_factory=list)
    _extensible: bool = field(default=True, repr=False, compare=False)

    @property
    def total_size(self) -> int:
        return sum(c.size for c in self.chunks)

    def add_chunk(self, instance: InstanceInfo, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > instance.size:
            raise WireFormatError(f"chunk of {instance.id} outside the instance")
        if not self._extensible:
            raise WireFormatError("no chunk may follow a partial instance in a bucket")
        if self.chunks and offset != 0:
            raise WireFormatError("only the first chunk of a bucket may have an offset")
        if size == 0:
            return
        if offset != 0 or size != instance.size:
            # docs/protocol.md: nothing may follow a chunk that is not a whole instance.
            self._extensible = False
        self.chunks.append(Chunk(instance.id, offset, size))

    def to_json(self) -> List[JsonObject]:
        return [c.to_json() for c in self.chunks]

    def instance_ids(self) -> List[str]:
        return [c.instance_id for c in self.chunks]


def chunks_uri(bucket: Bucket, compression: str) -> str:
    """The GET path that fetches a bucket from a pull source.

    ``compression`` may be an extension codec: the URL then asks for gzip,
    which a server that does not know the codec answers (see "Codecs")."""
    if not bucket.chunks:
        raise WireFormatError("empty bucket has no chunks URI")
    ids = ".".join(c.instance_id for c in bucket.chunks)
    codec = ""
    if compression in CODECS:
        codec, compression = _codec_query(compression), "gzip"
    return (f"{URI_CHUNKS}/{ids}?offset={bucket.chunks[0].offset}"
            f"&size={bucket.total_size}&compression={parse_compression(compression)}{codec}")


def _codec_query(codec: str) -> str:
    """``&codec=`` names a codec every plugin of ours knows; a newer one goes
    in ``&codecs=``, which older plugins ignore (they answer split16-gzip or
    gzip, and the Content-Type says which)."""
    if codec in LEGACY_CODECS:
        return f"&codec={codec}"
    return f"&codec={CODEC_SPLIT16}&codecs={codec}"


def plan_buckets(instances: Iterable[InstanceInfo], bucket_size: int,
                 pull_base_url: Optional[str] = None,
                 compression: str = "none") -> List[Bucket]:
    """Cut instances into buckets exactly as docs/protocol.md §2 says.

    ``bucket_size`` is B in bytes. ``pull_base_url`` is given only for buckets
    fetched with GET, whose URL must stay short.
    """
    if bucket_size <= 0:
        raise ValueError("bucket size must be positive")
    if compression in CODECS:
        # The URL may ask for any codec: count the longest query.
        compression = max(CODECS, key=lambda c: len(_codec_query(c)))
    group_threshold, separate_threshold = bucket_size, 2 * bucket_size
    ordered = sorted({i.id: i for i in instances}.values(), key=lambda i: i.id)
    alone: List[Bucket] = []
    small: List[InstanceInfo] = []
    for info in ordered:
        if info.size < group_threshold:
            small.append(info)
        elif info.size < separate_threshold:
            bucket = Bucket()
            bucket.add_chunk(info, 0, info.size)
            alone.append(bucket)
        else:
            count = -(-info.size // separate_threshold)
            piece = info.size // count
            for index in range(count):
                offset = index * piece
                size = info.size - offset if index == count - 1 else piece
                bucket = Bucket()
                bucket.add_chunk(info, offset, size)
                alone.append(bucket)

    grouped: List[Bucket] = []
    bucket = Bucket()
    for info in small:
        bucket.add_chunk(info, 0, info.size)
        full = bucket.total_size >= group_threshold
        if not full and pull_base_url is not None and bucket.chunks:
            full = len(pull_base_url + chunks_uri(bucket, compression)) >= MAX_PULL_URL_LENGTH
        if full:
            grouped.append(bucket)
            bucket = Bucket()
    if bucket.chunks:
        grouped.append(bucket)
    return alone + grouped


# --- parsing what a peer sent -------------------------------------------------

def parse_instance_info(obj: object, where: str = "instance") -> InstanceInfo:
    iid = check_orthanc_id(_require(obj, "ID", where), f"{where}.ID")
    size = parse_decimal(_require(obj, "Size", where), f"{where}.Size")
    md5 = _require(obj, "MD5", where)
    if not isinstance(md5, str) or MD5_RE.match(md5) is None:
        raise WireFormatError(f"{where}.MD5: not 32 lowercase hex digits: {str(md5)[:40]!r}")
    return InstanceInfo(iid, size, md5)


def parse_bucket(obj: object, instances: Optional[Dict[str, InstanceInfo]] = None,
                 where: str = "bucket") -> Bucket:
    """Parse a bucket; with ``instances`` (id -> InstanceInfo) check every chunk
    lies inside a known instance and that the chunk rules hold."""
    if not isinstance(obj, list):
        raise WireFormatError(f"{where}: expected a JSON array of chunks")
    bucket = Bucket()
    for n, item in enumerate(obj):
        cwhere = f"{where}[{n}]"
        cid = check_orthanc_id(_require(item, "ID", cwhere), f"{cwhere}.ID")
        offset = parse_decimal(_require(item, "Offset", cwhere), f"{cwhere}.Offset")
        size = parse_decimal(_require(item, "Size", cwhere), f"{cwhere}.Size")
        if instances is not None:
            info = instances.get(cid)
            if info is None:
                raise WireFormatError(f"{cwhere}: instance {cid} is not in the transaction")
            bucket.add_chunk(info, offset, size)
        else:
            bucket.add_chunk(InstanceInfo(cid, offset + size, "0" * 32), offset, size)
    return bucket


def parse_resources(obj: object, where: str = "Resources") -> List[JsonObject]:
    """A lookup/send body: [{"Level": ..., "ID": ...}]; Level is case-insensitive."""
    if not isinstance(obj, list):
        raise WireFormatError(f"{where}: expected a JSON array")
    canonical = {level.lower(): level for level in LEVELS}
    out = []
    for n, item in enumerate(obj):
        level = _require(item, "Level", f"{where}[{n}]")
        rid = _require(item, "ID", f"{where}[{n}]")
        if not isinstance(level, str) or level.lower() not in canonical:
            raise WireFormatError(f"{where}[{n}].Level: unknown level {str(level)[:20]!r}")
        check_orthanc_id(rid, f"{where}[{n}].ID")
        out.append({"Level": canonical[level.lower()], "ID": rid})
    return out


def build_lookup_answer(instances: Iterable[InstanceInfo], originator: str) -> JsonObject:
    ordered = sorted({i.id: i for i in instances}.values(), key=lambda i: i.id)
    total = sum(i.size for i in ordered)
    return {
        "Instances": [i.to_json() for i in ordered],
        "Originator": originator,
        "CountInstances": len(ordered),
        "TotalSize": str(total),
        "TotalSizeMB": total // (1024 * 1024),
    }


def parse_lookup_answer(obj: object) -> List[InstanceInfo]:
    items = _require(obj, "Instances", "lookup answer")
    if not isinstance(items, list):
        raise WireFormatError("lookup answer.Instances: expected a JSON array")
    return [parse_instance_info(x, f"lookup answer.Instances[{n}]") for n, x in enumerate(items)]


def build_push_request(instances: Sequence[InstanceInfo], buckets: Sequence[Bucket],
                       compression: str, asynchronous_commit: bool = False,
                       codec: Optional[str] = None, import_as_it_arrives: bool = False,
                       codecs: Sequence[str] = ()) -> JsonObject:
    """``codec``, or ``codecs`` (best first): ask for extension codecs (see
    "Codecs" below); the request then says ``"Compression": "gzip"`` for a
    server that ignores them. ``"Codec"`` only ever names a codec that every
    plugin of ours knows (an older one refuses an unknown name); the others
    go in ``"Codecs"``, which older plugins and the C++ plugin ignore."""
    offered = [parse_codec(c) for c in (codecs or ([codec] if codec is not None else []))]
    legacy = next((c for c in offered if c in LEGACY_CODECS), None)
    if offered:
        compression = "gzip"
    body: JsonObject = {
        "Instances": [i.to_json() for i in instances],
        "Buckets": [b.to_json() for b in buckets],
        "Compression": parse_compression(compression),
    }
    if asynchronous_commit:
        # Extension of this project; the C++ plugin ignores unknown keys.
        body["AsynchronousCommit"] = True
    if legacy is not None:
        body["Codec"] = legacy
    if any(c not in LEGACY_CODECS for c in offered):
        body["Codecs"] = offered
    if import_as_it_arrives:
        body["ImportAsItArrives"] = True  # extension, see docs/server-plugin.md
    return body


@dataclass
class PushRequest:
    instances: List[InstanceInfo]
    buckets: List[Bucket]
    compression: str
    asynchronous_commit: bool = False
    codec: Optional[str] = None
    import_as_it_arrives: bool = False
    codecs: List[str] = field(default_factory=list)   # "Codecs", best first, known names only

    def choose_codec(self, honoured: Sequence[str]) -> Optional[str]:
        """The codec a server honouring ``honoured`` uses for this transaction."""
        return next((c for c in self.codecs + ([self.codec] if self.codec else []) if c in honoured), None)


def parse_push_request(obj: object, max_instances: int = 1_000_000,
                       max_buckets: int = 1_000_000) -> PushRequest:
    raw_instances = _require(obj, "Instances", "push request")
    raw_buckets = _require(obj, "Buckets", "push request")
    compression = parse_compression(_require(obj, "Compression", "push request"),
                                    "push request.Compression")
    if not isinstance(raw_instances, list) or not isinstance(raw_buckets, list):
        raise WireFormatError("push request: Instances and Buckets must be JSON arrays")
    if len(raw_instances) > max_instances or len(raw_buckets) > max_buckets:
        raise WireFormatError("push request: too many instances or buckets")
    instances = [parse_instance_info(x, f"Instances[{n}]") for n, x in enumerate(raw_instances)]
    by_id = {i.id: i for i in instances}
    if len(by_id) != len(instances):
        raise WireFormatError("push request: duplicate instance IDs")
    buckets = [parse_bucket(b, by_id, f"Buckets[{n}]") for n, b in enumerate(raw_buckets)]
    asynchronous = _object(obj, "push request").get("AsynchronousCommit", False)
    if not isinstance(asynchronous, bool):
        raise WireFormatError("push request.AsynchronousCommit: expected true or false")
    codec = _object(obj, "push request").get("Codec")
    if codec is not None:
        codec = parse_codec(codec, "push request.Codec")
        if compression != "gzip":
            raise WireFormatError("push request.Codec: only with \"Compression\": \"gzip\"")
    codecs = parse_codec_list(_object(obj, "push request").get("Codecs", []), "push request.Codecs")
    if codecs and compression != "gzip":
        raise WireFormatError("push request.Codecs: only with \"Compression\": \"gzip\"")
    early = _object(obj, "push request").get("ImportAsItArrives", False)
    if not isinstance(early, bool):
        raise WireFormatError("push request.ImportAsItArrives: expected true or false")
    return PushRequest(instances, buckets, compression, asynchronous, codec, early, codecs)


def parse_chunk_ids(path_part: str, max_ids: int = 1000) -> List[str]:
    """The ``{id1}.{id2}...`` part of a chunks URL, each checked."""
    ids = path_part.split(".")
    if not path_part or len(ids) > max_ids:
        raise WireFormatError("chunks URL: expected 1 to %d instance IDs" % max_ids)
    return [check_orthanc_id(i, "chunks URL") for i in ids]


# --- codecs (extension of this project) -------------------------------------------
#
# Both split the data's even bytes from its odd bytes. For 16-bit samples (CT,
# MR, CR pixel data) that puts the low bytes (noise, mostly) and the high
# bytes (nearly constant) in two runs that compress apart much better than
# interleaved. Lossless; the bucket's bytes, and so the MD5s, are unchanged.
#
# - "split16-gzip": the even bytes then the odd bytes, as one gzip member
#   (2.34:1 instead of gzip's 2.02:1 on the benchmark's CT, same speed).
# - "split16-rle": the even bytes as one zlib stream, then the odd bytes as a
#   second one, each deflated with zlib's run-length strategy (matches of
#   distance one only: Huffman codes fitted to each half, the runs of the
#   high bytes kept). 2.51:1 on the benchmark's CT, and faster than gzip at
#   both ends (deflate has no matches to search; inflating is simpler). The
#   strategy does not depend on which half holds the low bytes, so a bucket
#   that starts at an odd offset compresses as well. On 8-bit data and on
#   DICOM headers it is worse than gzip: senders choose it from a sample.
#   The receiver bounds each stream by its half of the bucket's size.
#
# Negotiated without an extra round trip, and only with a server that knows it:
# - push: the request says "Compression": "gzip", "Codec": the codec every
#   plugin of ours knows (split16-gzip), if offered, and "Codecs": the
#   offered codecs, best first, when that list has a newer one. A server that
#   honours one answers the creation with "Codec": <the one chosen> and then
#   expects bucket bodies in it; a server that does not (the C++ plugin
#   ignores unknown keys) answers without "Codec" and expects gzip. An older
#   plugin of ours ignores "Codecs" and answers "Codec" as before.
# - pull: GET /transfers/chunks/...?compression=gzip&codec=split16-gzip
#   [&codecs=<newer codec>,...]; a server that honours one answers with its
#   Content-Type (CODEC_CONTENT_TYPE), one that does not (unknown query
#   arguments are ignored) answers plain gzip.

CODEC_SPLIT16 = "split16-gzip"
CODEC_SPLIT16_RLE = "split16-rle"
CODECS = (CODEC_SPLIT16, CODEC_SPLIT16_RLE)
# The codecs every plugin of ours that knows codecs at all knows: only these
# may be named in a push request's "Codec" or a GET's "codec=".
LEGACY_CODECS = (CODEC_SPLIT16,)
CODEC_CONTENT_TYPE = {CODEC_SPLIT16: "application/x-transfers-split16-gzip",
                      CODEC_SPLIT16_RLE: "application/x-transfers-split16-rle"}
# zlib's run-length strategy, default window and memory level (8 was the
# best of 5-9 on the benchmark's CT, by a little).
_RLE_WBITS = zlib.MAX_WBITS
_RLE_MEMLEVEL = 8


def parse_codec(value: object, where: str = "Codec") -> str:
    if not isinstance(value, str) or value not in CODECS:
        raise WireFormatError(f"{where}: unknown codec {str(value)[:30]!r} (known: {', '.join(CODECS)})")
    return value


def parse_codec_list(value: object, where: str = "Codecs") -> List[str]:
    """A list of codec names, best first. Names this module does not know are
    dropped, not refused: a newer sender may offer a codec this server has
    never heard of, next to one it has."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or len(value) > 16 or not all(isinstance(v, str) for v in value):
        raise WireFormatError(f"{where}: expected a list of codec names")
    return [v for v in dict.fromkeys(value) if v in CODECS]


def codec_of_content_type(content_type: str) -> Optional[str]:
    """The codec a chunks answer is in, from its Content-Type (None: not a codec)."""
    media = content_type.split(";")[0].strip().lower()
    return next((c for c, t in CODEC_CONTENT_TYPE.items() if t == media), None)


def split16(data: Any) -> bytes:
    """Even bytes then odd bytes (the codec's transform before deflate)."""
    return bytes(data[0::2]) + bytes(data[1::2])


def join16(data: Any) -> bytearray:
    """The inverse of :func:`split16`."""
    out = bytearray(len(data))
    half = (len(data) + 1) // 2
    out[0::2] = data[:half]
    out[1::2] = data[half:]
    return out


class CodecError(ValueError):
    """A codec body that is corrupt or truncated (``size_mismatch`` False), or
    that holds more or fewer bytes than the bucket (``size_mismatch`` True)."""

    def __init__(self, message: str, size_mismatch: bool = False) -> None:
        super().__init__(message)
        self.size_mismatch = size_mismatch


def encode_split16_rle(data: Any, level: int = 1) -> bytes:
    """``data`` in the "split16-rle" codec: two zlib streams, even bytes then odd bytes."""
    view = memoryview(data).cast("B")
    out = []
    for half in (view[0::2], view[1::2]):
        deflater = zlib.compressobj(level, zlib.DEFLATED, _RLE_WBITS, _RLE_MEMLEVEL, zlib.Z_RLE)
        out.append(deflater.compress(bytes(half)) + deflater.flush())
    return b"".join(out)


def decode_split16_rle(body: Any, expected: int) -> bytearray:
    """The ``expected`` bytes a "split16-rle" body holds. Each stream is
    inflated with a bound of its half plus one byte, so a small body that
    would inflate to gigabytes costs at most that."""
    halves = ((expected + 1) // 2, expected // 2)
    parts = []
    rest = body
    for n, size in enumerate(halves):
        inflater = zlib.decompressobj(_RLE_WBITS)
        try:
            part = inflater.decompress(rest, size + 1)
        except zlib.error as exc:
            raise CodecError(f"the split16-rle body is not valid ({exc})") from None
        which = "even" if n == 0 else "odd"
        if len(part) > size:
            raise CodecError(f"the split16-rle body's {which} bytes are more than the bucket's {size}", True)
        if not inflater.eof:
            raise CodecError(f"the split16-rle body is truncated ({which} bytes: {len(part)} of {size})")
        if len(part) != size:
            raise CodecError(f"the split16-rle body's {which} bytes are {len(part)}, the bucket's {size}", True)
        parts.append(part)
        rest = inflater.unused_data
    if rest:
        raise CodecError("data after the end of the split16-rle body")
    out = bytearray(expected)
    out[0::2] = parts[0]
    out[1::2] = parts[1]
    return out


# --- asynchronous commit (extension of this project) ---------------------------
#
# A push request with "AsynchronousCommit": true gets a creation answer with
# "AsynchronousCommit": true as well (a server that ignores the extension, like
# the C++ plugin, answers without it), and makes
#   POST /transfers/push/{tid}/commit  answer 202 {"Status": "Pending", "Path": <commit URI>}
# at once, and
#   GET  /transfers/push/{tid}/commit  answer 200 with the status:
#     {"Status": "Staging"|"Pending"|"Success"|"Failure", "Path": <commit URI>}
#     plus, for "Failure", "Error": an Orthanc-style error body (HttpStatus,
#     OrthancStatus, Message, Details, and Instances naming the bad instances).
# After a failure the transaction is kept (status "Failure" until committed
# again); after success it is gone and only the status remains, for a while.
# Without the flag the commit is synchronous and answers {} as in docs/protocol.md.

COMMIT_STAGING = "Staging"
COMMIT_PENDING = "Pending"
COMMIT_SUCCESS = "Success"
COMMIT_FAILURE = "Failure"
COMMIT_STATUSES = (COMMIT_STAGING, COMMIT_PENDING, COMMIT_SUCCESS, COMMIT_FAILURE)


def commit_uri(transaction_id: str) -> str:
    return f"{URI_PUSH}/{transaction_id}/commit"


@dataclass(frozen=True)
class CommitStatus:
    status: str
    path: str
    error: Optional[JsonObject] = None

    @property
    def finished(self) -> bool:
        return self.status in (COMMIT_SUCCESS, COMMIT_FAILURE)


def build_commit_status(status: str, transaction_id: str, error: Optional[JsonObject] = None) -> JsonObject:
    if status not in COMMIT_STATUSES:
        raise ValueError(f"unknown commit status {status!r}")
    body: JsonObject = {"Status": status, "Path": commit_uri(transaction_id)}
    if error is not None:
        body["Error"] = error
    return body


def parse_commit_status(obj: object) -> CommitStatus:
    status = _require(obj, "Status", "commit status")
    if status not in COMMIT_STATUSES:
        raise WireFormatError(f"commit status.Status: unknown value {str(status)[:20]!r}")
    path = _object(obj, "commit status").get("Path", "")
    error = _object(obj, "commit status").get("Error")
    if error is not None and not isinstance(error, dict):
        raise WireFormatError("commit status.Error: expected a JSON object")
    return CommitStatus(status, path if isinstance(path, str) else "", error)
