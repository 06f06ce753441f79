"""Property tests of the pure decoders, parsers and renderers (issue 13).

Random and damaged inputs: kernel memory with struct images that are random, truncated,
bit-flipped, or linked into cycles and absurd lengths; ELF symbol tables and relocatable
objects with damaged headers; kprobe_events lines and place specs; gdb's instruction and
`info scope` text; model objects straight into the renderers. Whatever comes in, the
plugin either answers or raises its own one-line KpError: any other exception, a
multi-line message or a hang is a bug of ours.

Kernel memory is a fake: a handful of regions served through the stand-in `gdb` module
(tests/conftest.py), with struct layouts from fake DWARF types shaped like the 6.1
kernel's. Runs are repeatable (derandomize), and no call into the plugin may take longer
than EXAMPLE_SECONDS (a SIGALRM timer: a hang fails the test instead of blocking it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import pathlib
import random
import signal
import struct
import types
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema"
EXAMPLE_SECONDS = 20.0     # far above any real example (< 0.1 s), so load on a 2-core CI never trips it
U64 = (1 << 64) - 1


def repeatable(max_examples: int) -> settings:
    """Fixed examples (CI-repeatable), no example database in the work tree, our own
    timeout instead of hypothesis' deadline (which only measures, and flakes under load)."""
    return settings(max_examples=max_examples, derandomize=True, database=None,
                    deadline=None, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(BaseException):
    """An example ran past EXAMPLE_SECONDS. A BaseException, so no `except Exception`
    in the code under test can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float = EXAMPLE_SECONDS) -> Iterator[None]:
    def expire(_signum, _frame):
        raise Hang(f"still running after {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def answer_or_kp_error(call: Callable[..., Any], *args: Any) -> Any:
    """call(*args), or the KpError it raised (checked to be one line). Anything else
    propagates and fails the property."""
    from gdb_kprobe.errors import KpError
    with time_limit():
        try:
            return call(*args)
        except KpError as exc:
            message = str(exc)
            assert message and "\n" not in message and "\r" not in message, \
                f"KpError message is not one line: {message!r}"
            return exc


def is_error(result: Any) -> bool:
    from gdb_kprobe.errors import KpError
    return isinstance(result, KpError)


@functools.cache
def schema_validator(schema_name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / f"{schema_name}.json").read_text()))


def validate(document: dict, schema_name: str) -> None:
    """One line of JSON that parses back and matches the published schema (docs/json.md)."""
    from gdb_kprobe.ui import jsonout
    text = jsonout.dumps(document)
    assert text.endswith("\n") and "\n" not in text[:-1]
    schema_validator(schema_name).validate(json.loads(text))


# ==========================================================================================
# ELF images: a small writer, so symbol tables and .ko files can be made and then damaged
# ==========================================================================================

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS = 1, 2, 3, 7, 8
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
SHN_ABS = 0xFFF1


@dataclasses.dataclass
class Section:
    name: str
    kind: int
    flags: int = 0
    address: int = 0
    data: bytes = b""
    link: int = 0
    entsize: int = 0


def elf_image(sections: list[Section], elf_type: int = 2) -> bytes:
    """ELF64 little-endian: header, section contents, .shstrtab, then the section headers
    (index 0 is the null section, the last one .shstrtab)."""
    names, name_offsets = b"\0", []
    for name in [section.name for section in sections] + [".shstrtab"]:
        name_offsets.append(len(names))
        names += name.encode() + b"\0"
    every = sections + [Section(".shstrtab", SHT_STRTAB, data=names)]
    body, offsets = bytearray(64), []
    for section in every:
        body += bytes(-len(body) % 8)
        offsets.append(len(body))
        if section.kind != SHT_NOBITS:
            body += section.data
    body += bytes(-len(body) % 8)
    shoff, headers = len(body), bytearray(64)
    for section, name_offset, offset in zip(every, name_offsets, offsets):
        headers += struct.pack("<IIQQQQIIQQ", name_offset, section.kind, section.flags,
                               section.address, offset, len(section.data), section.link,
                               0, 8, section.entsize)
    count = len(every) + 1
    body[:64] = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, bytes(7),
                            elf_type, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, count, count - 1)
    return bytes(body + headers)


@dataclasses.dataclass
class Sym:
    name: str
    value: int
    size: int = 0
    kind: int = 2            # STT_FUNC
    bind: int = 1            # STB_GLOBAL
    shndx: int = 1


def symbol_table_elf(symbols_: list[Sym], text_address: int, text: bytes,
                     data_address: int = 0, data_size: int = 0) -> bytes:
    """A linked image (values are addresses, as in vmlinux) with .text, .data, .symtab."""
    strings = b"\0"
    entries = b"\0" * 24
    for sym in symbols_:
        name_offset = len(strings)
        strings += sym.name.encode("utf-8", "surrogateescape") + b"\0"
        entries += struct.pack("<IBBHQQ", name_offset, (sym.bind << 4) | sym.kind, 0,
                               sym.shndx, sym.value & U64, sym.size & U64)
    # section indexes: 1 .text, 2 .data, 3 .symtab, 4 .strtab
    return elf_image([
        Section(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_address, text),
        Section(".data", SHT_PROGBITS, SHF_ALLOC, data_address, b"\0" * data_size),
        Section(".symtab", SHT_SYMTAB, 0, 0, entries, link=4, entsize=24),
        Section(".strtab", SHT_STRTAB, 0, 0, strings),
    ])


def relocatable_ko(build_id: bytes) -> bytes:
    """An ET_REL object like a .ko: code sections and a GNU build-id note."""
    note = struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id
    return elf_image([
        Section(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, 0, b"\x90" * 32),
        Section(".kprobes.text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, 0, b"\xc3" * 16),
        Section(".data", SHT_PROGBITS, SHF_ALLOC, 0, b"\1" * 8),
        Section(".note.gnu.build-id", SHT_NOTE, SHF_ALLOC, 0, note),
    ], elf_type=1)


@dataclasses.dataclass
class Damage:
    """How a file image is spoiled: header fields overwritten, bits flipped, cut short."""

    overwrites: list[tuple[int, int, int]]    # (offset, width in bytes, value)
    flips: list[tuple[int, int]]              # (offset, bit)
    cut: int | None                           # keep only this many bytes

    def apply(self, image: bytes) -> bytes:
        spoiled = bytearray(image)
        for offset, width, value in self.overwrites:
            if offset + width <= len(spoiled):
                spoiled[offset:offset + width] = (value & ((1 << 8 * width) - 1)).to_bytes(
                    width, "little")
        for offset, bit in self.flips:
            if offset < len(spoiled):
                spoiled[offset] ^= 1 << bit
        return bytes(spoiled[:self.cut] if self.cut is not None else spoiled)


# ELF header fields the parsers trust: e_shoff, e_shentsize, e_shnum, e_shstrndx, e_ident
HEADER_FIELDS = [(0x28, 8), (0x3A, 2), (0x3C, 2), (0x3E, 2), (4, 1), (5, 1), (0x10, 2)]
# section header fields (relative to a header): sh_type, sh_flags, sh_offset, sh_size,
# sh_link, sh_addr
SECTION_FIELDS = [(4, 4), (8, 8), (0x18, 8), (0x20, 8), (0x28, 4), (0x10, 8)]
ABSURD = st.sampled_from([0, 1, 3, 0x17, 0x40, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40,
                          U64, U64 - 7])


@st.composite
def damages(draw, image_size: int, section_headers_at: int | None = None,
            section_count: int = 0) -> Damage:
    overwrites = []
    for _ in range(draw(st.integers(0, 3))):
        if section_headers_at is not None and draw(st.booleans()):
            index = draw(st.integers(0, max(section_count - 1, 0)))
            offset, width = draw(st.sampled_from(SECTION_FIELDS))
            offset += section_headers_at + 64 * index
        else:
            offset, width = draw(st.sampled_from(HEADER_FIELDS))
        value = draw(ABSURD | st.integers(0, (1 << 8 * width) - 1))
        overwrites.append((offset, width, value))
    flips = draw(st.lists(st.tuples(st.integers(0, image_size - 1), st.integers(0, 7)),
                          max_size=4))
    cut = draw(st.none() | st.integers(0, image_size))
    return Damage(overwrites, flips, cut)


# ==========================================================================================
# Fake DWARF types and kernel memory, served through the stand-in gdb module
# ==========================================================================================

TYPE_CODES = dict(TYPE_CODE_PTR=1, TYPE_CODE_ARRAY=2, TYPE_CODE_STRUCT=3, TYPE_CODE_UNION=4,
                  TYPE_CODE_ENUM=5, TYPE_CODE_FUNC=7, TYPE_CODE_INT=8, TYPE_CODE_BOOL=20,
                  TYPE_CODE_CHAR=21, TYPE_CODE_VOID=9)
C = types.SimpleNamespace(**TYPE_CODES)


class FakeType:
    """What types.py asks of a gdb.Type: code, sizeof, fields, target, signedness."""

    def __init__(self, code: int, sizeof: int, name: str | None = None,
                 members: list["FakeField"] | None = None, pointee: "FakeType | None" = None,
                 is_signed: bool = False) -> None:
        self.code, self.sizeof, self.name = code, sizeof, name
        self.members = members or []
        self.pointee = pointee
        self.is_signed = is_signed
        self.align = {C.TYPE_CODE_ARRAY: pointee.align if pointee else 1,
                      C.TYPE_CODE_STRUCT: 8}.get(code, min(8, sizeof))

    def strip_typedefs(self) -> "FakeType":
        return self

    def unqualified(self) -> "FakeType":
        return self

    def target(self) -> "FakeType":
        return self.pointee

    def fields(self) -> list["FakeField"]:
        return list(self.members)


@dataclasses.dataclass
class FakeField:
    name: str
    type: FakeType
    bitpos: int
    bitsize: int = 0



def integer(size: int, signed: bool = False, name: str | None = None) -> FakeType:
    return FakeType(C.TYPE_CODE_INT, size, name, is_signed=signed)


def pointer(to: FakeType) -> FakeType:
    return FakeType(C.TYPE_CODE_PTR, 8, pointee=to)


def array(of: FakeType, count: int) -> FakeType:
    return FakeType(C.TYPE_CODE_ARRAY, of.sizeof * count, pointee=of)


def struct_type(name: str, members: list[tuple[str, FakeType]]) -> FakeType:
    """Members laid out in order with natural alignment, as gcc does."""
    offset, fields = 0, []
    for member_name, member_type in members:
        offset += -offset % member_type.align
        fields.append(FakeField(member_name, member_type, offset * 8))
        offset += member_type.sizeof
    offset += -offset % 8
    return FakeType(C.TYPE_CODE_STRUCT, offset, f"struct {name}", fields)


U8, U32, S32, ULONG = integer(1), integer(4), integer(4, True), integer(8)
CHAR = integer(1, True, "char")
CODE = pointer(FakeType(C.TYPE_CODE_FUNC, 1))
BYTES = pointer(U8)
STRING = pointer(CHAR)
HLIST_NODE = struct_type("hlist_node", [("next", BYTES), ("pprev", BYTES)])
LIST_HEAD = struct_type("list_head", [("next", BYTES), ("prev", BYTES)])
KPROBE = struct_type("kprobe", [
    ("hlist", HLIST_NODE), ("list", LIST_HEAD), ("nmissed", ULONG), ("addr", BYTES),
    ("symbol_name", STRING), ("offset", U32), ("pre_handler", CODE), ("post_handler", CODE),
    ("opcode", U8),
    ("ainsn", struct_type("arch_specific_insn", [("insn", BYTES), ("boostable", U8),
                                                 ("size", U8)])),
    ("flags", U32)])
KRETPROBE = struct_type("kretprobe", [
    ("kp", KPROBE), ("handler", CODE), ("entry_handler", CODE), ("maxactive", S32),
    ("nmissed", S32), ("data_size", ULONG), ("rh", BYTES)])
TRACE_KPROBE = struct_type("trace_kprobe", [
    ("devent", LIST_HEAD), ("nhit", BYTES), ("symbol", STRING), ("rp", KRETPROBE),
    ("tp", struct_type("trace_probe", [("event", BYTES)]))])
TRACE_PROBE_EVENT = struct_type("trace_probe_event", [
    ("flags", U32), ("class", struct_type("trace_event_class", [("system", STRING)])),
    ("call", struct_type("trace_event_call", [("name", STRING)]))])
MODULE_LAYOUT = struct_type("module_layout", [("base", BYTES), ("size", U32)])
MODULE = struct_type("module", [
    ("state", integer(4, True)), ("list", LIST_HEAD), ("name", array(CHAR, 56)),
    ("core_layout", MODULE_LAYOUT), ("init_layout", MODULE_LAYOUT), ("kallsyms", BYTES),
    ("sect_attrs", BYTES)])
MOD_KALLSYMS = struct_type("mod_kallsyms", [("symtab", BYTES), ("num_symtab", U32),
                                            ("strtab", STRING)])
MODULE_SECT_ATTR = struct_type("module_sect_attr", [
    ("battr", struct_type("bin_attribute", [
        ("attr", struct_type("attribute", [("name", STRING), ("mode", U32)])),
        ("size", ULONG)])),
    ("address", ULONG)])
MODULE_SECT_ATTRS = struct_type("module_sect_attrs", [
    ("grp", array(U8, 16)), ("nsections", U32), ("attrs", array(MODULE_SECT_ATTR, 0))])
BLACKLIST_ENTRY = struct_type("kprobe_blacklist_entry", [
    ("list", LIST_HEAD), ("start_addr", ULONG), ("end_addr", ULONG)])
RETHOOK = struct_type("rethook", [("data", BYTES), ("handler", CODE),
                                  ("pool", struct_type("freelist_head", [("head", BYTES)]))])
FREELIST_NODE = struct_type("freelist_node", [("refs", U32), ("next", BYTES)])
OPTIMIZED_KPROBE = struct_type("optimized_kprobe", [
    ("kp", KPROBE), ("list", LIST_HEAD),
    ("optinsn", struct_type("arch_optimized_insn", [("insn", BYTES), ("size", ULONG)]))])
KPROBE_CTLBLK = struct_type("kprobe_ctlblk", [("kprobe_status", ULONG)])
STRUCTS = {t.name: t for t in (KPROBE, KRETPROBE, TRACE_KPROBE, TRACE_PROBE_EVENT, MODULE,
                               MOD_KALLSYMS, MODULE_SECT_ATTR, MODULE_SECT_ATTRS,
                               BLACKLIST_ENTRY, RETHOOK, FREELIST_NODE, OPTIMIZED_KPROBE,
                               KPROBE_CTLBLK)}


def offset_of(struct: FakeType, path: str) -> tuple[int, FakeType]:
    """Byte offset and type of a dotted member path (`rp.kp.addr`)."""
    offset, current = 0, struct
    for part in path.split("."):
        if part.isdigit():                                     # an array element
            current = current.pointee
            offset += int(part) * current.sizeof
            continue
        member = next(m for m in current.members if m.name == part)
        offset += member.bitpos // 8
        current = member.type
    return offset, current


# -- the fake kernel: a symbol file and a memory map ----------------------------------------

TEXT = 0xFFFFFFFF81000000        # kernel text (the vmlinux .text)
TEXT_SIZE = 0x1000
DATA = 0xFFFFFFFF82000000        # kernel data: list heads, per-CPU variables
MODULE_TEXT = 0xFFFFFFFFC0000000
OBJECTS = 0xFFFF888000100000     # the slab: struct images, 0x400 apart
OBJECT_STRIDE = 0x400
OBJECT_COUNT = 10
STRINGS = 0xFFFF888000200000
UNMAPPED = 0xFFFF888000FF0000    # canonical, never readable
NON_CANONICAL = 0xDEAD000000000100   # a list poison value

# name: (offset in .text, size); "dup " is a second `dup` (a name kallsyms holds twice)
FUNCTIONS = {
    "inet_accept": (0x100, 0xA0), "vfs_read": (0x200, 0x80), "aggr_pre_handler": (0x300, 0x40),
    "pre_handler_kretprobe": (0x340, 0x40), "kprobe_dispatcher": (0x380, 0x40),
    "kretprobe_dispatcher": (0x3C0, 0x40), "dup": (0x400, 0x20), "dup ": (0x420, 0x20),
    "blacklisted_fn": (0x500, 0x40), "blacklisted_fn.cold": (0x540, 0x20),
    "nosize_fn": (0x600, 0),
}
DATA_SYMBOLS = {"kprobe_table": 0x0, "modules": 0x800, "kprobe_blacklist": 0x810,
                "nr_cpu_ids": 0x820, "__per_cpu_offset": 0x830, "current_kprobe": 0x900,
                "kprobe_ctlblk": 0x940}
KERNEL = {name: TEXT + offset for name, (offset, _) in FUNCTIONS.items()}
KERNEL |= {name: DATA + offset for name, offset in DATA_SYMBOLS.items()}
FILE_TEXT = random.Random(13).randbytes(TEXT_SIZE)     # every toy instruction occurs
NAMES = (b"\0kp_lab_kprobe\0handler_pre\0kprobes\0p_vfs_read_0\0$x\0.Lfoo\0"
         b"evil\nname\0\xff\xfe\0inet_accept\0dup \0.text\0")
# a page of strings; the last one runs into unmapped memory
STRING_TABLE = NAMES + b"\0" * (0x1000 - len(NAMES) - 12) + b"unterminated"


def kernel_symbol_file() -> bytes:
    symbols_ = [Sym(name.strip(), TEXT + offset, size) for name, (offset, size)
                in FUNCTIONS.items()]
    symbols_ += [Sym(name, DATA + offset, 8, kind=1, shndx=2)
                 for name, offset in DATA_SYMBOLS.items()]
    symbols_ += [Sym("_text", TEXT, kind=0), Sym("_stext", TEXT, kind=0),
                 Sym("_etext", TEXT + TEXT_SIZE, kind=0),
                 Sym("_end", DATA + 0x1000, kind=0, shndx=2)]
    return symbol_table_elf(symbols_, TEXT, FILE_TEXT, DATA, 0x1000)


class Memory:
    """Readable regions of kernel memory; reading a byte outside them fails like gdb."""

    def __init__(self, regions: dict[int, bytes], memory_error: type) -> None:
        self.regions = sorted(regions.items())
        self.memory_error = memory_error

    def read_memory(self, address: int, size: int) -> bytes:
        for start, data in self.regions:
            if start <= address and address + size <= start + len(data):
                return data[address - start: address - start + size]
        raise self.memory_error(f"Cannot access memory at address {address:#x}")


MAX_INSN = 7


def fake_instruction(data: bytes, address: int) -> tuple[int, str]:
    """(length, AT&T text) of a toy x86 subset, enough for the boundary, ftrace, optprobe
    and prologue logic: int3, call/jmp rel32, push %rbp, mov %rsp,%rbp, sub $N,%rsp, ..."""
    opcode = data[0]

    def rel32() -> int:
        return address + 5 + int.from_bytes(data[1:5], "little", signed=True)
    table = {0xCC: (1, "int3"), 0x55: (1, "push   %rbp"), 0x53: (1, "push   %rbx"),
             0x90: (1, "nop"), 0xC3: (1, "ret"), 0x48: (3, "mov    %rsp,%rbp"),
             0xFF: (2, "jmp    *%rax"), 0xF3: (4, "endbr64")}
    if opcode in table:
        return table[opcode]
    if opcode == 0xE8:
        return 5, f"call   {rel32() & U64:#x} <__fentry__>"
    if opcode == 0xE9:
        return 5, f"jmp    {rel32() & U64:#x}"
    if opcode == 0x75:
        goal = address + 2 + int.from_bytes(data[1:2], "little", signed=True)
        return 2, f"jne    {goal & U64:#x}"
    if opcode == 0x83:
        return 4, f"sub    $0x{data[3] if len(data) > 3 else 0:x},%rsp"
    return 1 + opcode % 6, f"mov    0x{opcode:x}(%rsp),%rax"


class World:
    """The plugin modules, imported against the fake gdb, and a way to swap memory."""

    def __init__(self, fake_gdb: Any, modules: types.SimpleNamespace) -> None:
        self.fake_gdb = fake_gdb
        self.modules = modules
        self.memory: Memory | None = None

    def __repr__(self) -> str:
        return "World(fake gdb, fake kernel)"

    def load(self, regions: dict[int, bytes], buckets: int) -> None:
        m = self.modules
        self.memory = Memory(regions, self.fake_gdb.MemoryError)
        self.fake_gdb.lookup_static_symbol = lambda name: types.SimpleNamespace(
            type=array(ULONG, buckets)) if name == "kprobe_table" else None
        m.cache.clear("cont")           # a new stop: nothing cached
        m.symbols._kernel_range = None

    def disassemble(self, start: int, count: int | None, end: int | None,
                    from_file: bool) -> list:
        """code._disassemble on the toy instruction set: from the symbol file's .text or
        from memory, failing like gdb when a byte of an instruction cannot be read."""
        m = self.modules
        found, address = [], start
        while (count is None or len(found) < count) and (end is None or address < end):
            window = b""
            for size in (MAX_INSN, 5, 4, 3, 2, 1):       # as much as is readable, up to 7
                if from_file:
                    window = m.symbols.kernel().file_bytes(address, size) or b""
                else:
                    with contextlib.suppress(self.fake_gdb.MemoryError):
                        window = self.memory.read_memory(address, size)
                if len(window) == size:
                    break
            length, asm = fake_instruction(window, address) if window else (1, "")
            if length > len(window):
                raise m.KpError(f"cannot read code at {start:#x}: Cannot access memory at "
                                f"address {address + len(window):#x}")
            found.append(m.code.Insn(address, window[:length], asm))
            address += length
            if end is None and count is None:
                break
        return found


@pytest.fixture
def world(fake_gdb, tmp_path, monkeypatch) -> World:
    for name, value in TYPE_CODES.items():
        setattr(fake_gdb, name, value)

    def lookup_type(name: str) -> FakeType:
        found = STRUCTS.get(name) or STRUCTS.get(f"struct {name}")
        if found is None:
            raise fake_gdb.error(f"No type named {name}.")
        return found

    fake_gdb.lookup_type = lookup_type
    fake_gdb.write = lambda text: None
    fake_gdb.parameter = lambda name: False
    fake_gdb.current_progspace = lambda: types.SimpleNamespace(filename=str(vmlinux))
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(kernel_symbol_file())
    from gdb_kprobe.analysis import prologue, scope
    from gdb_kprobe.commands import base, kp_show, last_list
    from gdb_kprobe.errors import KpError
    from gdb_kprobe.kernel import (anatomy, blacklist, checks, function_probes, kprobes,
                                   kprobes_list, lists, modules, places)
    from gdb_kprobe.target import cache, disasm, symbols
    from gdb_kprobe.ui import jsonout, render
    found = World(fake_gdb, types.SimpleNamespace(**{
        "code": disasm, "jsonout": jsonout, "location": places, "prologue": prologue,
        "render": render, "scope": scope, "symbols": symbols, "cache": cache,
        "base": base, "kp_show": kp_show, "last_list": last_list, "KpError": KpError,
        "anatomy": anatomy, "blacklist": blacklist, "checks": checks, "kprobes": kprobes,
        "lists": lists, "modules": modules, "report": kprobes_list,
        "function_probes": function_probes}))
    fake_gdb.selected_inferior = lambda: found.memory
    monkeypatch.setattr(disasm, "_disassemble", found.disassemble)
    monkeypatch.setattr(symbols, "_kernel", symbols.ElfSymbols(str(vmlinux)))
    return found


# -- strategies for kernel memory ---------------------------------------------------------
#
# The slab holds OBJECT_COUNT objects; in the coherent kernel object i has the role PLAN[i].
# Damage puts values from the pools below into its fields: pointers mostly to an object of
# the right role (so walks still get deep: aggregates, kretprobes, trace events, module
# kallsyms), else to any object (wrong type, cycles), poison or wild addresses.

ROLES = ["kprobe", "trace_kprobe", "optimized", "module", "kallsyms", "symtab", "blacklist",
         "event", "rethook", "sect_attrs", "noise"]
PLAN = ["kprobe", "trace_kprobe", "kprobe", "module", "kallsyms", "symtab", "blacklist",
        "event", "rethook", "sect_attrs"]
assert len(PLAN) == OBJECT_COUNT


def object_address(index: int) -> int:
    return OBJECTS + index * OBJECT_STRIDE


def planned(role: str, member_offset: int = 0) -> list[int]:
    return [object_address(i) + member_offset for i, r in enumerate(PLAN) if r == role]


def mostly(likely: list[int], unlikely: list[int]) -> st.SearchStrategy[int]:
    """One of `likely` three times in four, else one of `unlikely`."""
    return st.one_of(st.sampled_from(likely), st.sampled_from(likely),
                     st.sampled_from(likely), st.sampled_from(unlikely))


def weighted(known: list[int], bits: int = 64) -> st.SearchStrategy[int]:
    """A known value three times in four, else any `bits`-bit number."""
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(known),
                     st.integers(0, (1 << bits) - 1))


KPROBE_IN_TRACE_KPROBE = offset_of(TRACE_KPROBE, "rp.kp")[0]
LIST_IN_KPROBE = offset_of(KPROBE, "list")[0]
LIST_IN_MODULE = offset_of(MODULE, "list")[0]
BAD_POINTERS = [NON_CANONICAL, UNMAPPED, 1, U64, OBJECTS + 3]
ANY_OBJECT = [object_address(i) for i in range(OBJECT_COUNT)]

# what a damaged kernel may hold where a list node should be: the right nodes, other
# objects (wrong type), the object itself (a cycle), poison and wild pointers
hlist_nodes = mostly(
    planned("kprobe") + planned("trace_kprobe", KPROBE_IN_TRACE_KPROBE) + [0],
    ANY_OBJECT + [a + KPROBE_IN_TRACE_KPROBE for a in ANY_OBJECT] + BAD_POINTERS)
aggregate_links = mostly(
    planned("kprobe", LIST_IN_KPROBE) + planned("trace_kprobe", KPROBE_IN_TRACE_KPROBE
                                                + LIST_IN_KPROBE),
    [a + LIST_IN_KPROBE for a in ANY_OBJECT] + BAD_POINTERS + [0])
module_links = mostly(planned("module", LIST_IN_MODULE) + [KERNEL["modules"]],
                      [a + LIST_IN_MODULE for a in ANY_OBJECT] + BAD_POINTERS)
blacklist_links = mostly(planned("blacklist") + [KERNEL["kprobe_blacklist"]],
                         ANY_OBJECT + BAD_POINTERS)


def pointer_to(role: str) -> st.SearchStrategy[int]:
    return mostly(planned(role), ANY_OBJECT + [0] + BAD_POINTERS)


string_starts = [STRINGS + i for i in range(len(NAMES)) if i == 0 or NAMES[i - 1] == 0]
string_pointers = mostly(string_starts, [0, UNMAPPED, NON_CANONICAL,
                                         STRINGS + len(STRING_TABLE) - 5])
code_addresses = weighted([
    KERNEL["inet_accept"] + 0x14, MODULE_TEXT + 0x10, MODULE_TEXT + 0x8, KERNEL["vfs_read"],
    KERNEL["blacklisted_fn"], KERNEL["nosize_fn"] + 8, KERNEL["blacklisted_fn.cold"],
    KERNEL["inet_accept"], MODULE_TEXT + 0x24, MODULE_TEXT + 0xFFF, TEXT + TEXT_SIZE - 1,
    0, UNMAPPED, NON_CANONICAL]) | st.integers(TEXT, TEXT + TEXT_SIZE - 1)
# hypothesis favours the first entries: the interesting ones come first
handlers = weighted([KERNEL["pre_handler_kretprobe"], KERNEL["kprobe_dispatcher"],
                     KERNEL["aggr_pre_handler"], MODULE_TEXT + 0x20,
                     KERNEL["kretprobe_dispatcher"], TEXT + 0x123, 0, UNMAPPED])
counts = weighted([5, 1, 2, 0, 16, 42, 999, 1000, 1001, 99_999, 100_000, 0xFFFFFFFF], 32)
sizes = weighted([0x1000, 1, 0, 0x10000, 0xFFFFFFFF], 32)
module_names = st.sampled_from([b"kp_lab_kprobe", b"kp_lab_kprobe", b"kp_lab_kretprobe", b"",
                                b"x" * 56, b"evil\nname", b"\xff\xfe"]) | st.binary(max_size=56)
SYMBOLS_PER_SYMTAB = OBJECT_STRIDE // 24


def fill(image: bytearray, struct: FakeType, prefix: str, values: dict[str, Any]) -> None:
    """Write `values` (member path: int or bytes) into a struct image at their offsets."""
    for path, value in values.items():
        offset, member = offset_of(struct, f"{prefix}{path}" if prefix else path)
        raw = value if isinstance(value, bytes) else \
            (value & ((1 << 8 * member.sizeof) - 1)).to_bytes(member.sizeof, "little")
        image[offset:offset + len(raw)] = raw[:member.sizeof]


@st.composite
def kprobe_fields(draw) -> dict[str, Any]:
    return {"hlist.next": draw(hlist_nodes), "list.next": draw(aggregate_links),
            "addr": draw(code_addresses), "pre_handler": draw(handlers),
            "post_handler": draw(handlers), "flags": draw(weighted(list(range(0x20)), 32)),
            "nmissed": draw(st.integers(0, U64)), "symbol_name": draw(string_pointers),
            "ainsn.insn": draw(code_addresses), "ainsn.boostable": draw(st.integers(0, 255)),
            "opcode": draw(st.integers(0, 255))}


@st.composite
def kretprobe_fields(draw) -> dict[str, Any]:
    return {"handler": draw(handlers), "entry_handler": draw(handlers),
            "maxactive": draw(counts), "nmissed": draw(counts), "data_size": draw(counts),
            "rh": draw(pointer_to("rethook"))}


@st.composite
def struct_images(draw) -> bytes:
    """A random object for the slab: some kernel struct with fields from the pools above
    (pointers to the right or the wrong objects, absurd counts), or noise."""
    role = draw(st.sampled_from(ROLES))
    image = bytearray(draw(st.binary(min_size=OBJECT_STRIDE, max_size=OBJECT_STRIDE))
                      if role == "noise" else b"\0" * OBJECT_STRIDE)
    if role in ("kprobe", "optimized"):
        # a struct kprobe that may be the kp of a kretprobe or of an optimized_kprobe
        fill(image, KRETPROBE, "kp.", draw(kprobe_fields()))
        fill(image, KRETPROBE, "", draw(kretprobe_fields()))
        if role == "optimized":
            fill(image, OPTIMIZED_KPROBE, "", {"optinsn.insn": draw(code_addresses),
                                               "optinsn.size": draw(counts)})
    elif role == "trace_kprobe":
        fill(image, TRACE_KPROBE, "rp.kp.", draw(kprobe_fields()))
        fill(image, TRACE_KPROBE, "rp.", draw(kretprobe_fields()))
        fill(image, TRACE_KPROBE, "", {
            "nhit": draw(st.sampled_from([0, DATA, UNMAPPED])),
            "tp.event": draw(pointer_to("event"))})
    elif role == "module":
        fill(image, MODULE, "", {
            "list.next": draw(module_links), "name": draw(module_names),
            "state": draw(st.integers(-1, 3)),
            "core_layout.base": draw(mostly([MODULE_TEXT], [0, UNMAPPED, TEXT])),
            "core_layout.size": draw(sizes), "init_layout.base": draw(code_addresses),
            "init_layout.size": draw(sizes), "kallsyms": draw(pointer_to("kallsyms")),
            "sect_attrs": draw(pointer_to("sect_attrs"))})
    elif role == "kallsyms":
        fill(image, MOD_KALLSYMS, "", {
            "symtab": draw(pointer_to("symtab")),
            "num_symtab": draw(mostly([SYMBOLS_PER_SYMTAB, 3], [0, 100_000, 0xFFFFFFFF])),
            "strtab": draw(mostly([STRINGS], [0, UNMAPPED, STRINGS + len(STRING_TABLE) - 3]))})
    elif role == "symtab":
        for entry in range(1, SYMBOLS_PER_SYMTAB):      # entry 0 is the null symbol
            name_offset = draw(weighted([s - STRINGS for s in string_starts], 32))
            image[24 * entry: 24 * entry + 24] = struct.pack(
                "<IBBHQQ", name_offset, draw(st.integers(0, 255)), 0,
                draw(st.sampled_from([1, 1, 1, 0, 2, 0xFFF1])),
                draw(weighted([MODULE_TEXT + 8 * i for i in range(8)])), 0)
    elif role == "blacklist":
        fill(image, BLACKLIST_ENTRY, "", {"list.next": draw(blacklist_links),
                                          "start_addr": draw(code_addresses),
                                          "end_addr": draw(code_addresses)})
    elif role == "event":
        fill(image, TRACE_PROBE_EVENT, "", {"class.system": draw(string_pointers),
                                            "call.name": draw(string_pointers)})
    elif role == "rethook":
        fill(image, RETHOOK, "", {"pool.head": draw(pointer_to("rethook"))})
        fill(image, FREELIST_NODE, "", {"next": draw(pointer_to("rethook"))})
    elif role == "sect_attrs":
        fill(image, MODULE_SECT_ATTRS, "", {"nsections": draw(counts)})
        first = offset_of(MODULE_SECT_ATTRS, "attrs")[0]
        for entry in range(draw(st.integers(0, 4))):
            at = first + entry * MODULE_SECT_ATTR.sizeof
            image[at:at + 8] = draw(string_pointers).to_bytes(8, "little")
            address_at = at + offset_of(MODULE_SECT_ATTR, "address")[0]
            image[address_at:address_at + 8] = draw(code_addresses).to_bytes(8, "little")
    return bytes(image)


def coherent_kernel() -> dict[int, bytes]:
    """An undamaged kernel with one of everything: kprobe_table[0] holds a trace-event
    kprobe, then an aggregate (in module text) whose child is a module's kretprobe; one
    module with kallsyms and sections, a blacklist entry, a rethook, per-CPU state."""
    images = {i: bytearray(OBJECT_STRIDE) for i in range(OBJECT_COUNT)}
    fill(images[0], KRETPROBE, "", {     # the aggregate's child: a kretprobe
        "kp.list.next": object_address(2) + LIST_IN_KPROBE, "kp.addr": MODULE_TEXT + 0x10,
        "kp.pre_handler": KERNEL["pre_handler_kretprobe"], "kp.flags": 0x18,
        "handler": MODULE_TEXT + 0x20, "maxactive": 20, "data_size": 8,
        "rh": object_address(8)})
    fill(images[1], TRACE_KPROBE, "", {
        "rp.kp.hlist.next": object_address(2), "rp.kp.addr": KERNEL["vfs_read"] + 4,
        "rp.kp.pre_handler": KERNEL["kprobe_dispatcher"], "rp.kp.opcode": 0x48,
        "rp.kp.ainsn.insn": MODULE_TEXT + 0x800, "rp.kp.ainsn.boostable": 1,
        "tp.event": object_address(7), "nhit": DATA + 0x980})
    fill(images[2], OPTIMIZED_KPROBE, "", {
        "kp.list.next": object_address(0) + LIST_IN_KPROBE, "kp.addr": MODULE_TEXT + 0x10,
        "kp.pre_handler": KERNEL["aggr_pre_handler"], "kp.flags": 0x4,
        "optinsn.insn": MODULE_TEXT + 0x400, "optinsn.size": 5})
    fill(images[3], MODULE, "", {
        "list.next": KERNEL["modules"], "name": b"kp_lab_kprobe", "state": 0,
        "core_layout.base": MODULE_TEXT, "core_layout.size": 0x1000,
        "kallsyms": object_address(4), "sect_attrs": object_address(9)})
    fill(images[4], MOD_KALLSYMS, "", {"symtab": object_address(5), "num_symtab": 4,
                                       "strtab": STRINGS})
    for entry, (name, value) in enumerate([("kp_lab_kprobe", MODULE_TEXT),
                                           ("handler_pre", MODULE_TEXT + 0x20),
                                           ("$x", MODULE_TEXT + 0x20)], start=1):
        images[5][24 * entry: 24 * entry + 24] = struct.pack(
            "<IBBHQQ", NAMES.index(b"\0" + name.encode() + b"\0") + 1, 2, 0, 1, value, 0)
    fill(images[6], BLACKLIST_ENTRY, "", {"list.next": KERNEL["kprobe_blacklist"],
                                          "start_addr": KERNEL["blacklisted_fn"],
                                          "end_addr": KERNEL["blacklisted_fn"] + 0x40})
    fill(images[7], TRACE_PROBE_EVENT, "", {
        "class.system": STRINGS + NAMES.index(b"kprobes\0"),
        "call.name": STRINGS + NAMES.index(b"p_vfs_read_0\0")})
    fill(images[9], MODULE_SECT_ATTRS, "", {"nsections": 1})
    fill(images[9], MODULE_SECT_ATTRS, "", {})
    first = offset_of(MODULE_SECT_ATTRS, "attrs")[0]
    fill(images[9], MODULE_SECT_ATTR, "", {})
    images[9][first:first + 8] = (STRINGS + NAMES.index(b".text\0")).to_bytes(8, "little")
    at = first + offset_of(MODULE_SECT_ATTR, "address")[0]
    images[9][at:at + 8] = MODULE_TEXT.to_bytes(8, "little")
    data = bytearray(0x1000)
    words = {0: object_address(1) + KPROBE_IN_TRACE_KPROBE,     # kprobe_table[0]
             DATA_SYMBOLS["modules"]: object_address(3) + LIST_IN_MODULE,
             DATA_SYMBOLS["kprobe_blacklist"]: object_address(6),
             DATA_SYMBOLS["nr_cpu_ids"]: 2,
             DATA_SYMBOLS["__per_cpu_offset"]: 0, DATA_SYMBOLS["__per_cpu_offset"] + 8: 8,
             DATA_SYMBOLS["current_kprobe"]: object_address(2),
             DATA_SYMBOLS["kprobe_ctlblk"]: 1, 0x980: 7, 0x988: 3}
    for offset, value in words.items():
        data[offset:offset + 8] = value.to_bytes(8, "little")
    regions = {TEXT: FILE_TEXT, DATA: bytes(data), STRINGS: STRING_TABLE,
               MODULE_TEXT: FILE_TEXT}
    regions |= {object_address(i): bytes(image) for i, image in images.items()}
    return regions


def field_at(index: int, struct: FakeType, path: str) -> tuple[int, int]:
    """(address, width) of a member of slab object `index`."""
    offset, member = offset_of(struct, path)
    return object_address(index) + offset, member.sizeof


# the fields a damaged kernel most likely has wrong, with what may be there instead
DAMAGE_TARGETS: list[tuple[tuple[int, int], st.SearchStrategy]] = [
    ((DATA, 8), hlist_nodes),                                 # kprobe_table[0]
    ((DATA + DATA_SYMBOLS["modules"], 8), module_links),
    ((DATA + DATA_SYMBOLS["kprobe_blacklist"], 8), blacklist_links),
    ((DATA + DATA_SYMBOLS["nr_cpu_ids"], 4), st.sampled_from([0, 1, 9000, 0xFFFFFFFF])),
    ((DATA + DATA_SYMBOLS["__per_cpu_offset"] + 8, 8), st.sampled_from([1 << 40, U64, 0x10])),
    ((DATA + DATA_SYMBOLS["current_kprobe"], 8), hlist_nodes),
    ((DATA + 0x980, 8), st.integers(0, U64)),
    (field_at(0, KRETPROBE, "kp.list.next"), aggregate_links),
    (field_at(0, KRETPROBE, "kp.pre_handler"), handlers),
    (field_at(0, KRETPROBE, "kp.addr"), code_addresses),
    (field_at(0, KRETPROBE, "handler"), handlers),
    (field_at(0, KRETPROBE, "maxactive"), counts),
    (field_at(0, KRETPROBE, "rh"), pointer_to("rethook")),
    (field_at(1, TRACE_KPROBE, "rp.kp.hlist.next"), hlist_nodes),
    (field_at(1, TRACE_KPROBE, "rp.kp.pre_handler"), handlers),
    (field_at(1, TRACE_KPROBE, "rp.kp.addr"), code_addresses),
    (field_at(1, TRACE_KPROBE, "rp.kp.ainsn.insn"), code_addresses),
    (field_at(1, TRACE_KPROBE, "rp.kp.flags"), st.integers(0, 0xFFFFFFFF)),
    (field_at(1, TRACE_KPROBE, "tp.event"), pointer_to("event")),
    (field_at(1, TRACE_KPROBE, "nhit"), code_addresses),
    (field_at(2, OPTIMIZED_KPROBE, "kp.hlist.next"), hlist_nodes),
    (field_at(2, OPTIMIZED_KPROBE, "kp.list.next"), aggregate_links),
    (field_at(2, OPTIMIZED_KPROBE, "kp.addr"), code_addresses),
    (field_at(2, OPTIMIZED_KPROBE, "kp.flags"), st.integers(0, 0x3F)),
    (field_at(2, OPTIMIZED_KPROBE, "optinsn.insn"), code_addresses),
    (field_at(2, OPTIMIZED_KPROBE, "optinsn.size"), counts),
    (field_at(3, MODULE, "list.next"), module_links),
    (field_at(3, MODULE, "name"), module_names.map(lambda n: n.ljust(56, b"\0")[:56])),
    (field_at(3, MODULE, "core_layout.base"), code_addresses),
    (field_at(3, MODULE, "core_layout.size"), sizes),
    (field_at(3, MODULE, "kallsyms"), pointer_to("kallsyms")),
    (field_at(3, MODULE, "sect_attrs"), pointer_to("sect_attrs")),
    (field_at(4, MOD_KALLSYMS, "symtab"), pointer_to("symtab")),
    (field_at(4, MOD_KALLSYMS, "num_symtab"), counts),
    (field_at(4, MOD_KALLSYMS, "strtab"), string_pointers),
    ((object_address(5) + 24, 4), weighted([s - STRINGS for s in string_starts], 32)),  # name
    ((object_address(5) + 32, 8), code_addresses),               # a symbol's value
    (field_at(6, BLACKLIST_ENTRY, "list.next"), blacklist_links),
    (field_at(6, BLACKLIST_ENTRY, "end_addr"), code_addresses),
    (field_at(7, TRACE_PROBE_EVENT, "class.system"), string_pointers),
    (field_at(7, TRACE_PROBE_EVENT, "call.name"), string_pointers),
    (field_at(8, RETHOOK, "pool.head"), pointer_to("rethook")),
    (field_at(9, MODULE_SECT_ATTRS, "nsections"), counts),
]


def kernel_with_control_characters() -> "KernelImage":
    """The coherent kernel whose module name, first module symbol and trace event name hold
    a newline: names read from memory must not break a line or a one-line error."""
    regions = {start: bytearray(data) for start, data in coherent_kernel().items()}
    evil = NAMES.index(b"evil\n")
    regions[object_address(5)][24:28] = evil.to_bytes(4, "little")
    name_at = offset_of(MODULE, "name")[0]
    regions[object_address(3)][name_at:name_at + 10] = b"evil\nname\0"
    fill(regions[object_address(7)], TRACE_PROBE_EVENT, "", {"call.name": STRINGS + evil})
    return KernelImage(({start: bytes(data) for start, data in regions.items()}, 1))


class KernelImage(tuple):
    """(regions, bucket count), with a repr short enough for a failure report."""

    def __repr__(self) -> str:
        regions, buckets = self
        shown = ", ".join(f"{start:#x}: {len(data)} bytes, sha1 "
                          f"{hashlib.sha1(data).hexdigest()[:8]}"
                          for start, data in sorted(regions.items()))
        return f"KernelImage(buckets={buckets}, {{{shown}}})"


@st.composite
def kernel_memories(draw) -> KernelImage:
    """The coherent kernel, then damaged: fields overwritten with wrong pointers (other
    objects, cycles, poison), absurd counts and lengths; whole objects replaced by random
    ones; bits flipped; objects cut short. The simplest example is the undamaged kernel."""
    regions = {start: bytearray(data) for start, data in coherent_kernel().items()}

    def region_of(address: int) -> tuple[int, bytearray]:
        return next((start, data) for start, data in regions.items()
                    if start <= address < start + len(data))

    for target in draw(st.lists(st.sampled_from(range(len(DAMAGE_TARGETS))), max_size=4)):
        (address, width), values = DAMAGE_TARGETS[target]
        start, data = region_of(address)
        value = draw(values)
        raw = value if isinstance(value, bytes) else \
            (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        data[address - start: address - start + width] = raw
    for index in draw(st.lists(st.integers(0, OBJECT_COUNT - 1), max_size=2, unique=True)):
        regions[object_address(index)] = bytearray(draw(struct_images()))
    for index, offset, bit in draw(st.lists(st.tuples(st.integers(0, OBJECT_COUNT - 1),
                                                      st.integers(0, 0xFF),
                                                      st.integers(0, 7)), max_size=4)):
        regions[object_address(index)][offset] ^= 1 << bit         # bit rot
    for index, keep in draw(st.lists(st.tuples(st.integers(0, OBJECT_COUNT - 1),
                                               st.sampled_from([0, 8, 0x20, 0x90])),
                                     max_size=1)):
        del regions[object_address(index)][keep:]                # an object cut short
    for offset, value in draw(st.lists(st.tuples(st.integers(0, TEXT_SIZE - 1),
                                                 st.sampled_from([0xCC, 0xE8, 0xE9, 0x90])),
                                       max_size=4)):
        regions[TEXT][offset] = value                # live patches: int3, jmp, call
    buckets = draw(st.sampled_from([1, 1, 8]))       # 8: probes land in the wrong bucket
    return KernelImage(({start: bytes(data) for start, data in regions.items() if data},
                        buckets))


# -- place specs and kprobe_events lines ---------------------------------------------------

def one_line_text(max_size: int) -> st.SearchStrategy[str]:
    """Any text a gdb command line can carry: everything but line breaks."""
    return st.text(st.characters(blacklist_characters="\n\r", codec="utf-8"),
                   max_size=max_size)


symbol_names = st.sampled_from(["inet_accept", "vfs_read", "dup", "blacklisted_fn",
                                "blacklisted_fn.cold", "nosize_fn", "kprobe_dispatcher",
                                "no_such_fn", "handler_pre", "kp_lab_kprobe", "_text"]) \
    | st.from_regex(r"[A-Za-z_.][\w.]{0,20}", fullmatch=True)
offsets = st.sampled_from(["0", "4", "0x14", "20", "0x9f", "0xa0", "010", "-4", "0x", "1_0",
                           "0xffffffffffffffff", "9" * 30, "1" * 5000, "²", "0b11", "+1"]) \
    | st.integers(0, 1 << 70).map(hex) | st.integers(0, 1 << 20).map(str)
addresses = st.sampled_from([KERNEL["inet_accept"] + 0x14, TEXT, MODULE_TEXT + 0x10, 0, U64,
                             1 << 64, 1 << 80]) | st.integers(0, 1 << 66)


@st.composite
def place_specs(draw) -> str:
    """What kp-check/kp-show/kp-sim take: sym, sym+off, mod:sym+off, 0xaddr, *0xaddr, #N,
    with the kprobe_events spellings (SYM%return) and plain noise mixed in."""
    form = draw(st.sampled_from(["sym", "sym+off", "mod:sym+off", "mod:sym", "address",
                                 "*address", "bare hex", "sym%return", "index", "noise",
                                 "sym-off"]))
    name, offset = draw(symbol_names), draw(offsets)
    module = draw(st.sampled_from(["kp_lab_kprobe", "kp-lab", "nomod", "", "a:b"]))
    address = draw(addresses)
    spec = {"sym": name, "sym+off": f"{name}+{offset}", "mod:sym+off": f"{module}:{name}+{offset}",
            "mod:sym": f"{module}:{name}", "address": f"{address:#x}",
            "*address": f"*{address:#x}", "bare hex": f"{address:016x}",
            "sym%return": f"{name}%return", "index": f"#{draw(offsets)}",
            "sym-off": f"{name}-{offset}",
            "noise": draw(one_line_text(40))}[form]
    return draw(st.sampled_from(["", " ", "\t"])) + spec + draw(st.sampled_from(["", " "]))


@st.composite
def kprobe_events_lines(draw) -> str:
    """Lines as written to tracing/kprobe_events (Documentation/trace/kprobetrace.rst)."""
    kind = draw(st.sampled_from(["p", "r", "r10", "-", "p:", "x"]))
    event = draw(st.sampled_from(["", ":kp_entry", ":grp/ev", ":/", ":a/b/c"]))
    args = draw(st.lists(st.sampled_from(["%di", "x=%si:u64", "+8(%sp):s32", "@0x10",
                                          "$retval", "arg=+0(%di):string", "=", ":u7"]),
                         max_size=3))
    return " ".join([kind + event, draw(place_specs()), *args])


# ==========================================================================================
# Properties
# ==========================================================================================

@repeatable(max_examples=200)
@given(memory=kernel_memories(), verbose=st.booleans(), elsewhere=code_addresses)
@example(memory=kernel_with_control_characters(), verbose=True, elsewhere=MODULE_TEXT + 8)
def test_probe_list_of_damaged_kernel_memory(world, memory, verbose, elsewhere):
    """kp-list's model, text and JSON over random/damaged kprobe_table, aggregates,
    kretprobes, trace events and modules: rows and damage notes, never a crash or a hang;
    kp-show on each listed probe and on an address `elsewhere` (mostly no probe there)."""
    regions, buckets = memory
    world.load(regions, buckets)
    m = world.modules
    result = answer_or_kp_error(m.report.probe_rows, verbose)
    if is_error(result):
        event("kp-list: KpError")
        return
    # how deep the damaged memory let the walk go (--hypothesis-show-statistics)
    event(f"kp-list: {min(len(result.probes), 3)}+ probes, "
          f"{'damaged' if len(result.rows) > len(result.probes) else 'whole'}")
    for row in result.probes:
        event("row: " + ("aggregate child" if row.aggregate else "plain")
              + (", in a module" if row.location and row.location.module else "")
              + (", kretprobe" if row.details and row.details.kretprobe else "")
              + (", trace event" if row.details and row.details.event else ""))
    text = m.render.probe_list(result.rows, True)
    # one line per row and per verbose line: no name read from memory breaks a line
    assert text.count("\n") == len(result.rows) + sum(len(m.render.verbose_lines(row))
                                                      for row in result.probes)
    validate(m.jsonout.probe_list(result.rows), "kp-list")
    for address in [row.probe.addr for row in result.probes] + [elsewhere]:
        shown = answer_or_kp_error(m.function_probes.at_address, address)
        event(f"kp-show: {'KpError' if is_error(shown) else shown.places[0].patch.mechanism}")
        if not is_error(shown):
            assert isinstance(m.render.probes_shown(shown), str)
            validate(m.jsonout.probes_shown(shown), "kp-show")
    for row in result.probes[:2]:
        if row.location is not None and row.location.module is None:
            shown = answer_or_kp_error(m.function_probes.in_function, row.location.symbol)
            event(f"kp-show FUNCTION: {'KpError' if is_error(shown) else len(shown.places)}")
            if not is_error(shown):
                assert isinstance(m.render.probes_shown(shown), str)
                validate(m.jsonout.probes_shown(shown), "kp-show")


@repeatable(max_examples=150)
@given(memory=kernel_memories())
def test_module_and_blacklist_walks_end(world, memory):
    """The modules list, each module's kallsyms and section table, and kprobe_blacklist:
    cycles, wild pointers and absurd counts end the walk with a note."""
    regions, buckets = memory
    world.load(regions, buckets)
    m = world.modules
    walk = answer_or_kp_error(m.modules.read_modules)
    if not is_error(walk):
        event(f"modules: {min(len(walk.items), 3)}+, {'damaged' if walk.damage else 'whole'}")
        rows = []
        for module in walk.items:
            named = answer_or_kp_error(module.symbol, MODULE_TEXT + 0x10)
            event("module symbol: " + ("KpError" if is_error(named) else
                                       "none" if named is None else "found"))
            for address in (module.address, TEXT, U64):
                answer_or_kp_error(module.symbol, address)
            answer_or_kp_error(module.address_of, "handler_pre")
            answer_or_kp_error(m.modules.sections, module)
            rows.append((module, None, ""))
        assert isinstance(m.render.module_list(rows, [walk.damage] if walk.damage else []), str)
    blacklist = answer_or_kp_error(m.blacklist.read_blacklist)
    if not is_error(blacklist):
        from gdb_kprobe.kernel.kallsyms import Symbolizer
        symbolizer = Symbolizer()
        rows = [(entry, answer_or_kp_error(symbolizer.lookup, entry.start))
                for entry in blacklist.items]
        rows = [(entry, None if is_error(found) else found) for entry, found in rows]
        assert isinstance(m.render.blacklist(rows, [blacklist.damage] if blacklist.damage
                                             else []), str)


@repeatable(max_examples=200)
@given(memory=kernel_memories(), lines=st.lists(kprobe_events_lines() | place_specs(),
                                                min_size=1, max_size=3))
@example(memory=KernelImage(({DATA: b"\0" * 0x1000, TEXT: FILE_TEXT}, 1)),
         lines=["p:kp inet_accept+0x14", "r vfs_read%return", "#²", "#" + "1" * 5000, "dup",
                " ", "*0x" + "f" * 40])
def test_place_specs_and_kprobe_events_lines(world, memory, lines):
    """kp-check's verdict, location.resolve and kp-show's #N on random specs and whole
    kprobe_events lines (the place is the second word; the line itself is tried too)."""
    regions, buckets = memory
    world.load(regions, buckets)
    m = world.modules
    m.last_list.remember([KERNEL["inet_accept"] + 0x14])
    for line in lines:
        words = line.split()
        for spec in dict.fromkeys([line, words[1] if len(words) > 1 else line]):
            parts = answer_or_kp_error(m.location.split, spec.strip())
            if not is_error(parts):
                module, name, offset, _given = parts
                assert offset >= 0 and name
            place = answer_or_kp_error(m.location.resolve, spec)
            if not is_error(place):
                assert isinstance(str(place), str)
            answer_or_kp_error(m.kp_show._address_of, spec)
            answer_or_kp_error(m.kp_show._shown, spec)
            verdict = answer_or_kp_error(m.checks.check, spec)
            event("kp-check: " + ("KpError" if is_error(verdict) else
                                  verdict.kprobe_events.errno_name or "accepted"))
            if not is_error(verdict):
                for answer in (verdict.register_kprobe, verdict.kprobe_events):
                    assert answer is None or answer.accepted or answer.reason   # says why
                assert m.render.verdict(verdict).startswith(verdict.spec)
                validate(m.jsonout.verdicts([verdict]), "kp-check")


@repeatable(max_examples=120)
@given(symbols_=st.lists(st.builds(
    Sym,
    name=st.sampled_from(["inet_accept", "_text", "_end", "$x", ".Ltmp", "__crc_x",
                          "__start_foo", "kallsyms_names", "__x", "a", ""])
    | st.text(max_size=12),
    value=st.sampled_from([TEXT, TEXT + 1, TEXT + 0x10, 0, U64]) | st.integers(0, U64),
    size=st.sampled_from([0, 1, 0x10, U64]) | st.integers(0, U64),
    kind=st.integers(0, 15), bind=st.integers(0, 15),
    shndx=st.sampled_from([0, 1, 2, 3, 4, 5, SHN_ABS, 0xFFFF])), max_size=12),
       data=st.data())
def test_elf_symbol_tables(world, tmp_path, symbols_, data):
    """ElfSymbols (the vmlinux .symtab searched like kallsyms) on random symbol tables in
    ELF files with overwritten header fields, flipped bits and cut-off ends."""
    m = world.modules
    image = symbol_table_elf(symbols_, TEXT, FILE_TEXT[:64], DATA, 0x40)
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    damage = data.draw(st.none() | damages(len(image), shoff, 6))
    path = tmp_path / "damaged-vmlinux"
    path.write_bytes(damage.apply(image) if damage else image)
    table = answer_or_kp_error(m.symbols.ElfSymbols, str(path))
    if is_error(table):
        assert damage is not None, f"an intact symbol table was refused: {table}"
        return
    probes = [TEXT, TEXT + 0x10, 0, U64] + table.addresses[:8] \
        + [data.draw(st.integers(0, U64)) for _ in range(3)]
    for address in probes:
        found = answer_or_kp_error(table.lookup, address)
        if found is not None and not is_error(found):
            name, offset, size = found
            assert offset >= 0 and size >= 0
        answer_or_kp_error(table.file_bytes, address, data.draw(st.sampled_from([1, 64, 1 << 20])))
    for name in [s.name for s in symbols_] + ["no_such_symbol"]:
        answer_or_kp_error(table.address_of, name)
    if damage is None:      # intact: every kept symbol is found at offset 0
        for address in table.addresses:
            assert table.lookup(address)[1] == 0


def section_addresses(image: bytes) -> dict[str, int]:
    """sh_addr of each section, by name."""
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    count, names_index = struct.unpack_from("<HH", image, 0x3C)
    names_at = struct.unpack_from("<Q", image, shoff + 64 * names_index + 0x18)[0]
    found = {}
    for index in range(count):
        name_offset = struct.unpack_from("<I", image, shoff + 64 * index)[0]
        name = image[names_at + name_offset:image.index(b"\0", names_at + name_offset)]
        found[name.decode()] = struct.unpack_from("<Q", image, shoff + 64 * index + 0x10)[0]
    return found


@repeatable(max_examples=120)
@given(build_id=st.binary(min_size=0, max_size=24), data=st.data(),
       addresses=st.dictionaries(st.sampled_from([".text", ".kprobes.text", ".data", ".bss",
                                                  ".note.gnu.build-id", ""]),
                                 st.integers(0, U64), max_size=4))
def test_elf_relocate_on_damaged_objects(world, build_id, data, addresses):
    """The placed .ko copy (kp-modules --load): a damaged .ko is refused with ElfError,
    which load_symbols() turns into KpError; never another exception, never a copy of
    another size. An intact one gets every allocated section at its address."""
    from gdb_kprobe.target import elf_relocate
    image = relocatable_ko(build_id)
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    damage = data.draw(st.none() | damages(len(image), shoff, 6))
    spoiled = damage.apply(image) if damage else image
    with time_limit():
        try:
            placed = elf_relocate.placed(spoiled, addresses)
        except elf_relocate.ElfError as exc:
            assert damage is not None, f"an intact .ko was refused: {exc}"
            assert str(exc) and "\n" not in str(exc)
            return
    assert len(placed) == len(spoiled), "the placed copy must keep the file's size"
    if damage is None:
        wanted = {name: address for name, address in addresses.items()
                  if name in (".text", ".kprobes.text", ".data", ".note.gnu.build-id")}
        assert section_addresses(placed).items() >= wanted.items()


def test_elf_relocate_refuses_a_note_claiming_4_gib(world):
    """A build-id note whose descsz is 0xfffffff0: the copy used to grow by that much (a
    4 GiB allocation, minutes of swapping); now the .ko is refused."""
    from gdb_kprobe.target import elf_relocate
    image = bytearray(relocatable_ko(b"\1" * 20))
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    note_at = struct.unpack_from("<Q", image, shoff + 64 * 4 + 0x18)[0]    # .note: section 4
    image[note_at + 4:note_at + 8] = (0xFFFFFFF0).to_bytes(4, "little")    # descsz
    with time_limit(), pytest.raises(elf_relocate.ElfError, match="damaged note"):
        elf_relocate.placed(bytes(image), {".text": MODULE_TEXT})


# -- instructions, prologue, info scope ----------------------------------------------------

ASM = st.sampled_from([
    "push   %rbp", "push   %r12", "pushq  %rbx", "mov    %rsp,%rbp", "movq   %rsp,%rbp",
    "sub    $0x10,%rsp", "subq   $0x18,%rsp", "sub    $16,%rsp", "sub    $-0x8,%rsp",
    "sub    $0xzz,%rsp", "sub    $,%rsp", "sub    $sym,%rsp", "add    $0x10,%rsp",
    "add    $garbage,%rsp", "pop    %rbx", "endbr64", "nop",
    "call   0xffffffff81000000 <__fentry__>",
    "jmp    0xffffffff81000010", "jne    0x5", "ret", "mov    %rdi,-0x8(%rbp)",
    "mov    0x10(%rsp),%rax", "lea    -0x20(%rbp),%rdi", "mov    -0x(%rsp),%rax",
    "mov    (%rsp),%rax", "", "   ", "push", "sub", "jmp    *%rax"]) | one_line_text(30)
# (gdb prints one line per instruction)


@st.composite
def instruction_lists(draw) -> tuple[list, int]:
    from gdb_kprobe.target.disasm import Insn
    address, found = TEXT, []
    for asm in draw(st.lists(ASM, max_size=16)):
        length = draw(st.integers(1, 7))
        found.append(Insn(address, b"\x90" * length, asm))
        address += length
    pc = draw(st.sampled_from([TEXT, address, TEXT + 5]) | st.integers(TEXT - 4, address + 4))
    return found, pc


@repeatable(max_examples=300)
@given(listing=instruction_lists())
def test_prologue_analysis(world, listing):
    """prologue.analyse (kp-locals, and the unwinder, which catches KpError only) on
    random AT&T listings, well-formed or not."""
    insns, pc = listing
    result = answer_or_kp_error(world.modules.prologue.analyse, insns, pc)
    if not is_error(result):
        facts, slots = result
        before = " ".join(insn.asm for insn in insns if insn.address < pc)
        assert all(f"%{register}" in before for register in facts.pushes)
        assert all(slot.insn_address < pc and slot.register in ("rbp", "rsp")
                   for slot in slots)


@repeatable(max_examples=150)
@given(listing=instruction_lists(), offset=st.integers(0, 40), size=st.integers(0, 64),
       module=st.sampled_from([None, "kp_lab_kprobe"]))
def test_boundary_and_optimizability(world, listing, offset, size, module):
    """decode.check / require_boundary (kp-check, kp-sim, kp-locals) and kp-check's
    mechanism summary over random listings of the function around a place."""
    from gdb_kprobe.kernel import decode
    from gdb_kprobe.kernel.places import Place
    m = world.modules
    insns, _pc = listing
    world.load({}, 1)              # no memory at all: only the listing below is there
    place = Place(TEXT + offset, "f", offset, size, module)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(m.code, "original", lambda *a, **k: None if module else list(insns))
        patch.setattr(m.code, "live", lambda *a, **k: list(insns))
        boundary = answer_or_kp_error(decode.check, place)
        answer_or_kp_error(decode.require_boundary, place)
        if not is_error(boundary) and boundary.ok:
            from gdb_kprobe.kernel.register_checks import RegisterChecker
            notes = answer_or_kp_error(RegisterChecker._prepare, place)
            assert is_error(notes) or all(isinstance(note, str) for note in notes)


SCOPE_LINES = st.sampled_from([
    "Symbol sock is a variable in $rdi, length 8.",
    "Symbol flags is a variable at frame base reg $rbp offset 16+-20, length 4.",
    "Symbol err is a variable with complex DWARF expression locating its address in memory, "
    "length 4.",
    "Symbol x is multi-location:",
    "  Range 0xffffffff8189ad60-0xffffffff8189ad74: a variable in $rsi",
    "  Range 0xffffffff8189ad74-0xffffffff8189ae00: a complex DWARF expression:",
    "     0: DW_OP_fbreg -28",
    "     0: DW_OP_breg7 [$rsp] 8",
    "     0: DW_OP_entry_value 1 DW_OP_reg5 [$rdi]; DW_OP_stack_value",
    "  Range 0xzz-0x1: garbage",
    "Symbol s is static storage at address 0xffffffff82000000, length 8.",
    "Symbol c is constant, length 4.",
    "Symbol o is optimized out.",
    "Symbol ² is a variable in $²",
    "Symbol  is ", "Symbol", "No locals.",
]) | st.text(max_size=40)


@repeatable(max_examples=200)
@given(lines=st.lists(SCOPE_LINES, max_size=10),
       pc=st.sampled_from([0xFFFFFFFF8189AD74, 0xFFFFFFFF8189AD60, 0]))
def test_info_scope_text(world, lines, pc):
    """scope.py's reading of gdb's `info scope` text: random and truncated entries."""
    scope = world.modules.scope
    text = "\n".join(lines)
    entries = answer_or_kp_error(scope._split_symbols, text)
    if is_error(entries):
        return
    for _name, description in entries:
        chosen = answer_or_kp_error(scope._at_pc, description, pc)
        if not is_error(chosen):
            answer_or_kp_error(scope._classify, chosen)


# -- command lines --------------------------------------------------------------------------

@repeatable(max_examples=200)
@given(words=st.lists(st.sampled_from(["-v", "-n", "--json", "-t", "k", "r", "x", "-m", "-c",
                                       "0", "1", "100001", "0x10", "²", "--regs", "ip,zz",
                                       "--ret", "--load", "/nonexistent", "-h", "--", "-",
                                       "inet_accept+0x14", "#1", "--bogus"])
                      | one_line_text(12), max_size=5),
       command=st.sampled_from(["kp-list", "kp-show", "kp-check", "kp-sim", "kp-locals",
                                "kp-where", "kp-modules", "kp-blacklist", "kp-kaslr"]))
def test_command_lines(world, words, command):
    """Every kp-* parser on random argument lists: parsed, or a one-line usage error."""
    from gdb_kprobe import commands
    from gdb_kprobe.engine import sim
    m = world.modules
    parser = next(c for c in command_classes(commands) if c.name == command)().parser
    try:
        answer_or_kp_error(parser.parse_args, words)
    except m.base._HelpShown:                               # -h: the help was printed
        pass
    answer_or_kp_error(sim.parse_regs, ",".join(words))     # kp-sim --regs LIST


def command_classes(package) -> list[type]:
    """The KpCommand classes of gdb_kprobe.commands' modules."""
    import importlib
    import pkgutil
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [value for value in vars(module).values()
                  if isinstance(value, type) and getattr(value, "name", "")]
    return found


# -- renderers on random model objects -------------------------------------------------------

names = st.sampled_from(["inet_accept", "kp_lab_target", "", "a b", "é", "evil\nname"]) \
    | st.text(max_size=10)
maybe_module = st.none() | names
u64 = st.integers(0, U64)


@st.composite
def locations(draw):
    from gdb_kprobe.kernel.kallsyms import Location
    return Location(draw(names), draw(st.integers(0, U64)), draw(st.integers(0, U64)),
                    draw(maybe_module))


@st.composite
def kprobe_models(draw):
    from gdb_kprobe.kernel.kprobes import Kprobe
    return Kprobe(address=draw(u64), addr=draw(u64), flags=draw(st.integers(0, 0xFFFFFFFF)),
                  pre_handler=draw(u64 | st.just(0)), post_handler=draw(u64 | st.just(0)),
                  nmissed=draw(u64), symbol_name=draw(u64), offset=draw(st.integers(0, 1 << 32)),
                  opcode=draw(st.integers(0, 255)))


@st.composite
def probe_rows(draw):
    from gdb_kprobe.kernel import kprobes
    from gdb_kprobe.kernel import kprobes_list as report
    if draw(st.integers(0, 5)) == 0:
        return report.Damage(draw(names))
    details = None
    if draw(st.booleans()):
        kret = None
        if draw(st.booleans()):
            kret = kprobes.KretprobeInfo(draw(u64), draw(u64), draw(u64),
                                         draw(st.integers(-(1 << 31), 1 << 31)),
                                         draw(st.integers(-(1 << 31), 1 << 31)), draw(u64),
                                         draw(u64))
        event = draw(st.none() | st.builds(kprobes.TraceEvent, names, u64, u64))
        from gdb_kprobe.kernel import owners
        regions = st.sampled_from(["kernel_image", "module", "module_space", "vmalloc",
                                   "direct_map", "unknown"])
        owner = draw(st.builds(owners.Owner, st.sampled_from(
            ["kernel", "module", "trace_event", "perf_kprobe", "unlisted_module", "foreign_code",
             "unknown"]),
            st.none() | names, st.none() | u64, regions,
            st.sampled_from(["code", "memory"])))
        warnings = tuple(draw(st.lists(st.builds(
            owners.OwnerWarning, names, u64, regions, names), max_size=3)))
        details = report.Details(owner, event, draw(st.none() | locations()),
                                 draw(st.none() | locations()), kret,
                                 draw(st.none() | locations()), draw(st.none() | locations()),
                                 warnings)
    return report.ProbeRow(draw(kprobe_models()), draw(st.none() | kprobe_models()),
                           draw(st.sampled_from(["k", "r"])), draw(st.none() | locations()),
                           details)


@repeatable(max_examples=150)
@given(rows=st.lists(probe_rows(), max_size=6), numbered=st.booleans())
def test_renderers_on_random_models(world, rows, numbered):
    """kp-list text (the debugfs format) and JSON (against docs/schema/kp-list.json) for
    any model the walkers can produce, damage notes included."""
    m = world.modules
    with time_limit():
        text = m.render.probe_list(rows, numbered)
        document = m.jsonout.probe_list(rows)
    assert text == "" or text.endswith("\n")
    validate(document, "kp-list")
    assert len(document["probes"]) == sum(1 for r in rows if isinstance(r, m.report.ProbeRow))


# -- the list walker itself ---------------------------------------------------------------

@repeatable(max_examples=200)
@given(links=st.dictionaries(st.sampled_from([object_address(i) for i in range(12)]),
                             st.sampled_from([object_address(i) for i in range(12)]
                                             + [0, NON_CANONICAL, UNMAPPED, DATA])),
       first=st.sampled_from([object_address(i) for i in range(12)] + [0, NON_CANONICAL]),
       limit=st.integers(1, 20), stop_at=st.sampled_from([0, DATA]))
def test_list_walk_always_ends(world, links, first, limit, stop_at):
    """lists.walk over any next-pointer graph (cycles, self loops, holes, poison) ends,
    bounded by `limit`, with either no note or one line saying where it broke."""
    m = world.modules

    def fetch(node: int) -> tuple[int, int]:
        if node not in links:
            raise m.KpError(f"cannot read 8 bytes at {node:#x}")
        return node, links[node]

    walk = answer_or_kp_error(m.lists.walk, first, stop_at, fetch, "t", limit)
    assert not is_error(walk)
    assert len(walk.items) <= limit and len(set(walk.items)) == len(walk.items)
    assert walk.damage is None or "\n" not in walk.damage
