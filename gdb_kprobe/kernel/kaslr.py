"""Does the symbol file describe the running kernel, and where is it loaded?

The vmlinux's `linux_banner` ("Linux version ...") is compared with kernel memory.
Equal at the file's address: the right kernel, not relocated. Found at another
2 MiB-aligned offset: KASLR moved the kernel by that slide. Found nowhere: the
vmlinux is not the running kernel's. The answer is cached until the symbol file
or the target changes.
"""
from __future__ import annotations

import dataclasses

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache, memory, symbols

__all__ = ["KernelMatch", "detect", "require_matching_kernel"]

BANNER_BYTES = 64


@dataclasses.dataclass
class KernelMatch:
    slide: int | None             # None: banner found nowhere
    file_banner: str
    memory_banner: str | None


def _banner_at(address: int, length: int = BANNER_BYTES) -> bytes | None:
    try:
        return memory.read(address, length)
    except KpError:
        return None


@cache.cache_until("objfile", "exited", "relocate")
def detect() -> KernelMatch:
    """Compare linux_banner in the file with memory; find the KASLR slide if moved."""
    table = symbols.kernel()
    banner_address = table.address_of("linux_banner")
    if banner_address is None:
        raise KpError("the symbol file has no linux_banner: is it a vmlinux?")
    wanted = table.file_bytes(banner_address, BANNER_BYTES)
    if wanted is None:
        raise KpError("cannot read linux_banner from the symbol file")
    # the whole banner for display (the first BANNER_BYTES suffice to compare)
    size = min((table.lookup(banner_address) or ("", 0, 0))[2], 512)
    whole = (table.file_bytes(banner_address, size) if size > BANNER_BYTES else None) or wanted
    text = whole.split(b"\0")[0].decode("utf-8", "replace").strip()
    if _banner_at(banner_address) == wanted:
        return KernelMatch(table.bias, text, text)
    found = None
    # The stop address is in the moved kernel text: try the slides that put it back
    # inside the image first, then every aligned slide.
    candidates = list(range(-arch.KASLR_RANGE, arch.KASLR_RANGE, arch.KASLR_ALIGN))
    try:
        pc = int(gdb.newest_frame().pc())
        start, end = table.address_of("_text"), table.address_of("_end")
        if start is not None and end is not None:
            candidates.sort(key=lambda slide: not start <= pc - slide < end)
    except gdb.error:
        pass
    for slide in candidates:
        if slide == 0:
            continue
        if _banner_at(banner_address + slide) == wanted:
            found = table.bias + slide
            break
    memory = _banner_at(banner_address, max(size, BANNER_BYTES))
    shown = memory.split(b"\0")[0].decode("utf-8", "replace").strip() if memory else None
    return KernelMatch(found, text, shown)


def require_matching_kernel() -> None:
    match = detect()
    bias = symbols.kernel().bias
    if match.slide is None:
        raise KpError("the symbol file does not match the running kernel: its linux_banner "
                      f"({match.file_banner[:60]!r}) is nowhere in kernel memory; load the "
                      "vmlinux of the running kernel")
    if match.slide != bias:
        raise KpError(f"the kernel runs with KASLR: it is loaded {match.slide:#x} bytes away "
                      f"from the vmlinux's addresses; relocate the symbols with "
                      f"`kp-kaslr --relocate` (or boot with nokaslr)")
