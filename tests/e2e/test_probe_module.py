"""kp-locals PLACE --module DIR: the generated kprobe module builds without warnings against
the lab kernel, and the values its pre_handler prints equal gdb's, read in the probed frame
at a breakpoint on that pre_handler, for the same call.

Places are chosen, not written down: instruction boundaries after the prologue that an accept
runs through (counted with gdb breakpoints that never stop), where kp-locals places a
parameter and a stack-slot variable and kp-check says register_kprobe() takes the place; a
seeded draw among them."""
from __future__ import annotations

import random
import re

from qemu import probe_module
from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC

SEED = 17                                   # issue 17
FUNCTIONS = (("inet_accept", 3), ("do_accept", 2))
ROW = re.compile(r"  (param|local)\s+(\w+)\s+(.{26})\s(.*)$", re.M)
SLOT = re.compile(r"\(%r[sb]p\)")


def busy_ranges(session, function: str) -> list[tuple[int, int]]:
    """Bytes of `function` that the lab's probes already occupy (an optimized probe's jmp
    covers several instructions)."""
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    ranges = []
    for offset, flags in re.findall(rf"  \w  {function}\+(0x[0-9a-f]+)\s+(.*)$", listing, re.M):
        start, size = int(offset, 16), 1
        if "OPTIMIZED" in flags:
            shown = session.gdb_cmd(f"kp-show {function}+{offset}")
            size = int(re.search(r"; (\d+) bytes of original instructions", shown).group(1))
        ranges.append((start, start + size))
    return ranges


def executed(session, function: str, offsets: list[int]) -> list[int]:
    """The offsets an accept runs through: breakpoints with a huge ignore count count hits
    without stopping."""
    session.stop()
    numbers = {}
    for offset in offsets:
        out = session.gdb.execute(f"break *{function}+{offset}")
        number = re.search(r"Breakpoint (\d+)", out).group(1)
        session.gdb.execute(f"ignore {number} 1000000")
        numbers[number] = offset
    try:
        session.guest(TRAFFIC)
        table = session.gdb_cmd("info breakpoints")
    finally:
        session.gdb_cmd("delete")
    hit = set(re.findall(r"^(\d+)\s+breakpoint.*\n(?:\t.*\n)*?\s+breakpoint already hit \d+ time",
                         table + "\n", re.M))
    return [offset for number, offset in numbers.items() if number in hit]


def readable(session, place: str) -> tuple[bool, bool]:
    """(a parameter is read from a register or slot, some variable is in a stack slot)."""
    rows = ROW.findall(session.gdb_cmd(f"kp-locals {place}"))
    params = [where.strip() for kind, _, _, where in rows if kind == "param"]
    read = [p for p in params if re.fullmatch(r"%r\w+", p.split()[0]) or SLOT.search(p)]
    return bool(read), any(SLOT.search(where) for *_, where in rows)


def instructions(session, function: str) -> dict[int, str]:
    """offset → instruction text, from the vmlinux file (live text has probes in it)."""
    session.gdb_cmd("set trust-readonly-sections on")
    try:
        listing = session.gdb_cmd(f"x/160i {function}")
    finally:
        session.gdb_cmd("set trust-readonly-sections off")
    return {int(offset): text.strip() for offset, text in
            re.findall(rf"<{re.escape(function)}\+(\d+)>:\s+(.*)$", listing, re.M)}


def places_in(session, function: str, count: int) -> list[str]:
    static = session.gdb_cmd(f"kp-locals {function}")
    prologue_end = int(re.search(r"the prologue ends at \+(0x[0-9a-f]+)", static).group(1), 16)
    busy = busy_ranges(session, function)
    # an indirect call or jmp through memory: the kernel refuses it (-EOPNOTSUPP, "TODO:
    # support memory addressing" in prepare_emulation()), which kp-check does not know yet
    # up to the first epilogue instruction: kp-locals' CFA (prologue.py) counts the pushes
    # and the allocation, not the pops and adds that undo them
    listing = instructions(session, function)
    epilogue = min([o for o, text in listing.items() if o > prologue_end
                    and re.match(r"(pop|leave|ret|add\S*\s+\$\w+,%rsp)", text)], default=1 << 20)
    offsets = [o for o, text in listing.items() if prologue_end <= o < epilogue
               and not any(start <= o < end for start, end in busy)
               and not re.match(r"(call|jmp)q?\s+\*.*\(", text)]
    candidates = executed(session, function, offsets)
    random.Random(f"{SEED}-{function}").shuffle(candidates)
    usable = []
    for offset in candidates:
        place = f"{function}+{offset:#x}"
        check = session.gdb_cmd(f"kp-check {place}")
        if "register_kprobe(): accepted" in check and "already registered" not in check:
            params, slot = readable(session, place)
            if params:
                usable.append((not slot, place))
    # places with a stack-slot variable first (6.12's inet_accept has none: its err went
    # into struct proto_accept_arg), in the seeded order
    chosen = [place for _, place in sorted(usable, key=lambda pair: pair[0])][:count]
    assert len(chosen) == count, f"{len(chosen)} suitable places in {function}, wanted {count}"
    return sorted(chosen, key=lambda p: int(p.split("+")[1], 16))


def gdb_values(session, printed: dict[str, str]) -> dict[str, int]:
    """The same variables as gdb reads them in the selected frame."""
    values = {}
    for label, conversion in printed.items():
        name = label.lstrip("&")
        if conversion == "%px":
            expression = f"(unsigned long)({'&' if label.startswith('&') else ''}{name})"
            out = session.gdb.execute(f"print/x {expression}")
        else:
            out = session.gdb.execute(f"print/{'u' if conversion.endswith('u') else 'd'} {name}")
        values[label] = int(out.split(" = ", 1)[1].strip(), 0)
    return values


def stop_in_handler(session, name: str, place: str, address: int) -> int:
    """Break on the module's pre_handler, make the guest accept, select the probed frame."""
    session.stop()
    assert "Breakpoint" in session.gdb.execute(f"break {name}_pre")
    session.resume()
    token = session.lab.guest.send(TRAFFIC)
    session.gdb.wait_prompt(timeout=120)
    session.running = False
    bt = session.gdb.execute("bt 40")
    function = place.split("+")[0]
    label = rf"\[probed at {re.escape(place)}\]"
    match = re.search(rf"^#(\d+)\s+(?:0x[0-9a-f]+ in )?{function}\b.*{label}", bt, re.M)
    assert match, bt
    session.gdb.execute(f"frame {match.group(1)}")
    # the frame's pc is regs->ip, one past the int3 (gdb looks the variables up at pc-1)
    pc = int(session.gdb.execute("print/x $pc").split(" = ")[1], 16)
    assert pc - 1 == address, (hex(pc), hex(address), bt)
    return token


def check_place(session, place: str, tmp_path) -> bool:
    """Generate, build, load, compare; True when a stack-slot variable was compared."""
    directory = tmp_path / session.lab.kernel_name / place.replace("+", "_")
    out = session.gdb_cmd(f"kp-locals {place} --module {directory}")
    assert out.startswith("wrote "), out
    source = next(directory.glob("*.c")).read_text()
    ko, log = probe_module.build(session.lab.files, directory)
    assert "warning:" not in log, log
    name = ko.stem
    fmt = re.search(rf'pr_info\("{name} [^:]+: ([^"]*)\\n"', source).group(1)
    printed = dict(re.findall(r"(&?\w+)=(%\w+)", fmt))
    address = int(re.search(r"place:\s+\S+ = (0x[0-9a-f]+)", source).group(1), 16)
    probe_module.load(session.guest, probe_module.push(session.guest, ko))
    try:
        loaded = session.gdb_cmd(f"kp-modules --load {directory} {name}")
        assert "symbols loaded" in loaded, loaded
        token = stop_in_handler(session, name, place, address)
        try:
            ours = gdb_values(session, printed)
        finally:
            session.gdb.execute("delete")
            session.resume()
            session.lab.guest.wait(token)
        lines = probe_module.printed(session.guest, name)
        assert lines, f"{name} printed nothing"
        theirs = probe_module.parse_line(lines[-1])
        assert set(theirs) == set(printed), (theirs, printed)
        module = {label: int(value, 16) if printed[label] == "%px" else int(value)
                  for label, value in theirs.items()}
        assert module == ours, (place, module, ours)
        print(f"{session.lab.kernel_name} {place}: {lines[-1].strip()}  gdb: {ours}")
        return bool(re.search(r"= \*?\(?[^;]*regs->[sb]p [+-]", source))
    finally:
        probe_module.unload(session.guest, name)


def test_generated_modules_print_gdbs_values(session, tmp_path):
    slots = []
    for function, count in FUNCTIONS:
        for place in places_in(session, function, count):
            slots.append(check_place(session, place, tmp_path))
    assert any(slots), "no stack-slot variable was compared"


def test_bad_module_directory(session):
    out = session.gdb_cmd("kp-locals inet_accept --module /proc/kp-no-such-dir")
    assert len(out.strip().splitlines()) == 1 and "cannot write the module into" in out, out
    assert "Traceback" not in out
