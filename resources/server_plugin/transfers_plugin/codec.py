"""Bucket bodies: bounded gzip decoding and single-member gzip encoding,
and the codecs that this plugin announces ("split16-gzip", "split16-rle").
The codecs themselves are the wire module's (gui/protocol/wire.py, loaded as
``transfers_wire`` before this module by transfers_accelerator.py), the
same code the engine runs."""

from __future__ import annotations

import zlib

import transfers_wire as wire

from .errors import BAD_FILE_FORMAT, NETWORK_PROTOCOL, PluginError

_GZIP_WBITS = 16 + zlib.MAX_WBITS
SPLIT16 = wire.CODEC_SPLIT16
SPLIT16_RLE = wire.CODEC_SPLIT16_RLE
CODECS = wire.CODECS
split16 = wire.split16
join16 = wire.join16


def decode_bucket(body: bytes, compression: str, expected: int, where: str) -> bytes:
    """The uncompressed bytes of a bucket, which must be exactly ``expected`` long.

    gzip is inflated with a bound of ``expected + 1`` bytes, so a small body
    that would inflate to gigabytes ("zip bomb") costs at most one byte more
    than the bucket legitimately holds.
    """
    if compression == SPLIT16_RLE:
        try:
            return wire.decode_split16_rle(body, expected)
        except wire.CodecError as exc:
            if exc.size_mismatch:
                raise PluginError(NETWORK_PROTOCOL, "%s: %s" % (where, exc))
            raise PluginError(BAD_FILE_FORMAT, "%s: %s" % (where, exc))
    if compression == "none":
        data = body
    elif compression not in ("gzip",) + CODECS:
        raise PluginError(BAD_FILE_FORMAT, "%s: unknown compression %r" % (where, compression[:30]))
    else:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            # Below the bound, zlib consumed the whole body: a stream that
            # has not reached its end by then is truncated.
            data = inflater.decompress(body, expected + 1)
        except zlib.error as exc:
            raise PluginError(BAD_FILE_FORMAT, "%s: the body is not valid gzip (%s)" % (where, exc))
        if len(data) <= expected:
            if not inflater.eof:
                raise PluginError(BAD_FILE_FORMAT, "%s: the gzip body is truncated" % where)
            if inflater.unused_data:
                raise PluginError(BAD_FILE_FORMAT,
                                  "%s: data after the end of the gzip stream (one gzip member expected)" % where)
    if len(data) != expected:
        shown = "more than %d" % expected if len(data) > expected else str(len(data))
        raise PluginError(NETWORK_PROTOCOL, "%s: the bucket holds %d bytes but %s were received"
                          % (where, expected, shown))
    if compression == SPLIT16:
        return join16(data)  # type: ignore[return-value]
    return data


def gzip_bytes(data: bytes, level: int) -> bytes:
    """One gzip member holding ``data``."""
    deflater = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return deflater.compress(data) + deflater.flush()


def encode(data, compression: str, level: int) -> bytes:
    """``data`` as a body in ``compression`` ("gzip" or a codec)."""
    if compression == SPLIT16:
        return gzip_bytes(split16(data), level)
    if compression == SPLIT16_RLE:
        return wire.encode_split16_rle(data, level)
    return gzip_bytes(data, level)
