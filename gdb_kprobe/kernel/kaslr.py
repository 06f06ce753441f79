"""Does the symbol file describe the running kernel, and where is it loaded?

The vmlinux's `linux_banner` ("Linux version ...") is compared with kernel memory.
Equal at the file's address: the right kernel, not relocated. Found at another
offset aligned to the architecture's KASLR granule (2 MiB on x86-64 and arm64): KASLR moved
the kernel by that slide. Found nowhere: the vmlinux is not the running kernel's. The slides
tried come from the target where it tells (arm64's range is too wide to try each). The answer is cached until the symbol file
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
MAX_SCANNED_SLIDES = 4096          # reads of linux_banner tried blindly at most


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
    for slide in _candidate_slides(table):
        if _banner_at(banner_address + slide) == wanted:
            found = table.bias + slide
            break
    memory = _banner_at(banner_address, max(size, BANNER_BYTES))
    shown = memory.split(b"\0")[0].decode("utf-8", "replace").strip() if memory else None
    return KernelMatch(found, text, shown)


def _candidate_slides(table: symbols.ElfSymbols) -> list[int]:
    """The slides to try, most likely first, each once: where the architecture's anchor
    registers put their symbol (arm64: VBAR_EL1 holds `vectors`), then those that put the
    stop's pc back inside the image, then every aligned slide when there are few enough to
    read each (x86-64's 1 GiB: 1024; arm64's 2**47 are not: the anchors and the pc must
    tell there)."""
    slides: list[int] = []
    align = arch.KASLR_ALIGN
    start, end = table.address_of("_text"), table.address_of("_end")
    try:
        frame = gdb.newest_frame()
        for register, symbol in arch.KASLR_ANCHORS:
            linked = table.address_of(symbol)
            try:
                if linked is not None:
                    slides.append(arch.u64(int(frame.read_register(register))) - linked)
            except (gdb.error, ValueError):
                pass        # a stub without the register
        if start is not None and end is not None:
            pc = arch.u64(int(frame.pc()))
            # aligned, start <= pc - slide < end, within the range (a pc in user space
            # or a module puts none or a few there)
            first = max(-(-(pc - end + 1) // align) * align, -arch.KASLR_RANGE)
            slides += range(first, min(pc - start, arch.KASLR_RANGE) + 1, align)
    except (gdb.error, ValueError):
        pass                # no frame
    if 2 * arch.KASLR_RANGE // align <= MAX_SCANNED_SLIDES:
        slides += range(-arch.KASLR_RANGE, arch.KASLR_RANGE, align)
    # each once, in order; 0 was tried first, a slide off the granule never happens
    return [slide for slide in dict.fromkeys(slides) if slide and slide % align == 0]


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
