"""Would register_kprobe() accept a place? The kernel's checks, replayed in order.

Follows the kprobe_events path of kernel/trace/trace_kprobe.c and register_kprobe()
in kernel/kprobes.c (6.1 and later):
  1. the symbol must exist and be unique in kallsyms (else -ENOENT / -EADDRNOTAVAIL);
  2. _kprobe_addr(): sym+off is re-based on the symbol that contains it (-ENOENT if
     none), endbr64 at a function entry is skipped;
  3. a place that already has a probe joins its aggregate (no further checks);
  4. check_kprobe_address_safe(): kernel or module text, not in the kprobe blacklist
     (including NOKPROBE and noinstr/entry areas, and `.` suffixed copies of blacklisted
     functions), not a jump label / static call site, not a BUG() site (-EINVAL);
  5. can_probe(): an instruction boundary decoded from the function start (-EILSEQ).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import struct

from gdb_kprobe import code, symbols, target, types
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import anatomy, decode, kprobes, lists
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.location import ENDBR64, Place, split

JUMP_LABEL_NOP_SIZE = 5
CALL_INSN_SIZE = 5


@dataclasses.dataclass
class Verdict:
    spec: str
    address: int | None
    place: str | None
    error: int | None                 # errno the kernel would return, None if accepted
    reasons: list[str]
    notes: list[str]

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.error, str(self.error)) if self.error else ""

    @property
    def errno_text(self) -> str:
        return os.strerror(self.error) if self.error else ""


@dataclasses.dataclass
class BlacklistEntry:
    start: int
    end: int


def read_blacklist() -> lists.Walk[BlacklistEntry]:
    """kprobe_blacklist, in list order (what debugfs kprobes/blacklist prints)."""
    layout = types.layout("struct kprobe_blacklist_entry")
    head = symbols.kernel_address("kprobe_blacklist")
    list_offset = layout.offset("list")

    def fetch(node: int) -> tuple[BlacklistEntry, int]:
        address = node - list_offset
        view = layout.view(target.read(address, layout.size), address)
        return BlacklistEntry(view.ptr("start_addr"), view.ptr("end_addr")), view.ptr("list.next")

    return lists.walk(target.read_u64(head), head, fetch, "kprobe_blacklist")


def _count_symbol(name: str, symbolizer: Symbolizer) -> int:
    count = symbols.kernel().name_counts.get(name, 0)
    for module in symbolizer.modules:
        count += module.count_of(name)
    return count


def _entries(start_symbol: str, stop_symbol: str, entry_size: int) -> tuple[int, bytes] | None:
    table = symbols.kernel()
    start, stop = table.address_of(start_symbol), table.address_of(stop_symbol)
    if start is None or stop is None or stop <= start:
        return None
    data = table.file_bytes(start, stop - start)
    return (start, data) if data is not None else None


def _in_patch_site(start: str, stop: str, entry_size: int, site_size: int,
                   address: int) -> bool:
    """Does `address` fall in a code site listed in a table of entries whose first field is
    an s32 displacement to the site (__jump_table, static_call_sites)?"""
    found = _entries(start, stop, entry_size)
    if found is None:
        return False
    base, data = found
    for offset in range(0, len(data) - entry_size + 1, entry_size):
        site = base + offset + struct.unpack_from("<i", data, offset)[0]
        if site <= address < site + site_size:
            return True
    return False


def _is_jump_label(address: int) -> bool:
    return _in_patch_site("__start___jump_table", "__stop___jump_table", 16,
                          JUMP_LABEL_NOP_SIZE, address)


def _is_static_call(address: int) -> bool:
    return _in_patch_site("__start_static_call_sites", "__stop_static_call_sites", 8,
                          CALL_INSN_SIZE, address)


def _is_bug(address: int) -> bool:
    layout = types.try_layout("struct bug_entry")
    if layout is None:
        return False
    size = layout.size
    found = _entries("__start___bug_table", "__stop___bug_table", size)
    if found is None:
        return False
    base, data = found
    disp = layout.offset("bug_addr_disp") if layout.has_field("bug_addr_disp") else 0
    for index in range(len(data) // size):
        entry = base + size * index
        if entry + disp + struct.unpack_from("<i", data, size * index + disp)[0] == address:
            return True
    return False


def _blacklisted(address: int, blacklist: list[BlacklistEntry], symbolizer: Symbolizer) -> bool:
    if any(entry.start <= address < entry.end for entry in blacklist):
        return True
    found = symbolizer.lookup(address)
    if found and found.offset == 0 and "." in found.symbol:
        base = symbols.kernel().address_of(found.symbol.split(".")[0])
        return base is not None and any(e.start <= base < e.end for e in blacklist)
    return False


def _in_text(address: int, symbolizer: Symbolizer) -> bool:
    table = symbols.kernel()
    start, end = table.address_of("_stext"), table.address_of("_etext")
    if start is not None and end is not None and start <= address < end:
        return True
    module = symbolizer.module_for(address)
    return module is not None and module.text_contains(address)


def check(spec: str) -> Verdict:
    """The kernel's verdict on `p:EVENT spec` written to kprobe_events."""
    symbolizer = Symbolizer()
    reasons: list[str] = []
    notes: list[str] = []
    module_name, name, offset, _ = split(spec.strip())

    def refuse(error: int, reason: str, address: int | None = None,
               where: str | None = None) -> Verdict:
        return Verdict(spec, address, where, error, [reason, *reasons], notes)

    # Newer kprobe_events parsers (validate_probe_symbol(), 6.7+) turn the symbol errors
    # below into a parse error: -EINVAL, with the reason in tracing/error_log.
    folded = symbols.kernel().address_of("validate_probe_symbol") is not None

    def symbol_error(error: int, reason: str) -> Verdict:
        if folded:
            return refuse(errno.EINVAL, f"{reason} (kprobe_events reports it as a parse "
                          f"error; register_kprobe() would say -{errno.errorcode[error]})")
        return refuse(error, reason)

    if module_name is None:
        count = _count_symbol(name, symbolizer)
        if count == 0:
            return symbol_error(errno.ENOENT, f"no symbol `{name}` in kallsyms")
        if count > 1:
            return symbol_error(errno.EADDRNOTAVAIL, f"`{name}` names {count} symbols in "
                                "kallsyms; kprobe_events wants a unique one (use an address "
                                "or MOD:SYM)")
        start = symbols.kernel().address_of(name)
        if start is None:
            module = next(m for m in symbolizer.modules if m.count_of(name))
            start = module.address_of(name)
    else:
        module = next((m for m in symbolizer.modules if m.name == module_name), None)
        if module is None or module.address_of(name) is None:
            return symbol_error(errno.ENOENT, f"no symbol `{module_name}:{name}`")
        start = module.address_of(name)

    # _kprobe_addr(): re-base on the symbol containing sym+off, then skip endbr64
    address = start + offset
    found = symbolizer.lookup(address)
    if found is None:
        return refuse(errno.ENOENT, f"{address:#x} is inside no symbol", address)
    function_start = address - found.offset
    if found.offset != offset or found.symbol != name:
        notes.append(f"{name}+{offset:#x} is past the end of {name}: the kernel re-bases it "
                     f"on {found.symbol}+{found.offset:#x}")
    rel = found.offset
    try:
        first = target.read(function_start, len(ENDBR64))
    except KpError:
        first = b""
    if first == ENDBR64 and rel in (0, len(ENDBR64)):
        rel = len(ENDBR64)
        notes.append("the function starts with endbr64 (IBT): a probe at its entry goes after "
                     "it, at +0x4")
    address = function_start + rel
    place = Place(address, found.symbol, rel, found.size, found.module)
    where = str(place)

    table = kprobes.read_table()
    existing = anatomy.find_entry(table, address)
    if existing is not None:
        notes.append(f"a probe is already registered here: the new one joins it "
                     f"({'an aggregate' if table.is_aggregate(existing) else 'making an aggregate'})")
        return Verdict(spec, address, where, None, reasons, notes)

    if not _in_text(address, symbolizer):
        return refuse(errno.EINVAL, "not in kernel or module text (core_kernel_text / "
                                    "__module_text_address)", address, where)
    walk = read_blacklist()
    if walk.damage:
        notes.append(f"the blacklist could not be read whole: {walk.damage}")
    if _blacklisted(address, walk.items, symbolizer):
        return refuse(errno.EINVAL, f"{found.symbol} is in the kprobe blacklist "
                                    "(debugfs kprobes/blacklist: NOKPROBE_SYMBOL, __kprobes, "
                                    "noinstr or entry text)", address, where)
    if _is_jump_label(address):
        return refuse(errno.EINVAL, "a jump label (static key) patch site", address, where)
    if _is_static_call(address):
        return refuse(errno.EINVAL, "a static call site", address, where)
    if _is_bug(address):
        return refuse(errno.EINVAL, "a BUG()/WARN() trap site (__bug_table)", address, where)
    boundary = decode.check(place)
    if not boundary.ok:
        inside = boundary.insn
        text = (f"not an instruction boundary: inside `{inside.asm}` at "
                f"{found.symbol}+{inside.address - function_start:#x} ({len(inside.raw)} bytes)"
                if inside else "past the function's decoded instructions")
        return refuse(errno.EILSEQ, text, address, where)
    notes.extend(_mechanism(place, boundary))
    return Verdict(spec, address, where, None, reasons, notes)


NOP5 = bytes.fromhex("0f1f440000")


def _mechanism(place: Place, boundary: decode.Boundary) -> list[str]:
    insn = boundary.insn
    # the fentry site: `call __fentry__` in the vmlinux file; module code is read live,
    # where ftrace has turned the call into a 5-byte nop (or a call to a trampoline)
    entry = place.offset in (0, len(ENDBR64))
    if "__fentry__" in insn.asm or (place.module and entry and insn.raw == NOP5):
        return ["ftrace-based: this is the function's fentry call site (KPROBE_FLAG_FTRACE); "
                "no int3, never optimized"]
    likely, why = _optimizable(place, boundary.function_insns)
    kind = "int3 kprobe"
    return [f"{kind}; {'likely optimizable into a jmp (optprobe)' if likely else 'not optimizable'}"
            f": {why}"]


def _optimizable(place: Place, insns: list[code.Insn]) -> tuple[bool, str]:
    """A summary of can_optimize() in arch/x86/kernel/kprobes/opt.c."""
    end_of_function = place.address - place.offset + place.size
    if place.address + 5 > end_of_function:
        return False, "the 5-byte jmp would not fit before the function's end"
    covered = [i for i in insns if i.address < place.address + 5 and
               i.address + len(i.raw) > place.address]
    for insn in insns:
        mnemonic = (insn.asm.split() or [""])[0]      # blank text: no mnemonic
        if mnemonic == "jmp" and "*" in insn.asm and "__x86_indirect" not in insn.asm:
            return False, f"the function has an indirect jump (`{insn.asm}`)"
    region_end = max(i.address + len(i.raw) for i in covered)
    for insn in insns:
        target_text = insn.asm.split()[-1] if insn.asm.split() else ""
        if insn.asm.startswith("j") and target_text.startswith("0x"):
            goal = int(target_text, 16)
            if place.address < goal < region_end:
                return False, f"`{insn.asm}` at {insn.address:#x} jumps into the region"
    for insn in covered:
        if insn.asm.startswith(("call", "jmp", "j", "ret", "int3", "ud2")):
            return False, f"`{insn.asm}` cannot be copied into a detour buffer"
    return True, f"the jmp would replace {region_end - place.address} bytes: " + \
        "; ".join(f"`{i.asm}`" for i in covered)
