"""Struct layouts from the kernel's DWARF, resolved at run time and cached per objfile.

`layout("struct kprobe")` gives member offsets and sizes, so an object read in one
memory read can be decoded from its bytes (`Layout.view`) instead of asking gdb
for one field at a time. Fields that moved or vanished between kernel versions are
handled with `has_field` fallbacks by the callers: there are no hard-coded offsets.
"""
from __future__ import annotations

import operator
import struct
from typing import Callable

import gdb

from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache

__all__ = ["Member", "Layout", "View", "layout", "try_layout", "lookup_type", "enum_value",
           "printable"]


def lookup_type(name: str) -> gdb.Type:
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        pass
    # `struct foo` may only be reachable through its tag
    if name.startswith("struct "):
        try:
            return gdb.lookup_type(name[len("struct "):]).strip_typedefs()
        except gdb.error:
            pass
    raise KpError(f"type `{name}` is not in the symbol file's debug info; load the DWARF "
                  "vmlinux of the running kernel (the linux-image-<ver>-dbg package)")


class Member:
    """One (nested) member of a struct: where it is, how big, what kind of value."""

    __slots__ = ("offset", "size", "type", "signed", "bitpos", "bitsize", "is_scalar",
                 "is_code_pointer", "is_char_pointer")

    def __init__(self, offset: int, gdb_type: gdb.Type, bitpos: int = 0, bitsize: int = 0):
        self.offset = offset
        self.type = gdb_type
        stripped = gdb_type.strip_typedefs()
        self.size = stripped.sizeof
        self.signed = stripped.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM) \
            and stripped.is_signed
        self.bitpos = bitpos
        self.bitsize = bitsize
        self.is_scalar = stripped.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM,
                                           gdb.TYPE_CODE_PTR, gdb.TYPE_CODE_BOOL,
                                           gdb.TYPE_CODE_CHAR)
        pointee = stripped.target().strip_typedefs() if stripped.code == gdb.TYPE_CODE_PTR \
            else None
        self.is_code_pointer = pointee is not None and pointee.code == gdb.TYPE_CODE_FUNC
        # `char *` only: kprobe_opcode_t * (u8 *) points at code, not at a string
        self.is_char_pointer = pointee is not None and pointee.unqualified().name == "char"


_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Layout:
    """Offsets of (nested) fields of one struct type, by dotted path: `rp.kp.addr`."""

    def __init__(self, name: str, gdb_type: gdb.Type) -> None:
        self.name = name
        self.type = gdb_type.strip_typedefs()
        self.size = self.type.sizeof
        self._fields: dict[str, Member | None] = {}
        self._decoders: dict[tuple[str, ...], Callable[[bytes], tuple[int, ...]]] = {}
        self._spans: dict[tuple[str, ...], tuple[tuple[int, int], ...]] = {}

    def field(self, path: str) -> Member:
        found = self._find(path)
        if found is None:
            raise KpError(f"`{self.name}` has no field `{path}` in this kernel's debug info")
        return found

    def field_names(self) -> list[str]:
        """Top-level member names, in declaration order."""
        return [f.name for f in self.type.fields() if f.name]

    def member_names(self, path: str) -> list[str]:
        """Named members of the struct at `path` (anonymous unions looked through)."""
        struct_type = self.field(path).type.strip_typedefs()
        names: list[str] = []

        def collect(current: gdb.Type) -> None:
            for member in current.fields():
                if member.name:
                    names.append(member.name)
                elif member.type is not None:
                    collect(member.type.strip_typedefs())
        if struct_type.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            collect(struct_type)
        return names

    def has_field(self, path: str) -> bool:
        return self._find(path) is not None

    def offset(self, path: str) -> int:
        return self.field(path).offset

    def _find(self, path: str) -> Member | None:
        if path in self._fields:
            return self._fields[path]
        current = self.type
        offset = 0
        found: Member | None = None
        parts = path.split(".")
        for index, part in enumerate(parts):
            match = _member(current, part)
            if match is None:
                found = None
                break
            member, member_offset = match
            offset += member_offset
            if member.bitsize and index == len(parts) - 1:
                found = Member(offset, member.type, member.bitpos % 8, member.bitsize)
                break
            current = member.type.strip_typedefs()
            if index == len(parts) - 1:
                found = Member(offset, member.type)
        self._fields[path] = found
        return found

    def spans(self, paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
        """(offset, size) of each field of `paths`: the parts of it a reader uses."""
        found = self._spans.get(paths)
        if found is None:
            found = self._spans[paths] = tuple((self.field(path).offset, self.field(path).size)
                                               for path in paths)
        return found

    def decoder(self, paths: tuple[str, ...]) -> Callable[[bytes], tuple[int, ...]]:
        """One function that decodes the integer fields `paths` from the struct's bytes at
        once, in the order asked: a struct.Struct and, when the order is not the fields'
        own, an itemgetter (a walk over 10,000 probes decodes 40,000 fields; both are C)."""
        found = self._decoders.get(paths)
        if found is not None:
            return found
        fields = sorted(((self.field(path), index) for index, path in enumerate(paths)),
                        key=lambda pair: pair[0].offset)
        fmt, end = "<", 0
        for field, index in fields:
            code = _INT_FORMATS.get(field.size)
            if code is None or field.bitsize or field.offset < end:
                raise KpError(f"field `{paths[index]}` of `{self.name}` is not a whole "
                              "integer apart from the others")
            fmt += f"{field.offset - end}x" if field.offset > end else ""
            fmt += code.lower() if field.signed else code
            end = field.offset + field.size
        unpack = struct.Struct(fmt).unpack_from
        order = tuple(sorted(range(len(fields)), key=lambda place: fields[place][1]))
        if order == tuple(range(len(order))):
            found = unpack
        else:
            pick = operator.itemgetter(*order)
            found = (lambda data: pick(unpack(data))) if len(order) > 1 else \
                (lambda data: (unpack(data)[order[0]],))
        self._decoders[paths] = found
        return found

    def view(self, data: bytes, address: int = 0,
             known: tuple[tuple[int, int], ...] | None = None) -> "View":
        """`data` decoded as this struct; `known`: the (offset, size) spans of it that
        were read (memory.read_parts), None when all were."""
        return View(self, data, address, known)


def _member(struct_type: gdb.Type, name: str):
    """Find a member by name, looking through anonymous structs/unions."""
    if struct_type.code not in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        return None
    for field in struct_type.fields():
        if field.name == name:
            return field, field.bitpos // 8
        if not field.name and field.type is not None:
            inner = field.type.strip_typedefs()
            match = _member(inner, name)
            if match is not None:
                return match[0], field.bitpos // 8 + match[1]
    return None


class View:
    """A struct decoded from its bytes: `view.u("flags")`, `view.ptr("addr")`. Of a struct
    read in parts (`known`), a field outside them is refused, never decoded from zeros."""

    __slots__ = ("layout", "data", "address", "known")

    def __init__(self, layout: Layout, data: bytes, address: int,
                 known: tuple[tuple[int, int], ...] | None = None) -> None:
        self.layout = layout
        self.data = data
        self.address = address
        self.known = known

    def _check_read(self, path: str, field: Member) -> None:
        assert self.known is not None
        if not any(start <= field.offset and field.offset + field.size <= start + length
                   for start, length in self.known):
            raise KpError(f"`{path}` of the `{self.layout.name}` at {self.address:#x} was "
                          "not read (read in parts); a bug in gdb_kprobe")

    def int(self, path: str) -> int:
        field = self.layout.field(path)
        if self.known is not None:
            self._check_read(path, field)
        fmt = _INT_FORMATS.get(field.size)
        if fmt is None:
            raise KpError(f"field `{path}` of `{self.layout.name}` is not an integer")
        if field.signed:
            fmt = fmt.lower()
        value = struct.unpack_from("<" + fmt, self.data, field.offset)[0]
        if field.bitsize:
            value = (value >> field.bitpos) & ((1 << field.bitsize) - 1)
        return value

    ptr = int

    def ints(self, paths: tuple[str, ...]) -> tuple[int, ...]:
        """The integer fields `paths`, in that order, decoded in one go (`int` each)."""
        if self.known is not None:
            for path in paths:
                self._check_read(path, self.layout.field(path))
        return self.layout.decoder(paths)(self.data)

    def bytes(self, path: str) -> bytes:
        field = self.layout.field(path)
        if self.known is not None:
            self._check_read(path, field)
        return self.data[field.offset: field.offset + field.size]

    def string(self, path: str) -> str:
        raw = self.bytes(path)
        end = raw.find(b"\0")
        return printable(raw[: end if end >= 0 else len(raw)].decode("utf-8", "replace"))


def printable(text: str) -> str:
    """A string read from target memory with its control characters escaped (`\\n`,
    `\\x1b`): a damaged string table must not break an output line or a one-line error,
    nor send escape sequences to the terminal. Real kernel names are printable already."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@cache.cache_until(*cache.OBJFILE)
def layout(name: str) -> Layout:
    """The layout of a type by name (`struct kprobe`), until the symbol files change."""
    return Layout(name, lookup_type(name))


@cache.cache_until(*cache.OBJFILE)
def enum_value(type_name: str, enumerator: str) -> int:
    """The value of an enumerator (`MOD_TEXT` of `enum mod_mem_type`) from DWARF."""
    for field in lookup_type(type_name).strip_typedefs().fields():
        if field.name == enumerator:
            return int(field.enumval)
    raise KpError(f"`{type_name}` has no enumerator {enumerator} in this kernel's debug info")


def try_layout(name: str) -> Layout | None:
    try:
        return layout(name)
    except KpError:
        return None
