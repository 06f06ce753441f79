"""register_kprobe()'s checks (kernel/kprobes.c, 6.1 and later), replayed in order:
  1. _kprobe_addr(): the symbol through kallsyms (-ENOENT if none), sym+off re-based on the
     symbol that contains it (-ENOENT if none), +0 moved past an entry marker (IBT);
  2. check_kprobe_address_safe(): kernel or module text, not in the kprobe blacklist (with
     `.`-suffixed copies of blacklisted functions), not a jump label, static call, BUG()
     or CFI-preamble site (-EINVAL);
  3. a place that already has a probe joins its aggregate;
  4. prepare_kprobe(): an fentry call site becomes an ftrace-based probe; anything else must
     be an instruction boundary decoded from the function start (can_probe(): -EILSEQ).
"""
from __future__ import annotations

import dataclasses
import errno
import os

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import blacklist, decode, ftrace, kprobes, lists, patchsites, places
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.kernel.places import Place
from gdb_kprobe.target import cache, disasm, inlines, layouts, memory, symbols

__all__ = ["Answer", "Refused", "Registered", "RegisterChecker"]



# What register_kprobe() and kprobe_events mean by each errno they return (libc's texts,
# e.g. EILSEQ's "Invalid or incomplete multibyte or wide character", say nothing here).
KPROBE_ERRNO_MEANING = {
    errno.EILSEQ: "no instruction that kprobes can probe starts here",
    errno.EINVAL: "the kernel refuses this place or spec",
    errno.ENOENT: "no such symbol or module",
    errno.EEXIST: "this probe is registered already",
    errno.EBUSY: "the place is in use by something kprobes cannot share it with",
    errno.ENOMEM: "the kernel ran out of memory for the probe",
    errno.EOPNOTSUPP: "kprobes cannot emulate the instruction here",
}


@dataclasses.dataclass(frozen=True)
class Answer:
    """One interface's answer: accepted (error None), or the errno and why."""

    error: int | None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.error, str(self.error)) if self.error else ""

    @property
    def errno_text(self) -> str:
        """What the errno means for a kprobe (libc's text for others)."""
        if not self.error:
            return ""
        return KPROBE_ERRNO_MEANING.get(self.error) or os.strerror(self.error)


class Refused(Exception):
    """A check said no: the answer, and the place when it was known."""

    def __init__(self, error: int, reason: str, place: Place | None = None) -> None:
        super().__init__(reason)
        self.answer = Answer(error, reason)
        self.place = place


@dataclasses.dataclass
class Registered:
    """What register_kprobe() made of one request: its answer, the place, notes."""

    answer: Answer
    place: Place | None
    notes: list[str]


class RegisterChecker:
    """register_kprobe()'s checks, for one kp-check run: the symbolizer and the results
    shared by places (and by kprobe_events, which ends in register_kprobe() too)."""

    def __init__(self) -> None:
        self.symbolizer = Symbolizer()
        self._registered: dict[tuple, Registered] = {}
        self._blacklist: lists.Walk | None = None

    # -- register_kprobe() -----------------------------------------------------------------
    def register(self, name: str | None, address: int | None, offset: int,
                 is_return: bool = False) -> Registered:
        key = (name, address, offset, is_return)
        if key not in self._registered:
            notes: list[str] = []
            try:
                place = self.kprobe_addr(name, address, offset, notes, is_return)
                self._check_address_safe(place, notes)
                if not self._joins_existing(place, notes):
                    notes.extend(self._prepare(place))
                result = Registered(Answer(None), place, notes)
            except Refused as refused:
                result = Registered(refused.answer, refused.place, notes)
            self._registered[key] = result
        return self._registered[key]

    def lookup_name(self, name: str) -> int | None:
        """kallsyms_lookup_name(): `MOD:SYM` in that module; `SYM` in the vmlinux (its
        first, lowest address), else in the first module that has it."""
        module_name, _, symbol = name.rpartition(":")
        if module_name:
            module = next((m for m in self.symbolizer.modules if m.name == module_name), None)
            return module.address_of(symbol) if module else None
        found = symbols.kernel().address_of(name)
        if found is not None:
            return found
        return next((m.address_of(name) for m in self.symbolizer.modules
                     if m.address_of(name) is not None), None)

    def kprobe_addr(self, name: str | None, address: int | None, offset: int,
                     notes: list[str], is_return: bool) -> Place:
        """_kprobe_addr() and arch_adjust_kprobe_addr(); for a return probe also
        kprobe_on_func_entry() (register_kretprobe() wants the entry)."""
        if name is not None:
            address = self.lookup_name(name)
            if address is None:
                raise Refused(errno.ENOENT, f"no symbol `{name}` in kallsyms")
        if not address:
            raise Refused(errno.EINVAL, "neither a symbol nor an address (_kprobe_addr)")
        address = arch.u64(address + offset)
        found = self.symbolizer.lookup(address)
        if found is None:
            raise Refused(errno.ENOENT, f"{address:#x} is inside no symbol "
                           "(kallsyms_lookup_size_offset)", Place(address, None, 0, 0, None))
        start = address - found.offset
        if name is not None and found.offset != offset:
            notes.append(f"{name}+{offset:#x} is past the end of {name}: the kernel re-bases "
                         f"it on {found.symbol}+{found.offset:#x}")
        elif name is not None and found.symbol != name.rpartition(":")[2]:
            notes.append(f"kallsyms calls this address {found.symbol} (an alias of {name} at "
                         "the same address)")
        try:
            memory.read(start, 4)          # the bytes is_endbr() reads (x86 IBT)
        except KpError:
            raise Refused(errno.EINVAL, f"cannot read {found.symbol}'s first bytes "
                           "(arch_adjust_kprobe_addr)") from None
        rel, on_entry = places.entry_adjusted(start, found.offset)
        if rel != found.offset or (on_entry and rel):
            notes.append("the function starts with an entry marker (endbr64, or the nop "
                         "sealing it; IBT): a probe at its entry goes after it, at +0x4")
        place = Place(start + rel, found.symbol, rel, found.size, found.module)
        if is_return and not on_entry:
            raise Refused(errno.EINVAL, "a return probe must be on the function's entry "
                           "(kprobe_on_func_entry)", place)
        return place

    def _check_address_safe(self, place: Place, notes: list[str]) -> None:
        """check_kprobe_address_safe()."""
        address = place.address
        if not self._in_text(address):
            raise Refused(errno.EINVAL, "not in kernel or module text (core_kernel_text / "
                           "__module_text_address)", place)
        if self._blacklist is None:        # one walk per run: it holds many places
            self._blacklist = blacklist.read_blacklist()
        walk = self._blacklist
        if walk.damage:
            notes.append(f"the blacklist could not be read whole: {walk.damage}")
        if blacklist.blacklisted(address, walk.items, self.symbolizer):
            raise Refused(errno.EINVAL, f"{place.symbol} is in the kprobe blacklist (debugfs "
                           "kprobes/blacklist: NOKPROBE_SYMBOL, __kprobes, noinstr or entry "
                           "text)", place)
        if patchsites.is_jump_label(address):
            raise Refused(errno.EINVAL, "a jump label (static key) patch site", place)
        if patchsites.is_static_call(address):
            raise Refused(errno.EINVAL, "a static call site", place)
        if patchsites.is_bug(address):
            raise Refused(errno.EINVAL, "a BUG()/WARN() trap site (__bug_table)", place)
        if place.symbol and place.symbol.startswith(("__cfi_", "__pfx_")):
            raise Refused(errno.EINVAL, f"{place.symbol} is a CFI preamble or function "
                           "padding (is_cfi_preamble_symbol)", place)

    def _in_text(self, address: int) -> bool:
        table = symbols.kernel()
        start, end = table.address_of("_stext"), table.address_of("_etext")
        if start is not None and end is not None and start <= address < end:
            return True
        module = self.symbolizer.module_for(address)
        return module is not None and module.text_contains(address)

    @staticmethod
    def _joins_existing(place: Place, notes: list[str]) -> bool:
        table = kprobes.read_table()
        existing = kprobes.find_entry(table, place.address)
        if existing is None:
            return False
        notes.append(f"a probe is already registered here: the new one joins it "
                     f"({'an aggregate' if table.is_aggregate(existing) else 'making an aggregate'})")
        return True

    @staticmethod
    def _prepare(place: Place) -> list[str]:
        """prepare_kprobe(): ftrace-based at an ftrace call site (check_ftrace_location():
        -EINVAL there without CONFIG_KPROBES_ON_FTRACE, as on Debian's arm64 kernels), else
        arch_prepare_kprobe() of the target's architecture."""
        if ftrace.location_range(place.address, place.address) == place.address:
            if symbols.kernel().address_of("kprobe_ftrace_handler") is None:
                raise Refused(errno.EINVAL, "an ftrace call site, and this kernel has no "
                              "KPROBES_ON_FTRACE (check_ftrace_location)", place)
            return ["ftrace-based: this is the function's fentry call site (KPROBE_FLAG_FTRACE); "
                    "no int3, never optimized"]
        prepare = _ARCH_PREPARE.get(arch.NAME)
        if prepare is None:
            raise KpError(f"no arch_prepare_kprobe() rules for {arch.NAME}")
        return prepare(place)

    @staticmethod
    def _prepare_x86_64(place: Place) -> list[str]:
        """arch/x86/kernel/kprobes/core.c arch_prepare_kprobe():
        can_probe() on the live code (-EILSEQ off a boundary, and on an exception
        instruction where the kernel's can_probe() inlines is_exception_insn()), then
        __copy_instruction() refuses an int3 it cannot recover (-EINVAL), then
        prepare_emulation() an instruction it cannot emulate (-EOPNOTSUPP)."""
        boundary = decode.check_live(place)
        start = place.address - place.offset
        if not boundary.ok:
            inside = boundary.insn
            raise Refused(errno.EILSEQ, (
                f"not an instruction boundary: inside {_described(inside)} at "
                f"{place.symbol}+{inside.address - start:#x} ({len(inside.raw)} bytes)"
                if inside else "past the function's decoded instructions"), place)
        insn = boundary.insn
        if arch.is_exception_insn(insn.raw) and inlines.inlined_into("can_probe",
                                                                     "is_exception_insn"):
            raise Refused(errno.EILSEQ, f"`{insn.asm}` is an exception instruction "
                          "(can_probe(): is_exception_insn())", place)
        if insn.raw[:1] == bytes([arch.INT3]):
            raise Refused(errno.EINVAL, "an int3 no kprobe put there (padding after a patched "
                          "return, or another subsystem's breakpoint): __copy_instruction() "
                          "cannot recover what it replaced", place)
        unemulated = arch.unemulated_insn(insn.raw)
        if unemulated:
            raise Refused(errno.EOPNOTSUPP, f"`{insn.asm}` is {unemulated} "
                          "(prepare_emulation())", place)
        try:
            function_insns = decode.check(place).function_insns
        except KpError as exc:
            return [f"int3 kprobe; optimizability unknown: {exc}"]
        likely, why = _optimizable(place, function_insns)
        return [f"int3 kprobe; {'likely optimizable into a jmp (optprobe)' if likely else 'not optimizable'}"
                f": {why}"]


    @staticmethod
    def _prepare_arm64(place: Place) -> list[str]:
        """arch/arm64/kernel/probes/kprobes.c arch_prepare_kprobe(): 4-byte aligned, not in
        an exception table, then arm_kprobe_decode_insn() (decode-insn.c) on the live word:
        stepped out of line, simulated, or rejected, also inside an ldxr/stxr sequence.
        Every refusal is -EINVAL."""
        address = place.address
        if address % arch.PROBE_ALIGN:
            raise Refused(errno.EINVAL, f"not {arch.PROBE_ALIGN}-byte aligned: every arm64 "
                          "instruction is (arch_prepare_kprobe)", place)
        if address in _exception_table():
            raise Refused(errno.EINVAL, "an instruction with an exception table entry (a user "
                          "access that may fault: search_exception_tables)", place)
        word = int.from_bytes(memory.read(address, arch.INSN_SIZE), "little")
        asm = _asm(address)
        kind, detail = arch.decode_insn(word)
        if kind == "rejected":
            raise Refused(errno.EINVAL, f"`{asm}` is {detail}: neither stepped out of line nor "
                          "simulated (arm_kprobe_decode_insn)", place)
        count = min(place.offset // arch.INSN_SIZE, arch.MAX_ATOMIC_CONTEXT)
        before = memory.read(address - count * arch.INSN_SIZE, count * arch.INSN_SIZE)
        previous = [int.from_bytes(before[i:i + 4], "little") for i in range(len(before) - 4, -4, -4)]
        if arch.in_atomic_sequence(previous):
            raise Refused(errno.EINVAL, "inside a load-exclusive/store-exclusive sequence "
                          "(is_probed_address_atomic)", place)
        how = "stepped out of line in an insn slot, then brk #0x6" if kind == "slot" else \
            f"simulated by {detail}(), no slot"
        return [f"brk kprobe; `{asm}` is {how}"]


_ARCH_PREPARE = {"i386:x86-64": RegisterChecker._prepare_x86_64,
                 "aarch64": RegisterChecker._prepare_arm64}


def _asm(address: int) -> str:
    try:
        insns = disasm.live(address, 1)
    except KpError:
        return "?"
    return " ".join(insns[0].asm.split()) if insns else "?"


@cache.cache_until("objfile", "exited", "relocate")
def _exception_table() -> frozenset[int]:
    """The instruction addresses of the kernel image's exception table (__ex_table: relative
    entries, `&entry->insn + entry->insn`); modules' tables are not read."""
    table = symbols.kernel()
    start, stop = table.address_of("__start___ex_table"), table.address_of("__stop___ex_table")
    layout = layouts.try_layout("struct exception_table_entry")
    if not start or not stop or layout is None or stop <= start:
        return frozenset()
    data = memory.read(start, stop - start)
    insn = layout.offset("insn")
    return frozenset(arch.u64(start + at + insn + int.from_bytes(
        data[at + insn:at + insn + 4], "little", signed=True))
        for at in range(0, len(data) - layout.size + 1, layout.size))


def _described(insn: disasm.Insn) -> str:
    """An instruction as the kernel decodes it, named for what it stands for where the live
    bytes are a stand-in: the ftrace call site, a sealed endbr64."""
    if ftrace.location_range(insn.address, insn.address) == insn.address:
        return "the ftrace call site (`call __fentry__` in the vmlinux; decoded as a 5-byte nop)"
    if insn.raw == arch.ENDBR_POISON:
        return f"`{insn.asm}`, the nop that seals an unused endbr64 (IBT)"
    return f"`{insn.asm}`"


def _optimizable(place: Place, insns: list[disasm.Insn]) -> tuple[bool, str]:
    """A summary of can_optimize() in arch/x86/kernel/kprobes/opt.c."""
    end_of_function = place.address - place.offset + place.size
    if place.address + arch.REL32_SIZE > end_of_function:
        return False, "the 5-byte jmp would not fit before the function's end"
    covered = [i for i in insns if i.address < place.address + arch.REL32_SIZE and
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
