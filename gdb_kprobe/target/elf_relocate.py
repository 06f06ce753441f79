"""A copy of a kernel module's .ko with its sections placed where the kernel loaded them.

gdb's `add-symbol-file FILE TEXT -s SECTION ADDR ...` places the ELF symbols of a
relocatable file per section, but relocates its DWARF by the .text offset alone: a
handler in .kprobes.text (`__kprobes`) or .text.unlikely gets line numbers, scopes and
`break handler_pre` at .text + its offset in its own section, i.e. inside some other
function. When the section headers already carry the load addresses (sh_addr), gdb
applies the DWARF relocations against them and everything lands where the kernel put
it. The build-id is rewritten too, so gdb's index cache (keyed by build-id) never
serves an address map made for another load address.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile

__all__ = ["ElfError", "placed", "write_placed"]

SHF_ALLOC = 0x2
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3


class ElfError(ValueError):
    pass


def placed(data: bytes, addresses: dict[str, int]) -> bytes:
    """The ELF64 little-endian relocatable object `data` with sh_addr of each allocated
    section named in `addresses` set to that address."""
    if len(data) < 0x40 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file")
    if struct.unpack_from("<H", data, 0x10)[0] != 1:
        raise ElfError("not a relocatable object (ET_REL)")
    out = bytearray(data)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shentsize < 0x40 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise ElfError("section header table out of the file")
    names_at = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    layout = hashlib.sha256()
    for index in range(shnum):
        header = shoff + index * shentsize
        name_offset, _kind, flags = struct.unpack_from("<IIQ", data, header)
        end = data.find(b"\0", names_at + name_offset)
        name = data[names_at + name_offset:end].decode("ascii", "replace")
        if flags & SHF_ALLOC and name in addresses:
            struct.pack_into("<Q", out, header + 0x10, addresses[name])
            layout.update(f"{name}={addresses[name]:#x};".encode())
    _rewrite_build_id(out, shoff, shentsize, shnum, layout.digest())
    return bytes(out)


def _rewrite_build_id(out: bytearray, shoff: int, shentsize: int, shnum: int,
                      layout: bytes) -> None:
    for index in range(shnum):
        header = shoff + index * shentsize
        kind = struct.unpack_from("<I", out, header + 4)[0]
        if kind != SHT_NOTE:
            continue
        offset, size = struct.unpack_from("<QQ", out, header + 0x18)
        end = min(offset + size, len(out))
        position = offset
        while position + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", out, position)
            name_end = position + 12 + ((namesz + 3) & ~3)
            if name_end + descsz > end:
                # a damaged size would make the copy grow (by up to 4 GiB) or read past it
                raise ElfError(f"damaged note at file offset {position:#x}: it runs past "
                               "its section or the file")
            if note_type == NT_GNU_BUILD_ID and out[position + 12:position + 15] == b"GNU":
                old = bytes(out[name_end:name_end + descsz])
                new = hashlib.sha256(old + layout).digest()[:descsz]
                out[name_end:name_end + descsz] = new.ljust(descsz, b"\0")
                return
            position = name_end + ((descsz + 3) & ~3)


_directory: str | None = None


def write_placed(path: str, addresses: dict[str, int]) -> str:
    """Write the placed copy of `path` into this gdb session's scratch directory (gdb
    reads DWARF lazily, so the file must stay while the symbols are loaded)."""
    global _directory
    if _directory is None:
        _directory = tempfile.mkdtemp(prefix="gdb-kprobe-ko-")
        import atexit
        import shutil
        atexit.register(shutil.rmtree, _directory, True)
    with open(path, "rb") as handle:
        data = placed(handle.read(), addresses)
    text = addresses.get(".text") or min(addresses.values(), default=0)
    copy = os.path.join(_directory, f"{os.path.basename(path)[:-3]}@{text:x}.ko")
    with open(copy, "wb") as handle:
        handle.write(data)
    return copy
