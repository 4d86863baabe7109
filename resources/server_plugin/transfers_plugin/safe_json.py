"""JSON from untrusted peers, parsed without risking Orthanc's stack."""

from __future__ import annotations

import re

# The protocol's JSON is at most 4 levels deep. Python's JSON parser recurses
# once per level on the C stack, and Orthanc's HTTP threads have small stacks:
# a body of ~900 nested brackets crashed Orthanc 1.10.1 in a test. So the
# depth is checked first, without recursion.
MAX_JSON_DEPTH = 32
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_INNERMOST_GROUP = re.compile(rb"[\[{][^\[\]{}]*[\]}]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit`` (or leaves
    brackets unbalanced, which is no valid JSON either).

    Linear and fast (regular expressions and ``bytes.translate`` run in C):
    drop escaped characters, keep only quotes and brackets, drop strings,
    then peel innermost groups one level at a time.
    """
    if b"\\" in body:
        body = _ESCAPE.sub(b"", body)
    text = _STRING.sub(b"", body.translate(None, _NOT_STRUCTURE))
    for _ in range(limit):
        text, removed = _INNERMOST_GROUP.subn(b"", text)
        if not removed:
            break
    return any(c in text for c in b"[]{}")
