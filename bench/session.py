"""gdb on a lab with the plugin under test, the naive walker and the timer loaded."""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
import time

from bench.common import BENCH, COMMAND_TIMEOUT, COMMANDS, STOP_PAUSE, BenchError
from bench.relay import Counters, Relay
from bench.samples import Sample
from qemu.lab import Gdb, Lab


@dataclasses.dataclass(frozen=True)
class Tools:
    """What every measurement needs: which gdb, which plugin, where to put files."""

    gdb: str
    gdbinit: pathlib.Path       # the gdb_kprobe under test (a snapshot with --rev)
    workdir: pathlib.Path
    repeat: int
    read_log: bool = False      # keep each command's raw per-read log (MBs at N=10,000)


class Session:
    """gdb with kp-list, the naive walker and the timer, attached to a lab.

    Through the relay normally; straight to QEMU's gdbstub when `relay` is None (to
    see what the relay itself costs; no packet counts then). The plugin is a black
    box: `source <gdbinit.py>`, whatever the package behind it looks like. With
    `attach=False` gdb starts unattached; attach() and detach() then let two sessions
    take turns on the one gdbstub.
    """

    def __init__(self, lab: Lab, relay: Relay | None, tools: Tools, attach: bool = True,
                 name: str = "command") -> None:
        self.lab = lab
        self.relay: Relay | None = None
        self.workdir = tools.workdir
        self.out_file = tools.workdir / f"{name}.out"
        args = lab.gdb_args(attach=False, plugin=False) + [
            "-ex", f"source {tools.gdbinit}",
            "-ex", f"source {BENCH / 'naive_walker.py'}",
            "-ex", f"source {BENCH / 'gdb_timer.py'}"]
        self.gdb = Gdb(["-ex", "set style enabled off", *args], gdb_binary=tools.gdb)
        if attach:
            self.attach(relay)

    def attach(self, relay: Relay | None) -> None:
        """`target remote` through `relay`, or straight to the stub when it is None."""
        port = relay.port if relay is not None else self.lab.gdb_port
        out = self.gdb.execute(f"target remote 127.0.0.1:{port}")
        if "Remote debugging using" not in out:
            raise BenchError(f"gdb could not attach: {out.strip()}")
        self.relay = relay

    def detach(self) -> None:
        """Let go of the stub (the guest runs on): another gdb may attach now."""
        self.gdb.execute("detach")
        self.relay = None

    def fresh_stop(self) -> None:
        """Resume, then stop again: gdb and gdb_kprobe drop their per-stop caches on resume,
        so every measured command is the first one at its stop, as a user's would be."""
        self.gdb.resume()
        time.sleep(STOP_PAUSE)
        self.gdb.interrupt()

    def timed(self, command: str) -> tuple[Sample, str]:
        if self.relay is not None:
            # gdb sends nothing while stopped and idle: only this command is counted
            self.relay.reset()
        line = self.gdb.execute(f"bench-time {self.out_file} {command}",
                                timeout=COMMAND_TIMEOUT)
        counters = self.relay.snapshot() if self.relay is not None else Counters()
        match = re.search(r"BENCH-TIME ([0-9.]+) (.*)", line)
        if match is None:
            raise BenchError(f"{command}: no timing line in {line!r}")
        if match.group(2).strip() != "ok":
            raise BenchError(f"{command}: {match.group(2).strip()}")
        return Sample(float(match.group(1)), counters), self.out_file.read_text(encoding="utf-8")

    def python_value(self, expression: str) -> str:
        out = self.gdb.execute(f"python print('KP-VALUE', {expression})")
        match = re.search(r"KP-VALUE (.*)", out)
        if match is None:
            raise BenchError(f"gdb could not evaluate {expression}: {out.strip()}")
        return match.group(1).strip()

    def read_labels(self) -> dict[int, str]:
        """Lengths of the reads kp-list makes, named by the struct of that size."""
        table_bytes = 8 * int(self.python_value(
            "gdb.lookup_static_symbol('kprobe_table').type.sizeof // 8"))
        labels: dict[int, list[str]] = collections.defaultdict(list)
        labels[table_bytes].append("kprobe_table")
        for struct in ("kprobe", "kretprobe", "trace_kprobe", "trace_probe_event", "module",
                       "mod_kallsyms"):
            size = int(self.python_value(f"gdb.lookup_type('struct {struct}').sizeof"))
            labels[size].append(f"struct {struct}")
        labels[64].append("string (64 B: event group/name)")
        # gdb_kprobe/target.py serves small reads from aligned blocks of this size
        labels[2048].append("2 KiB block (gdb_kprobe's read cache: kprobes, trace events, "
                            "strings)")
        labels[8].append("u64")
        return {size: " / ".join(names) for size, names in labels.items()}

    def field_bytes(self) -> dict[str, int]:
        """Sizes from the vmlinux's DWARF of what kp-list must read at all: the table of
        hlist heads and, per struct kprobe, its link and the fields a row shows."""
        sizes = {"kprobe_table": 8 * int(self.python_value(
            "gdb.lookup_static_symbol('kprobe_table').type.sizeof // 8"))}
        for field in ("addr", "flags", "pre_handler"):
            sizes[field] = int(self.python_value(
                f"gdb.lookup_type('struct kprobe')['{field}'].type.sizeof"))
        sizes["link"] = int(self.python_value("gdb.lookup_type('struct hlist_node').sizeof"
                                              " // 2"))
        return sizes

    def read_policy(self) -> str:
        """What the plugin's `show kp-read-block` says (the link it fitted, the block)."""
        return self.gdb.execute("show kp-read-block").strip()

    def profile(self, command: str, path: pathlib.Path) -> str:
        """cProfile of one command inside gdb, top functions by cumulative time."""
        script = self.workdir / "profile.py"
        script.write_text(
            "import cProfile, io, pstats\n"
            "import gdb\n"
            "_profile = cProfile.Profile()\n"
            f"_profile.runcall(gdb.execute, {command!r}, to_string=True)\n"
            "_text = io.StringIO()\n"
            "pstats.Stats(_profile, stream=_text).sort_stats('cumulative').print_stats(22)\n"
            f"open({str(path)!r}, 'w').write(_text.getvalue())\n")
        self.gdb.execute(f"source {script}", timeout=COMMAND_TIMEOUT)
        return path.read_text(encoding="utf-8")

    def close(self) -> None:
        self.gdb.close()


def warm_up(session: Session, commands: tuple[str, ...] = COMMANDS) -> None:
    """One untimed run each: kp-list loads the vmlinux's ELF symbol table once per gdb
    session (that cost is in the cold start), the naive walker warms gdb's symbols."""
    for command in commands:
        session.fresh_stop()
        session.timed(command)
