"""The guest kernel's own verdict on hundreds of probe places (issue 15: agree with the kernel
on every rule).

A fixed seed picks places from the lab kernel's System.map and vmlinux file (function entries,
every instruction boundary of a few functions and offsets inside their instructions, data,
odd specs) and from the booted guest (kprobe blacklist, functions without an ftrace site,
names kallsyms has twice, the lab modules' symbols). The guest then answers for each place
through both interfaces, in one shell loop:

  kprobe_events     `echo 'p:kprobes/o_N SPEC' >> kprobe_events` (removed again on success);
                    busybox says `sh: write error: <strerror text>` on failure
  register_kprobe() the lab module kp_oracle (qemu/modules/kp_oracle.c): writing SPEC to
                    /sys/kernel/debug/kp_oracle registers and unregisters a kprobe there;
                    reading it back gives `ok 0xADDR flags=0xF` or `err -ERRNO`

kp_oracle is given the place kprobe_events reads in SPEC (register_spec(): an address when
kstrtoul() takes SPEC, else SYM+OFF with the offset as kstrtol() reads it, `vfs_read-0` ->
`vfs_read+0`, `vfs_read+010` -> `vfs_read+8`). Places register_kprobe() cannot express (a
`%return` or another `%` suffix, a negative offset, an offset over UINT_MAX or one kstrtol()
refuses) get the kprobe_events verdict only.
tests/e2e/test_oracle.py compares every verdict with `kp-check --json`.

`python3 -m qemu.oracle --kernel 6.1` boots a lab, asks the guest alone and prints the
kernel's verdicts per class (no gdb).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import errno
import json
import os
import pathlib
import random
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Iterable

from qemu import kernels

SEED = 15                       # issue 15; change it and every place list changes with it
EVENTS = "/sys/kernel/tracing/kprobe_events"
ORACLE_FILE = "/sys/kernel/debug/kp_oracle"
ORACLE_MODULE = "/lib/modules/kp-test/kp_oracle.ko"   # qemu/build.py module_folder()
BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
FILTER_FUNCTIONS = "/sys/kernel/tracing/available_filter_functions"
PLACES_FILE = "/tmp/oracle.places"
UINT_MAX = (1 << 32) - 1
ULONG_MAX = (1 << 64) - 1
INTERFACES = ("kprobe_events", "register_kprobe")
LAB_MODULES = ("kp_lab_kprobe", "kp_lab_kretprobe")

# How many of each sampled class (the boundary classes take what the functions have).
ENTRY_FUNCTIONS = 50            # each as SYM and as 0xADDR
MAX_BOUNDARIES = 36             # instruction starts per function
MAX_MID = 10                    # offsets inside instructions per function
BLACKLISTED = 20
NOTRACE = 25
DUPLICATES = 10
DATA = 10

# The last text symbol of a module's text (its exit function; its init function, still named
# on 6.12): kallsyms gives it the rest of the module's text allocation as its size, and on 6.12 register_kprobe() -> can_optimize() decodes
# that far, past the mapped page: the guest oopses (insn_get_modrm, seen on
# 6.12.117+deb12 with kp_lab_kprobe_exit). kprobe_events refuses it earlier (no ftrace site).
LAST_MODULE_SYMBOL = ("the module's last text symbol: register_kprobe() oopses the 6.12 guest "
                      "there (can_optimize() decodes past the module's mapped text)")

Run = Callable[..., str]        # a guest shell command -> its output (Guest.run's signature)
_STRERROR = {os.strerror(code): name for code, name in errno.errorcode.items()}


# -- places -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Place:
    """One spec to ask about, the class it was drawn for, and where it should land (the
    symbol's address + offset, when the generator knows it; for the report only)."""

    spec: str
    cls: str
    nominal: int | None = None
    skip_register: str | None = None    # why kp_oracle is not asked although it could be

    @property
    def register_kprobe(self) -> bool:
        """Whether register_kprobe() can be asked at all (struct kprobe has symbol_name, an
        unsigned int offset and addr: no sign, no suffix, nothing over UINT_MAX)."""
        return register_spec(self.spec) is not None

    @property
    def ask_register(self) -> bool:
        return self.register_kprobe and self.skip_register is None


def kstrtoull(text: str) -> int | None:
    """lib/kstrtox.c kstrtoull() with base 0 (0x.. hex, 0.. octal, else decimal), one
    leading `+`; None where the kernel returns an error (a bad digit, an overflow)."""
    text = text[1:] if text.startswith("+") else text
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        value = int(text[2:], 16)
    elif re.fullmatch(r"0[0-7]*", text):
        value = int(text, 8)
    elif re.fullmatch(r"[1-9][0-9]*", text):
        value = int(text, 10)
    else:
        return None
    return value if value <= ULONG_MAX else None


def kstrtol(text: str) -> int | None:
    """kstrtol() with base 0: an optional `-`, then kstrtoull()'s rules, within a long."""
    if text.startswith("-"):
        value = kstrtoull(text[1:]) if not text[1:].startswith("+") else None
        return None if value is None or value > 1 << 63 else -value
    value = kstrtoull(text)
    return None if value is None or value >= 1 << 63 else value


def register_spec(spec: str) -> str | None:
    """What kp_oracle is given for a kprobe_events SPEC, or None when register_kprobe() cannot
    take that place. __trace_kprobe_create(): a `%` suffix first (%return, or a parse error),
    then an address if kstrtoul() takes SPEC, else traceprobe_split_symbol_offset(): the
    offset from the first `+` or `-` on, kstrtol(), and 0 <= offset <= UINT_MAX."""
    if "%" in spec:
        return None
    if kstrtoull(spec) is not None:
        return spec                                   # kp_oracle kstrtoul()s it the same way
    cut = min((spec.find(c) for c in "+-" if c in spec), default=-1)
    if cut < 0:
        return spec
    offset = kstrtol(spec[cut:])
    if offset is None or not 0 <= offset <= UINT_MAX:
        return None
    return f"{spec[:cut]}+{offset}"


@dataclasses.dataclass
class SymbolMap:
    """System.map: every symbol with its address and kind, and text sizes by next symbol."""

    entries: list[tuple[int, str, str]]                 # (address, kind, name), by address
    counts: collections.Counter
    address: dict[str, int]

    @classmethod
    def read(cls, path: pathlib.Path) -> "SymbolMap":
        entries = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3:
                entries.append((int(parts[0], 16), parts[1], parts[2]))
        entries.sort()
        counts = collections.Counter(name for _, _, name in entries)
        return cls(entries, counts, {name: addr for addr, _, name in entries})

    def text_functions(self) -> list[tuple[str, int, int]]:
        """(name, address, size) of uniquely named text symbols inside _stext.._etext, size
        up to the next symbol at a higher address (on 6.12 that is the next __pfx_)."""
        start, end = self.address["_stext"], self.address["_etext"]
        addresses = sorted({addr for addr, _, _ in self.entries})
        following = dict(zip(addresses, addresses[1:]))
        found = []
        for addr, kind, name in self.entries:
            if kind in "tT" and start < addr < end and self.counts[name] == 1 and \
                    not name.startswith("__pfx_") and addr in following:
                found.append((name, addr, following[addr] - addr))
        return found

    def in_core_text(self, name: str) -> bool:
        addr = self.address.get(name)
        return addr is not None and self.address["_stext"] <= addr < self.address["_etext"]


@dataclasses.dataclass(frozen=True)
class Insn:
    offset: int
    length: int
    text: str


_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)$")


def disassemble(vmlinux: pathlib.Path, start: int, size: int) -> list[Insn]:
    """The instructions of [start, start + size) in the vmlinux file (objdump)."""
    out = subprocess.run(
        ["objdump", "-d", "--insn-width=16", f"--start-address={start:#x}",
         f"--stop-address={start + size:#x}", str(vmlinux)],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    insns = []
    for line in out.splitlines():
        match = _OBJDUMP_LINE.match(line)
        if match:
            address = int(match.group(1), 16)
            insns.append(Insn(address - start, len(match.group(2).split()),
                              " ".join(match.group(3).split())))
    # the last one may be cut by --stop-address (the symbol map's size is an estimate)
    return [i for i in insns if i.offset + i.length <= size]


@dataclasses.dataclass
class GuestFacts:
    """What only the booted guest knows, sampled with the seed."""

    blacklisted: list[str]
    notrace: list[str]
    duplicates: list[str]
    module_text: list[tuple[str, str, int]]            # (module, symbol, address)
    traceable: set[str]                                # of the candidates asked about


def _pick(rng: random.Random, total: int, count: int) -> list[int]:
    """`count` distinct 1-based line numbers out of `total`, sorted."""
    return sorted(rng.sample(range(1, total + 1), min(count, total)))


def guest_facts(run: Run, symbols: SymbolMap, rng: random.Random,
                candidates: list[str]) -> GuestFacts:
    """Two round trips: the guest sorts its lists into /tmp and says how long they are, then
    prints the lines the seed picked, the lab modules' kallsyms lines, and which of the
    `candidates` have an ftrace site (are in available_filter_functions)."""
    counts = run(
        "cd /tmp && "
        f"awk '{{print $2}}' {BLACKLIST} | sort -u > o_black && "
        "awk 'NF == 3 && ($2 == \"t\" || $2 == \"T\") {print $3}' /proc/kallsyms | sort > o_text && "
        "uniq -d o_text > o_dup && "
        "uniq -u o_text | grep -v '^__pfx_' > o_uniq && "
        f"awk '{{print $1}}' {FILTER_FUNCTIONS} | sort -u > o_ff && "
        "awk 'NR == FNR {s[$1]; next} !($1 in s)' o_ff o_uniq > o_nf && "
        "awk 'NR == FNR {s[$1]; next} !($1 in s)' o_black o_nf > o_notrace && "
        "echo $(wc -l < o_black) $(wc -l < o_dup) $(wc -l < o_notrace)", timeout=300).split()
    black_total, dup_total, notrace_total = (int(n) for n in counts[-3:])
    picks = {"o_black": _pick(rng, black_total, BLACKLISTED * 2),
             "o_dup": _pick(rng, dup_total, DUPLICATES),
             "o_notrace": _pick(rng, notrace_total, NOTRACE * 4)}
    command = [f"echo '== {name}'; awk 'BEGIN {{n = split(\"{' '.join(map(str, lines))}\", a, "
               f"\" \"); for (i = 1; i <= n; i++) k[a[i]] = 1}} (FNR in k)' /tmp/{name}"
               for name, lines in picks.items()]
    command.append(f"echo '== traceable'; awk 'BEGIN {{n = split(\"{' '.join(candidates)}\", "
                   "a, \" \"); for (i = 1; i <= n; i++) k[a[i]] = 1} ($1 in k)' /tmp/o_ff")
    command.append("echo '== modules'; grep -E '\\[(" + "|".join(LAB_MODULES) +
                   ")\\]' /proc/kallsyms")
    sections: dict[str, list[str]] = collections.defaultdict(list)
    current = ""
    for line in run("; ".join(command), timeout=120).splitlines():
        if line.startswith("== "):
            current = line[3:]
        elif line.strip():
            sections[current].append(line.strip())
    modules = []
    for line in sections["modules"]:
        parts = line.split()
        if len(parts) == 4 and parts[1] in "tT":
            modules.append((parts[3].strip("[]"), parts[2], int(parts[0], 16)))
    # blacklisted and notrace: functions of the core kernel text (the blacklist also holds
    # whole areas and module functions; names without ftrace include init code)
    black = [n for n in sections["o_black"] if symbols.in_core_text(n)]
    notrace = [n for n in sections["o_notrace"] if symbols.in_core_text(n)]
    return GuestFacts(blacklisted=rng.sample(black, min(BLACKLISTED, len(black))),
                      notrace=rng.sample(notrace, min(NOTRACE, len(notrace))),
                      duplicates=sections["o_dup"], module_text=sorted(modules),
                      traceable=set(sections["traceable"]))


def generate(files: kernels.KernelFiles, run: Run, seed: int = SEED) -> list[Place]:
    """The places for one booted lab kernel; the same kernel and seed give the same list."""
    assert files.system_map is not None
    rng = random.Random(seed)
    symbols = SymbolMap.read(files.system_map)
    functions = symbols.text_functions()
    by_name = {name: (addr, size) for name, addr, size in functions}
    places: list[Place] = []

    # function entries, as SYM and as 0xADDR
    for name, addr, _ in sorted(rng.sample(functions, ENTRY_FUNCTIONS), key=lambda f: f[1]):
        places.append(Place(name, "entry_sym", addr))
        places.append(Place(f"{addr:#x}", "entry_addr", addr))

    # every instruction boundary of a few functions, and offsets inside their instructions:
    # vfs_read, two functions with an ftrace site and one without (kprobe_events refuses
    # every place in a function without one)
    sized = [f for f in functions if 0x30 <= f[2] <= 0x100]
    candidates = sorted(rng.sample(sized, 40))
    facts = guest_facts(run, symbols, rng, [name for name, _, _ in candidates])
    traced = [f for f in candidates if f[0] in facts.traceable]
    # (not a `.cold`/`.part` piece: kprobe_events judges those by the parent's ftrace site)
    untraced = [f for f in candidates if f[0] not in facts.traceable and "." not in f[0]]
    chosen = [("vfs_read", *by_name["vfs_read"]), *traced[:2], *untraced[:1]]
    for name, addr, size in chosen:
        insns = disassemble(files.vmlinux, addr, size)
        for insn in insns[:MAX_BOUNDARIES]:
            places.append(Place(f"{name}+{insn.offset:#x}", "boundary", addr + insn.offset))
        inside = [i for i in insns[:MAX_BOUNDARIES] if i.length > 1]
        for insn in sorted(rng.sample(inside, min(MAX_MID, len(inside))), key=lambda i: i.offset):
            offset = insn.offset + rng.randrange(1, insn.length)
            places.append(Place(f"{name}+{offset:#x}", "mid_insn", addr + offset))
    # a few boundaries also as raw addresses
    for place in rng.sample([p for p in places if p.cls == "boundary"], 8):
        places.append(Place(f"{place.nominal:#x}", "boundary_addr", place.nominal))

    places += [Place(n, "blacklist", symbols.address[n]) for n in facts.blacklisted]
    places += [Place(n, "notrace", symbols.address[n]) for n in facts.notrace]
    places += [Place(n, "duplicate") for n in facts.duplicates]

    # not function text: the text section's edges, data symbols, raw addresses outside text
    edges = ["_stext", "_stext+5", "_text", "_etext", "_sinittext", "_einittext"]
    places += [Place(s, "nonfunc_text") for s in edges if s.split("+")[0] in symbols.address]
    if "__pfx_vfs_read" in symbols.address:                     # 6.12: function padding
        places += [Place("__pfx_vfs_read", "nonfunc_text"),
                   Place("__pfx_vfs_read+4", "nonfunc_text")]
    data = [(a, n) for a, k, n in symbols.entries if k in "dDbBrR" and symbols.counts[n] == 1]
    fixed_data = ["jiffies", "jiffies_64", "init_task", "init_task+8"]
    places += [Place(s, "data") for s in fixed_data if s.split("+")[0] in symbols.address]
    places += [Place(n, "data", a) for a, n in sorted(rng.sample(data, DATA))]
    places += [Place(f"{symbols.address[n]:#x}", "data_addr", symbols.address[n])
               for n in ("jiffies", "init_task")]
    places += [Place(a, "bad_addr") for a in ("0x0", "0x1", "0xffffffffffffffff",
                                               f"{symbols.address['_etext']:#x}")]

    # module text: the loaded lab modules, symbol by symbol; kp_lab_target byte by byte
    module_symbols = facts.module_text
    for module, name, addr in module_symbols:
        following = [a for m, _, a in module_symbols if m == module and a > addr]
        last = not following or min(following) - addr > 0x1000
        places.append(Place(f"{module}:{name}", "module", addr,
                            LAST_MODULE_SYMBOL if last else None))
    target = next(((m, n, a) for m, n, a in module_symbols if n == "kp_lab_target"), None)
    if target is not None:
        module, name, addr = target
        later = [a for m, _, a in module_symbols if m == module and a > addr]
        size = min(later) - addr if later else 0x20
        for offset in range(0, min(size, 0x30) + 2):
            places.append(Place(f"{module}:{name}+{offset}", "module_offset", addr + offset))
        places += [Place(name, "module", addr), Place(f"{addr:#x}", "module_addr", addr),
                   Place(f"{addr + 1:#x}", "module_addr", addr + 1),
                   Place(f"{module}:{name}+0x1000", "module_offset"),
                   Place(f"{module}:no_such_symbol_kp", "module")]
    places += [Place("nosuchmod:foo", "module_unloaded"),
               Place("nosuchmod:vfs_read", "module_unloaded")]

    # odd specs around vfs_read (and other names)
    vfs_read, vfs_size = by_name["vfs_read"]
    places += [Place(s, "negative_offset") for s in
               ("vfs_read-4", "vfs_read+-4", "vfs_read-0x10", "vfs_read-0", "ksys_read-1")]
    places += [Place(s, "huge_offset") for s in
               ("vfs_read+0xffffffff", "vfs_read+4294967296", "vfs_read+0x100000000",
                "vfs_read+0x10000000000000000", "vfs_read+99999999999999999999999",
                "0x10000000000000000")]
    places += [Place(f"vfs_read+{o:#x}", "past_end", vfs_read + o) for o in
               (vfs_size, vfs_size + 1, 9999, 0x10000)]
    places += [Place("vfs_read+010", "octal_offset", vfs_read + 8)]
    places += [Place(s, "unknown") for s in ("no_such_function_kp", "vfs_readx", "VFS_READ",
                                             "no_such_function_kp+4")]
    places += [Place(s, "return") for s in ("vfs_read%return", "vfs_read+4%return",
                                            "vfs_read+0%return", "ksys_read%return")]
    places += [Place(s, "bad_suffix") for s in ("vfs_read%foo", "vfs_read+4%foo",
                                                "vfs_read%")]
    return _unique(places)


def _unique(places: Iterable[Place]) -> list[Place]:
    seen: set[str] = set()
    out = []
    for place in places:
        if place.spec not in seen:
            seen.add(place.spec)
            out.append(place)
    return out


# -- the guest's answers ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class KernelVerdict:
    """One interface's answer: accepted, or an errno name; register_kprobe() successes also
    carry p->addr and p->flags."""

    accepted: bool
    errno: str | None = None
    address: int | None = None
    flags: int | None = None
    raw: str = ""

    @property
    def label(self) -> str:
        return "accepted" if self.accepted else (self.errno or f"?{self.raw}")

    def __str__(self) -> str:
        if self.accepted and self.address is not None:
            return f"accepted at {self.address:#x} flags={self.flags:#x}"
        return self.label

    def as_json(self) -> dict:
        return {"accepted": self.accepted, "errno": self.errno,
                "address": None if self.address is None else f"{self.address:#x}",
                "flags": self.flags}


def errno_name(strerror_text: str) -> str | None:
    """`Invalid argument` -> `EINVAL` (busybox's write error is glibc's strerror, like ours)."""
    return _STRERROR.get(strerror_text.strip())


def _events_verdict(field: str) -> KernelVerdict:
    if field == "ok":
        return KernelVerdict(True, raw=field)
    if field == "ok-not-removed":
        return KernelVerdict(True, raw=field)
    text = field.split("write error: ")[-1]
    return KernelVerdict(False, errno_name(text), raw=field)


def _module_verdict(write: str, line: str) -> KernelVerdict:
    """The write's outcome and the line read back must tell the same story."""
    ok = re.fullmatch(r"ok 0x([0-9a-f]+) flags=0x([0-9a-f]+)", line)
    err = re.fullmatch(r"err -(\d+)", line)
    if write == "ok" and ok:
        return KernelVerdict(True, address=int(ok.group(1), 16), flags=int(ok.group(2), 16),
                             raw=line)
    if write != "ok" and err:
        name = errno.errorcode.get(int(err.group(1)), err.group(1))
        if errno_name(write.split("write error: ")[-1]) == name:
            return KernelVerdict(False, name, raw=line)
    return KernelVerdict(False, None, raw=f"{write} / {line}")      # a lab problem: shown as is


# The guest loop: per place (a line `N SPEC MODULE-SPEC`, `-` when register_kprobe() is not
# asked) one kprobe_events write (and its removal), one kp_oracle write and read, one result
# line. Builtins only (echo, read, redirections): no fork per place.
GUEST_LOOP = (
    f"E={EVENTS}; O={ORACLE_FILE}; "
    "while read -r n spec m; do "
    "if echo \"p:kprobes/o_$n $spec\" >> $E 2>/tmp/o_err; then ke=ok; "
    "echo \"-:kprobes/o_$n\" >> $E 2>/dev/null || ke=ok-not-removed; "
    "else ke=; read -r ke < /tmp/o_err; fi; "
    "if [ \"$m\" != - ]; then "
    "if echo -n \"$m\" >> $O 2>/tmp/o_err; then we=ok; else we=; read -r we < /tmp/o_err; fi; "
    "read -r mr < $O; "
    "else we=-; mr=-; fi; "
    "echo \"O|$n|$ke|$we|$mr\"; "
    f"done < {PLACES_FILE}")


def push_lines(run: Run, path: str, lines: list[str], limit: int = 3000) -> None:
    """Write lines to a guest file, a few thousand bytes per command (a tty line in canonical
    mode holds at most 4095 bytes)."""
    run(f": > {path}")
    chunk: list[str] = []
    for line in lines + [None]:
        quoted = shlex.quote(line) if line is not None else ""
        if chunk and (line is None or sum(len(q) + 1 for q in chunk) + len(quoted) > limit):
            run(f"printf '%s\\n' {' '.join(chunk)} >> {path}")
            chunk = []
        if line is not None:
            chunk.append(quoted)


def ask_kernel(run: Run, places: list[Place]) -> list[dict[str, KernelVerdict | None]]:
    """Both interfaces' verdicts for every place, in order (None: register_kprobe() cannot
    be asked). Loads kp_oracle first; leaves kprobe_events as it found it."""
    run(f"[ -e {ORACLE_FILE} ] || insmod {ORACLE_MODULE}")
    before = run(f"cat {EVENTS}")
    push_lines(run, PLACES_FILE, [f"{i} {p.spec} {register_spec(p.spec) if p.ask_register else '-'}"
                                  for i, p in enumerate(places)])
    out = run(GUEST_LOOP, timeout=900)
    after = run(f"cat {EVENTS}")
    if after != before:
        raise RuntimeError(f"kprobe_events changed during the oracle loop:\n{before}\n---\n{after}")
    found: dict[int, dict[str, KernelVerdict | None]] = {}
    for line in out.splitlines():
        if not line.startswith("O|"):
            continue
        _, index, events, write, read = line.split("|", 4)
        found[int(index)] = {
            "kprobe_events": _events_verdict(events),
            "register_kprobe": None if write == "-" else _module_verdict(write, read)}
    missing = [places[i].spec for i in range(len(places)) if i not in found]
    if missing:
        raise RuntimeError(f"the guest loop gave no answer for {missing[:10]} "
                           f"({len(missing)} places); its output ends:\n{out[-2000:]}")
    return [found[i] for i in range(len(places))]


# -- kp-check's answers and the comparison --------------------------------------------------------

def kp_check_documents(gdb_cmd: Callable[[str], str], specs: list[str], limit: int = 2500,
                       validate: Callable[[dict], None] | None = None) -> list[dict]:
    """`kp-check --json` over all specs, in commands of at most `limit` characters (a gdb
    input line is a tty line); one `places` entry per spec, in order. `validate` is given
    each document (a JSON Schema check). A command that prints no document (kp-check failed
    on the whole command) is asked again one spec at a time; a spec that still fails gets
    `{"spec": ..., "error": <what gdb printed>}`, which compare() reports as a mismatch."""
    entries: list[dict] = []
    chunks: list[list[str]] = [[]]
    for spec in specs:
        if chunks[-1] and sum(len(s) + 1 for s in chunks[-1]) + len(spec) > limit:
            chunks.append([])
        chunks[-1].append(spec)
    for chunk in chunks:
        document, out = _kp_check(gdb_cmd, chunk, validate)
        if document is not None:
            entries += document["places"]
            continue
        for spec in chunk:
            single, out = _kp_check(gdb_cmd, [spec], validate) if len(chunk) > 1 else (None, out)
            entries += single["places"] if single else [{"spec": spec, "error": out}]
    return entries


def _kp_check(gdb_cmd: Callable[[str], str], chunk: list[str],
              validate: Callable[[dict], None] | None) -> tuple[dict | None, str]:
    out = gdb_cmd("kp-check --json " + " ".join(chunk)).strip()
    try:
        document = json.loads(out)
    except ValueError:
        return None, out
    assert document.get("schema") == "kp-check" and document.get("version") == 1, out[:500]
    if validate is not None:
        validate(document)
    got = [e.get("spec") for e in document["places"]]
    assert got == chunk, f"kp-check --json answered for {got}, asked {chunk}"
    return document, out


def _ours_label(verdict: dict | None) -> str:
    if verdict is None:
        return "null"
    return "accepted" if verdict.get("accepted") else str(verdict.get("errno"))


@dataclasses.dataclass(frozen=True)
class Mismatch:
    place: Place
    interface: str
    kernel: str
    ours: str
    reason: str


def compare(places: list[Place], kernel: list[dict[str, KernelVerdict | None]],
            ours: list[dict]) -> list[Mismatch]:
    """Per place and interface: accepted vs accepted, or the same errno name; for a
    register_kprobe() success also p->addr vs kp-check's address."""
    mismatches = []
    for place, theirs, entry in zip(places, kernel, ours, strict=True):
        if "error" in entry:
            mismatches.append(Mismatch(place, "both", "-", "no answer",
                                       f"kp-check failed: {entry['error'][:200]}"))
            continue
        for interface in INTERFACES:
            k = theirs[interface]
            o = entry.get(interface)
            reason = (o or {}).get("reason") or ""
            if k is None and place.skip_register and interface == "register_kprobe":
                continue
            if k is None:
                if o is not None:
                    mismatches.append(Mismatch(place, interface, "n/a", _ours_label(o),
                                               "register_kprobe() cannot take this spec: "
                                               "expected null"))
                continue
            if o is None or bool(o.get("accepted")) != k.accepted or \
                    (not k.accepted and o.get("errno") != k.errno):
                mismatches.append(Mismatch(place, interface, str(k), _ours_label(o), reason))
                continue
            if interface == "register_kprobe" and k.accepted:
                address = entry.get("address")
                if address is None or int(address, 16) != k.address:
                    mismatches.append(Mismatch(place, interface, str(k),
                                               f"accepted at {address}", "p->addr differs"))
    return mismatches


# -- reports ------------------------------------------------------------------------------------

def counts_table(places: list[Place], kernel: list[dict[str, KernelVerdict | None]]) -> str:
    """One line per class: how many places, the kernel's verdicts per interface."""
    out = [f"{'class':16} {'n':>4}  kprobe_events / register_kprobe()"]
    for cls, row in class_counts(places, kernel).items():
        out.append(f"{cls:16} {row['places']:4}  "
                   + ", ".join(f"{k} {v}" for k, v in row["kprobe_events"].most_common())
                   + "  /  "
                   + ", ".join(f"{k} {v}" for k, v in row["register_kprobe"].most_common()))
    return "\n".join(out) + "\n"


def class_counts(places: list[Place],
                 kernel: list[dict[str, KernelVerdict | None]]) -> dict[str, dict]:
    """Per class: how many places, and the kernel's verdicts per interface."""
    counts: dict[str, dict] = {}
    for place, verdicts in zip(places, kernel):
        row = counts.setdefault(place.cls, {"places": 0, "kprobe_events": collections.Counter(),
                                            "register_kprobe": collections.Counter()})
        row["places"] += 1
        for interface in INTERFACES:
            verdict = verdicts[interface]
            if verdict is None:
                label = "skipped" if place.skip_register and place.register_kprobe and \
                    interface == "register_kprobe" else "not asked"
            else:
                label = verdict.label
            row[interface][label] += 1
    return counts


def interface_disagreements(places: list[Place],
                            kernel: list[dict[str, KernelVerdict | None]]) -> list[str]:
    """Places where kprobe_events and register_kprobe() answered differently."""
    lines = []
    for place, verdicts in zip(places, kernel):
        events, module = verdicts["kprobe_events"], verdicts["register_kprobe"]
        if module is not None and events.label != module.label:
            lines.append(f"{place.cls:16} {place.spec:44} kprobe_events {events.label:14} "
                         f"register_kprobe {module}")
    return lines


def shifted(places: list[Place], kernel: list[dict[str, KernelVerdict | None]]) -> list[str]:
    """register_kprobe() successes whose p->addr is not where the spec points (endbr64)."""
    lines = []
    for place, verdicts in zip(places, kernel):
        module = verdicts["register_kprobe"]
        if module is not None and module.accepted and place.nominal is not None and \
                module.address != place.nominal:
            lines.append(f"{place.cls:16} {place.spec:44} p->addr = spec {module.address - place.nominal:+#x}")
    return lines


def mismatch_table(mismatches: list[Mismatch], per_class: int | None = None) -> str:
    """kp-check's disagreements with the kernel, grouped by class: spec, interface, the
    kernel's verdict, kp-check's (and its reason); `per_class` rows at most per class."""
    out = [f"kp-check disagrees with the kernel on {len(mismatches)} verdicts"]
    by_class: dict[str, list[Mismatch]] = collections.defaultdict(list)
    for m in mismatches:
        by_class[m.place.cls].append(m)
    for cls, rows in by_class.items():
        out.append(f"[{cls}] {len(rows)}")
        for m in rows[:per_class]:
            out.append(f"  {m.place.spec:44} {m.interface:15} kernel {m.kernel:34} "
                       f"kp-check {m.ours}" + (f"  ({m.reason})" if m.reason else ""))
        if per_class is not None and len(rows) > per_class:
            out.append(f"  ... and {len(rows) - per_class} more")
    return "\n".join(out) + "\n"


def report(kernel_name: str, places: list[Place], kernel: list[dict[str, KernelVerdict | None]],
           mismatches: list[Mismatch] | None = None) -> str:
    """Counts per class and interface, the interface disagreements, and (given kp-check's
    answers) the mismatches grouped by class."""
    out = [f"oracle on {kernel_name}: {len(places)} places, seed {SEED}", "",
           counts_table(places, kernel).rstrip("\n")]
    totals = {i: collections.Counter(v[i].label for v in kernel if v[i] is not None)
              for i in INTERFACES}
    out += ["", *(f"total {i}: {sum(c.values())} asked: " +
                  ", ".join(f"{k} {v}" for k, v in c.most_common()) for i, c in totals.items())]
    disagreements = interface_disagreements(places, kernel)
    out += ["", f"kprobe_events and register_kprobe() disagree on {len(disagreements)} places:",
            *disagreements]
    skipped = [p for p in places if p.register_kprobe and p.skip_register]
    out += ["", f"register_kprobe() not asked on {len(skipped)} places it could take:",
            *(f"{p.cls:16} {p.spec:44} {p.skip_register}" for p in skipped)]
    moved = shifted(places, kernel)
    out += ["", f"register_kprobe() put the probe elsewhere than the spec names on "
                f"{len(moved)} places:", *moved]
    if mismatches is not None:
        out += ["", mismatch_table(mismatches)]
    return "\n".join(out) + "\n"


def results_json(kernel_name: str, places: list[Place],
                 kernel: list[dict[str, KernelVerdict | None]],
                 ours: list[dict] | None = None) -> dict:
    rows = []
    for index, (place, verdicts) in enumerate(zip(places, kernel)):
        row = {"spec": place.spec, "class": place.cls,
               "kp_oracle_given": register_spec(place.spec) if place.ask_register else None,
               "skip_register": place.skip_register,
               **{i: None if verdicts[i] is None else verdicts[i].as_json() for i in INTERFACES}}
        if ours is not None:
            row["kp_check"] = ours[index]
        rows.append(row)
    return {"kernel": kernel_name, "seed": SEED, "places": rows}


def main(argv: list[str] | None = None) -> int:
    from qemu.lab import Lab
    parser = argparse.ArgumentParser(prog="python3 -m qemu.oracle", description=(
        "Boot a lab kernel and print the guest kernel's verdicts on the oracle's places "
        "(kprobe_events and register_kprobe()), per class."))
    parser.add_argument("--kernel", default=kernels.DEFAULT_KERNEL)
    parser.add_argument("--json", type=pathlib.Path, help="also write every verdict here")
    options = parser.parse_args(argv)
    with Lab(options.kernel) as lab:
        assert lab.guest and lab.files
        started = time.monotonic()
        places = generate(lab.files, lab.guest.run)
        generated = time.monotonic()
        if options.json:
            options.json.write_text(json.dumps([dataclasses.asdict(p) for p in places]) + "\n")
        verdicts = ask_kernel(lab.guest.run, places)
        print(f"generated in {generated - started:.1f} s, asked in "
              f"{time.monotonic() - generated:.1f} s", file=sys.stderr)
        print(report(options.kernel, places, verdicts), end="")
        if options.json:
            options.json.write_text(json.dumps(results_json(options.kernel, places, verdicts),
                                               indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
