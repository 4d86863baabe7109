"""Remove symbol tables and debug information from the bundle's Linux libraries, safely.

Only ELF files that still have a symbol table or debug information are
stripped (``strip --strip-unneeded`` keeps what the dynamic loader needs).
In practice: libpython and the interpreter's extension modules (debug
information when Python was compiled locally), ICU, cryptography.

One guard: wheels that vendor libraries patch them with patchelf after the
build and keep them in a ``<package>.libs`` folder, and strip can make those
unloadable ("ELF load command address/offset not page-aligned"; numpy's
OpenBLAS did, when the bundle still had numpy). Such a folder and its
``<package>`` are left alone. The current bundle has none; the guard costs
nothing and keeps a future dependency of that kind working."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from typing import List, Optional, Tuple

ELF_MAGIC = b"\x7fELF"
STRIPPABLE_SECTIONS = (b".symtab", b".debug_info")


def has_strippable_sections(path: str) -> bool:
    """Whether ``path`` is an ELF file with a symbol table or debug information."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 52 or header[:4] != ELF_MAGIC:
                return False
            is_64 = header[4] == 2
            endian = "<" if header[5] == 1 else ">"
            if is_64:
                shoff, = struct.unpack_from(endian + "Q", header, 0x28)
                shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", header, 0x3A)
            else:
                shoff, = struct.unpack_from(endian + "I", header, 0x20)
                shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", header, 0x2E)
            if not shoff or not shnum or shstrndx >= shnum:
                return False
            # The section holding the section names: its offset and size.
            f.seek(shoff + shstrndx * shentsize)
            entry = f.read(shentsize)
            if is_64:
                names_offset, names_size = struct.unpack_from(endian + "QQ", entry, 0x18)
            else:
                names_offset, names_size = struct.unpack_from(endian + "II", entry, 0x10)
            f.seek(names_offset)
            names = f.read(min(names_size, 1 << 20))
    except (OSError, struct.error):
        return False
    return any(b"\0" + section + b"\0" in b"\0" + names for section in STRIPPABLE_SECTIONS)


def strip_bundle(folder: str, strip: Optional[str] = None) -> Tuple[List[str], int]:
    """Strip the ELF files under ``folder`` that need it and can take it.

    Returns the files stripped and the bytes saved. A file strip refuses is
    left as it was: a bigger bundle beats a broken one.
    """
    strip = strip or shutil.which("strip")
    if not strip:
        return [], 0
    stripped: List[str] = []
    saved = 0
    top_level = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    patched = {name[:-len(".libs")] for name in top_level if name.endswith(".libs")}
    for root, dirs, files in os.walk(folder):
        if root == folder:
            dirs[:] = [d for d in dirs if not d.endswith(".libs") and d not in patched]
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path) or not has_strippable_sections(path):
                continue
            before = os.path.getsize(path)
            done = subprocess.run([strip, "--strip-unneeded", path], capture_output=True)
            if done.returncode == 0:
                stripped.append(path)
                saved += before - os.path.getsize(path)
    return stripped, saved
