"""Code sites the kernel patches or traps on, which register_kprobe() refuses
(check_kprobe_address_safe()): jump labels, static calls, BUG()/WARN() sites.

Read from the vmlinux file: the tables (__jump_table, static_call_sites, __bug_table) hold
s32 displacements to their sites, and their file bytes are what the kernel was built with.
"""
from __future__ import annotations

import struct
from typing import Callable

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import layouts, memory, symbols

__all__ = ["is_jump_label", "is_static_call", "is_bug"]

JUMP_ENTRY_SIZE = 16              # struct jump_entry: s32 code, s32 target, long key
STATIC_CALL_SITE_SIZE = 8         # struct static_call_site: s32 addr, s32 key


def _entries(start_symbol: str, stop_symbol: str) -> tuple[int, bytes] | None:
    table = symbols.kernel()
    start, stop = table.address_of(start_symbol), table.address_of(stop_symbol)
    if start is None or stop is None or stop <= start:
        return None
    data = table.file_bytes(start, stop - start)
    return (start, data) if data is not None else None


def _in_patch_site(start: str, stop: str, entry_size: int, site_size: int,
                   address: int, size_of: Callable[[int], int] | None = None) -> bool:
    """Does `address` fall in a code site listed in a table of entries whose first field is
    an s32 displacement to the site (__jump_table, static_call_sites)? `site_size` is the
    largest a site can be; `size_of(site)` tells a site's own size where they differ."""
    found = _entries(start, stop)
    if found is None:
        return False
    base, data = found
    for offset in range(0, len(data) - entry_size + 1, entry_size):
        site = base + offset + struct.unpack_from("<i", data, offset)[0]
        if site <= address < site + site_size and \
                (size_of is None or address < site + size_of(site)):
            return True
    return False


def is_jump_label(address: int) -> bool:
    """jump_label_text_reserved(): inside a static key's nop or jump, as long as the code
    there has it now (x86's arch_jump_entry_size() decodes 2 or 5 bytes; arm64's is one
    instruction): the arch seam's jump_site_size()."""
    return _in_patch_site("__start___jump_table", "__stop___jump_table", JUMP_ENTRY_SIZE,
                          arch.JUMP_SITE_MAX, address, _jump_size)


def _jump_size(site: int) -> int:
    try:
        head = memory.read(site, 2)
    except KpError:
        return arch.JUMP_SITE_MAX
    return arch.jump_site_size(head)


def is_static_call(address: int) -> bool:
    """static_call_text_reserved(): inside a static call's 5-byte call."""
    return _in_patch_site("__start_static_call_sites", "__stop_static_call_sites",
                          STATIC_CALL_SITE_SIZE, arch.STATIC_CALL_SIZE, address)


def is_bug(address: int) -> bool:
    """find_bug(): a BUG()/WARN() ud2 listed in __bug_table. `bug_addr_disp` is the
    relative form (CONFIG_GENERIC_BUG_RELATIVE_POINTERS, commit b93a531e315e "allow bug
    table entries to use relative pointers (and use it on x86-64)"); it is the first member,
    so the displacement is from the entry either way (69505e3d9a39 "bug: Use normal relative
    pointers in 'struct bug_entry'", v5.19, changed only the other members' base)."""
    layout = layouts.try_layout("struct bug_entry")
    if layout is None:
        return False
    size = layout.size
    found = _entries("__start___bug_table", "__stop___bug_table")
    if found is None:
        return False
    base, data = found
    disp = layout.offset("bug_addr_disp") if layout.has_field("bug_addr_disp") else 0
    for index in range(len(data) // size):
        entry = base + size * index
        if entry + disp + struct.unpack_from("<i", data, size * index + disp)[0] == address:
            return True
    return False
