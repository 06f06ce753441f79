"""Symbols from local files: the vmlinux's ELF symbol table, searched like kallsyms.

Names for addresses never come from target memory for the kernel image: the
vmlinux's `.symtab` is read once (lazily, on the first lookup) and searched with
the same rules as the kernel's kallsyms (scripts/kallsyms.c), so `sym+0xoff`
matches what /sys/kernel/debug/kprobes/list prints.
"""
from __future__ import annotations

import bisect
import mmap
import struct

import gdb

from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache

__all__ = ["ElfSymbols", "kernel", "relocate", "kernel_address", "in_kernel_image"]

SHT_SYMTAB = 2
SHN_UNDEF = 0
SHN_ABS = 0xFFF1
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
STB_WEAK = 2
# scripts/kallsyms.c leaves these out of kallsyms
_IGNORED_PREFIXES = ("$", ".L", "__crc_", "__efistub_", "__kvm_nvhe_$", "__kvm_nvhe_.L",
                     "__AArch64ADRPThunk_", "__ARMV5PILongThunk_", "__ARMV7PILongThunk_",
                     "__ThumbV7PILongThunk_", "__LA25Thunk_", "__microLA25Thunk_")
_IGNORED_NAMES = {"kallsyms_addresses", "kallsyms_offsets", "kallsyms_relative_base",
                  "kallsyms_num_syms", "kallsyms_names", "kallsyms_markers",
                  "kallsyms_token_table", "kallsyms_token_index", "kallsyms_seqs_of_names",
                  "_SDA_BASE_", "_SDA2_BASE_"}


def _linker_provided(name: str) -> bool:
    """may_be_linker_script_provide_symbol() of scripts/kallsyms.c."""
    if len(name) < 8 or not name.startswith("__"):
        return False
    return name.startswith(("__start_", "__stop_", "__end_")) or \
        name.endswith(("_start", "_end"))


class ElfSymbols:
    """The sorted symbol table of one ELF file (vmlinux or a .ko)."""

    def __init__(self, path: str, bias: int = 0) -> None:
        self.path = path
        self.bias = bias                       # added to every address (a KASLR slide)
        self.addresses: list[int] = []
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.by_name: dict[str, int] = {}
        self.sections: list[str] = []          # section names by index (for .ko files)
        self.section_of: list[int] = []
        self.executable: set[int] = set()      # indexes of SHF_EXECINSTR sections
        self.file_ranges: dict[str, tuple[int, int]] = {}   # section → (file offset, size)
        self._text_names: list[str] | None = None
        self.name_counts: dict[str, int] = {}  # kallsyms may hold a name several times
        self._loaded_ranges: list[tuple[int, int, int]] = []   # (address, size, file offset)
        self._contains: dict[bytes, bool] = {}
        # lookup() by address: the table never changes, and a listing of 10,000 probes
        # asks again for the same functions at every stop
        self._found: dict[int, tuple[str, int, int] | None] = {}
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as handle, \
                    mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as image:
                self._parse(image)
        except (OSError, ValueError, struct.error) as exc:
            raise KpError(f"cannot read the symbol table of {self.path}: {exc}") from None

    def _parse(self, image: mmap.mmap) -> None:
        if image[:4] != b"\x7fELF" or len(image) < 0x40 or image[4] != 2:
            raise ValueError("not a 64-bit ELF file")
        shoff, = struct.unpack_from("<Q", image, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
        # a damaged header must not send the reads below outside the file
        if shentsize < 0x40 or shoff + shnum * shentsize > len(image):
            raise ValueError("damaged or truncated ELF file: the section headers are not "
                             "inside it")
        if shstrndx >= shnum:
            raise ValueError("damaged ELF file: no section name table")
        headers = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize)
                   for i in range(shnum)]
        shstr_off = headers[shstrndx][4]

        def cstr(offset: int) -> str:
            if not 0 <= offset < len(image):
                return ""                           # a damaged name offset: no name
            end = image.find(b"\0", offset)
            return image[offset:end if end >= 0 else len(image)].decode("utf-8", "replace")

        self.sections = [cstr(shstr_off + h[0]) for h in headers]
        self.file_ranges = {name: (h[4], h[5]) for name, h in zip(self.sections, headers)}
        SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS = 0x2, 0x4, 8
        self.executable = {index for index, h in enumerate(headers) if h[2] & SHF_EXECINSTR}
        # only sections whose bytes are in the file can serve file_bytes()
        self._loaded_ranges = [(h[3], h[5], h[4]) for h in headers
                               if h[2] & SHF_ALLOC and h[1] != SHT_NOBITS and h[3]
                               and h[4] + h[5] <= len(image)]
        symtab = next((h for h in headers if h[1] == SHT_SYMTAB), None)
        if symtab is None:
            raise ValueError("no .symtab section (stripped?)")
        if symtab[6] >= shnum or symtab[4] + symtab[5] > len(image) or symtab[5] % 24:
            raise ValueError("damaged or truncated ELF file: .symtab or its string table is "
                             "not inside it")
        strtab_off = headers[symtab[6]][4]
        data = image[symtab[4]: symtab[4] + symtab[5]]
        entries = []
        for name_off, info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", data):
            kind = info & 0xF
            if shndx == SHN_UNDEF or shndx == SHN_ABS or name_off == 0:
                continue
            if kind not in (STT_NOTYPE, STT_OBJECT, STT_FUNC):
                continue
            name = cstr(strtab_off + name_off)
            if not name:
                continue
            if name in _IGNORED_NAMES or name.startswith(_IGNORED_PREFIXES):
                continue
            weak = (info >> 4) == STB_WEAK
            # kallsyms sorts aliases (scripts/kallsyms.c compare_symbols): strong first,
            # then not linker-script-provided, then fewer leading underscores, then nm order
            entries.append((value, weak, _linker_provided(name),
                            len(name) - len(name.lstrip("_")), name, size, shndx))
        entries.sort()
        self._index(entries)

    def _index(self, entries: list[tuple]) -> None:
        """The sorted (value, weak, linker-provided, underscores, name, size, section) rows
        as parallel lists, and the lookups by name."""
        self.addresses = [e[0] + self.bias for e in entries]
        self.names = [e[4] for e in entries]
        self.sizes = [e[5] for e in entries]
        self.section_of = [e[6] for e in entries]
        for index in range(len(entries) - 1, -1, -1):
            self.by_name[self.names[index]] = index
        for name in self.names:
            self.name_counts[name] = self.name_counts.get(name, 0) + 1

    def lookup(self, address: int) -> tuple[str, int, int] | None:
        """(name, offset, size) of the symbol containing `address`, kallsyms style."""
        try:
            return self._found[address]
        except KeyError:
            if len(self._found) >= 100_000:     # e.g. every pc of a long stepping script
                self._found.clear()
            found = self._found[address] = self._lookup(address)
            return found

    def _lookup(self, address: int) -> tuple[str, int, int] | None:
        index = bisect.bisect_right(self.addresses, address) - 1
        if index < 0:
            return None
        start = self.addresses[index]
        # the first of several aliases, as kallsyms' get_symbol_pos() does
        first = bisect.bisect_left(self.addresses, start)
        # ELF st_size (the function itself, without padding) when the symbol has one
        size = self.sizes[first]
        if not size:
            following = bisect.bisect_right(self.addresses, start)
            size = (self.addresses[following] - start) if following < len(self.addresses) else 0
        return self.names[first], address - start, size

    def file_bytes(self, address: int, size: int) -> bytes | None:
        """Bytes the file holds at a load address (None if no section covers it)."""
        address -= self.bias
        for start, length, offset in self._loaded_ranges:
            if start <= address and address + size <= start + length:
                with open(self.path, "rb") as handle:
                    handle.seek(offset + address - start)
                    return handle.read(size)
        return None

    def contains_bytes(self, needle: bytes) -> bool:
        """Do the file's loaded sections (.text, .rodata, ...) hold these bytes? Read once
        per needle: e.g. a warning string that exists only with some kernel option."""
        found = self._contains.get(needle)
        if found is None:
            with open(self.path, "rb") as handle, \
                    mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as image:
                found = any(image.find(needle, offset, offset + length) >= 0
                            for _start, length, offset in self._loaded_ranges)
            self._contains[needle] = found
        return found

    def text_names(self) -> list[str]:
        """The sorted, distinct names of symbols in executable sections: what a place
        may name (functions and asm entry labels; no data, no types)."""
        if self._text_names is None:
            self._text_names = sorted({name for name, section in zip(self.names, self.section_of)
                                       if section in self.executable})
        return self._text_names

    def address_of(self, name: str) -> int | None:
        index = self.by_name.get(name)
        return None if index is None else self.addresses[index]


_kernel: ElfSymbols | None = None
_kernel_range: tuple[int, int] | None = None
_kernel_bias = 0          # set by kp-kaslr --relocate, with gdb's symbol-file -o


def _forget() -> None:
    global _kernel, _kernel_range
    _kernel = None
    _kernel_range = None


def _forget_unless_same_file() -> None:
    # Module symbol files added later do not change the kernel's table.
    if _kernel is not None and _kernel.path == gdb.current_progspace().filename:
        return
    _forget()


cache.register(_forget_unless_same_file, *cache.OBJFILE)
cache.register(_forget, "relocate")


def kernel() -> ElfSymbols:
    """The symbol table of the vmlinux gdb has loaded."""
    global _kernel
    if _kernel is None:
        path = gdb.current_progspace().filename
        if path is None:
            raise KpError("no kernel symbol file loaded; load the DWARF vmlinux first: "
                          "file /path/to/vmlinux")
        _kernel = ElfSymbols(path, _kernel_bias)
    return _kernel


def relocate(bias: int) -> None:
    """Shift the kernel's symbols by a KASLR slide (gdb's own are shifted by the caller);
    every cache of things located through symbols goes too (cache "relocate")."""
    global _kernel_bias
    _kernel_bias = bias
    cache.clear("relocate")


def kernel_address(name: str) -> int:
    """Address of a kernel symbol (static ones included) by name."""
    address = kernel().address_of(name)
    if address is None:
        raise KpError(f"no symbol `{name}` in the kernel symbol file")
    return address


def in_kernel_image(address: int) -> bool:
    """Is `address` inside the vmlinux image (_text.._end) rather than a module?"""
    global _kernel_range
    if _kernel_range is None:
        table = kernel()
        start = table.address_of("_text") or table.address_of("_stext") or 0
        end = table.address_of("_end") or (table.addresses[-1] if table.addresses else 0)
        _kernel_range = (start, end)
    return _kernel_range[0] <= address < _kernel_range[1]
