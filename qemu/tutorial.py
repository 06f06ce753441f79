"""Replay docs/tutorial.md in the lab and compare every step's output shape.

    .venv/bin/python -m qemu.tutorial --kernels 6.1,6.12,6.1-fp   # check (make tutorial-check)
    .venv/bin/python -m qemu.tutorial --kernels 6.1 --update      # outputs from a real run

The steps are fenced blocks whose info string is `console <where> [attributes]`:

    ```console guest        lines starting `$ ` run in the guest shell, the rest is their output
    ```console gdb          lines starting `(gdb) ` run in gdb (attached to the guest)
    ```console host         lines starting `$ ` run in one bash at the repository root,
                            with KERNEL set to the lab kernel; the guest runs and its
                            console is free meanwhile (KP_LAB_CONSOLE names it), as after
                            leaving `make shell`: `python -m qemu.probe_module load DIR`
    ```c excerpt=PATH       not run: the lines must appear in PATH in this order (`...` = a gap)

Attributes: `kernel=6.1,6.12` (a step only for these kernels; its output comes from the first
one; an untagged step runs on the x86-64 kernels only, so the arm64 appendix's steps say
`kernel=6.1-arm64`: `--kernels 6.1-arm64`, gdb-multiarch is taken for `--gdb gdb`), `unordered` (output lines compared as a set: hash-table order differs between kernels),
`async` (gdb only: the block's last command waits for the guest, e.g. `continue` to a
breakpoint or `kp-sim`; the next block, a guest block, is typed meanwhile in the second
terminal: its commands run when gdb lets the guest go and finish whenever the guest runs next).

Steps run in document order on one boot per kernel: gdb steps stop the guest first (Ctrl-C),
guest steps let it run first (`continue`), as a reader with two terminals would. Outputs are
compared by shape: numbers, addresses, timings and paths of the cache are placeholders,
whitespace runs are one space, and one `...` line in an expected output stands for any lines
(`--update` keeps as many lines before and after it). gdb's thread-switch notes are ignored:
they depend on which vCPU stops, and gdb 13 and 18 word them differently.
Untagged steps come from the reference kernel (6.1); `--update` rewrites the outputs of the
steps whose source is a kernel being run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import time

import pexpect

from qemu import kernels
from qemu.lab import REPO, Attached, Gdb, Guest, Lab, LabError

DOC = REPO / "docs" / "tutorial.md"
REFERENCE_KERNEL = "6.1"
PROMPTS = {"guest": "$ ", "host": "$ ", "gdb": "(gdb) "}
ELLIPSIS = "..."
STEP_TIMEOUT = 120
# gdb notes that depend on which vCPU happens to stop first (gdb 13: "[Switching to Thread
# 1.2]", gdb 18: "[Switching to thread 2 (Thread 1.2)]"): not part of any step's shape
NOISE = re.compile(r"^\[(Switching to|New) [Tt]hread [^\]]*\]$")


@dataclasses.dataclass
class Command:
    text: str                     # without its prompt
    expected: list[str]           # the output lines as written in the document


@dataclasses.dataclass
class Block:
    where: str                    # guest | gdb | host | excerpt
    attrs: dict[str, str]
    commands: list[Command]
    first: int                    # 0-based index of the first line inside the fence
    last: int                     # index of the closing fence
    body: list[str]               # the lines inside the fence (excerpt blocks)

    @property
    def kernels(self) -> list[str]:
        return [k for k in self.attrs.get("kernel", "").split(",") if k]

    @property
    def source(self) -> str:
        """The kernel whose real run this block's outputs come from."""
        return (self.kernels or [REFERENCE_KERNEL])[0]

    def applies(self, kernel: str) -> bool:
        """A block tagged with kernels runs on those; an untagged one on every kernel of the
        reference kernel's architecture (the lecture is x86-64's: the arm64 appendix's
        blocks name their kernels)."""
        if self.kernels:
            return kernel in self.kernels
        return kernels.arch_of(kernel) == kernels.arch_of(REFERENCE_KERNEL)

    def label(self) -> str:
        return f"{DOC.relative_to(REPO)}:{self.first} ({self.where})"


class DocError(ValueError):
    pass


def parse(text: str) -> list[Block]:
    """The document's step and excerpt blocks, in order."""
    lines = text.split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = re.match(r"^```(\w+)?\s*(.*)$", lines[index])
        if not match:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise DocError(f"line {index + 1}: a fence that is never closed")
        words = match.group(2).split()
        body = lines[index + 1:end]
        attrs = dict((w.split("=", 1) + [""])[:2] for w in words)
        if match.group(1) == "console" and words and words[0] in PROMPTS:
            where = words[0]
            del attrs[where]
            blocks.append(Block(where, attrs, _commands(body, PROMPTS[where], index + 2),
                                index + 1, end, body))
        elif "excerpt" in attrs:
            blocks.append(Block("excerpt", attrs, [], index + 1, end, body))
        index = end + 1
    for block in blocks:
        unknown = set(block.kernels) - set(kernels.names())
        if unknown:
            raise DocError(f"{block.label()}: unknown kernel {', '.join(sorted(unknown))}")
        if "async" in block.attrs and block.where != "gdb":
            raise DocError(f"{block.label()}: only gdb blocks can be async")
    return blocks


def _commands(body: list[str], prompt: str, lineno: int) -> list[Command]:
    commands: list[Command] = []
    for offset, line in enumerate(body):
        if line.startswith(prompt):
            commands.append(Command(line[len(prompt):], []))
        elif not commands:
            raise DocError(f"line {lineno + offset}: output before the first `{prompt.strip()}`")
        else:
            commands[-1].expected.append(line)
    return commands


# -- shapes ------------------------------------------------------------------------------
_SHAPE_RULES = [
    # paths that depend on the machine and the kernel: the lab's cache, mktemp, Debian's
    # build directory in the DWARF file names
    (re.compile(r"(?:(?:\S*/)?gdb-kprobe|<cache>)/kernels/[^\s':,]*"), "<kernel-cache>"),
    (re.compile(r"/tmp/tmp\.\w+"), "/tmp/<tmp>"),
    (re.compile(r"/build/reproducible-path/linux-[^/\s]+/"), ""),
    (re.compile(r"(?<=\s)\./(?=\w)"), ""),
    # dmesg's time stamp (the 6.1-fp build has none)
    (re.compile(r"^\[\s*\d+\.\d+\]\s"), ""),
    # numbers: 0x values, runs of code bytes ("e8 bb 62 81 ff"), any hex run with a digit
    # (addresses, sizes, times, pids, offsets)
    (re.compile(r"0x[0-9a-fA-F]+"), "#"),
    (re.compile(r"(?<![\w.])[0-9a-f]{2}(?: [0-9a-f]{2})+(?![\w.])"), "#"),
    (re.compile(r"[0-9a-fA-F]*[0-9][0-9a-fA-F]*"), "#"),
    (re.compile(r"(^|[\s=(:,\[])-#"), r"\1#"),        # a value's sign, not an operator
    (re.compile(r"\s+"), " "),
]


def shape(line: str) -> str:
    """What is compared of a line: its words, with every number a placeholder."""
    # the cache first: GDB_KPROBE_CACHE may put it anywhere, not only under ~/.cache
    line = line.replace(str(kernels.cache_dir()), "<cache>")
    line = line.replace(str(pathlib.Path.home()), "~")
    for pattern, replacement in _SHAPE_RULES:
        line = pattern.sub(replacement, line)
    return line.strip()


def clean(output: str) -> list[str]:
    """Output as document lines: right-stripped, no trailing blank lines."""
    lines = [line.rstrip() for line in output.replace("\r", "").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def compare(expected: list[str], actual: list[str], unordered: bool = False) -> str | None:
    """None when the shapes agree, else a description of the first difference."""
    exp = [line for line in expected if not NOISE.match(line.strip())]
    act = [line for line in actual if not NOISE.match(line.strip())]
    if unordered:
        missing = sorted(set(map(shape, exp)) - set(map(shape, act)))
        extra = sorted(set(map(shape, act)) - set(map(shape, exp)))
        if missing or extra or len(exp) != len(act):
            return (f"as a set of lines: missing {missing or 'none'}, unexpected "
                    f"{extra or 'none'}, {len(exp)} lines expected, {len(act)} seen")
        return None
    if exp.count(ELLIPSIS) > 1:
        return "more than one `...` line in one output"
    if ELLIPSIS in exp:
        cut = exp.index(ELLIPSIS)
        head, tail = exp[:cut], exp[cut + 1:]
        if len(act) < len(head) + len(tail):
            return f"{len(act)} lines, expected at least {len(head) + len(tail)}"
        pairs = list(zip(head, act[:len(head)], range(1, len(head) + 1)))
        start = len(act) - len(tail)
        pairs += list(zip(tail, act[start:], range(start + 1, len(act) + 1)))
    else:
        pairs = list(zip(exp, act, range(1, len(act) + 1)))
    for want, got, number in pairs:
        if shape(want) != shape(got):
            return (f"line {number}:\n    expected: {want}\n    actual:   {got}\n"
                    f"    shapes:   {shape(want)!r}\n          vs  {shape(got)!r}")
    if ELLIPSIS not in exp and len(exp) != len(act):
        return f"{len(act)} lines, expected {len(exp)}"
    return None


_CACHED_KERNEL = re.compile(r"<cache>/kernels/([^/\s':,]+)([^\s':,]*)")


def for_readers(line: str) -> str:
    """A line as the document shows it, right for any reader on any day: the cache folder
    as <cache>, a kernel's folder in it as <kernel> and its release as <release> (the
    archive moves: the ABI in a path today is gone in a few weeks)."""
    line = line.replace(str(kernels.cache_dir()), "<cache>")

    def placeholders(match: re.Match) -> str:
        rest = match[2]
        rest = re.sub(r"(linux-headers-)[^/\s':,]+", r"\1<release>", rest)
        rest = re.sub(r"(/modules/)[0-9a-f]{16}(?=/)", r"\1<sources>", rest)
        return f"<cache>/kernels/<kernel>{rest}"
    return _CACHED_KERNEL.sub(placeholders, line)


def updated(expected: list[str], actual: list[str]) -> list[str]:
    """The new output lines for the document; a `...` keeps as many lines around it."""
    if ELLIPSIS not in expected:
        return actual
    cut = expected.index(ELLIPSIS)
    tail = len(expected) - cut - 1
    if len(actual) <= cut + tail:
        return actual
    return actual[:cut] + [ELLIPSIS] + (actual[len(actual) - tail:] if tail else [])


def check_excerpt(block: Block) -> str | None:
    path = REPO / block.attrs["excerpt"]
    if not path.is_file():
        return f"no file {block.attrs['excerpt']}"
    source = [line.rstrip() for line in path.read_text().split("\n")]
    position = 0
    chunk: list[str] = []
    for line in [*block.body, ELLIPSIS]:
        if line.strip() != ELLIPSIS:
            chunk.append(line.rstrip())
            continue
        found = next((i for i in range(position, len(source) - len(chunk) + 1)
                      if source[i:i + len(chunk)] == chunk), None)
        if found is None:
            return f"not in {block.attrs['excerpt']} (in this order): {chunk[0]!r} ..."
        position = found + len(chunk)
        chunk = []
    return None


# -- running -----------------------------------------------------------------------------
class Replay(Attached):
    """One booted lab: runs steps in order, keeping track of whether the guest runs."""

    def run_gdb(self, command: str) -> str:
        return self.gdb_cmd(command, timeout=STEP_TIMEOUT)

    def run_guest(self, command: str) -> str:
        return self.guest(command, timeout=STEP_TIMEOUT, check=False)

    def start_async(self, gdb_command: str, guest_commands: list[str]) -> tuple[str, list[int]]:
        """A gdb command that waits for the guest (`continue` to a breakpoint, kp-sim) while
        guest commands run: they are queued on the console, run once gdb lets the guest go,
        and finish whenever the guest runs next (see finish_guest)."""
        self.stop()
        self.gdb.child.sendline(gdb_command)
        tokens = [self.lab.guest.send(command) for command in guest_commands]
        out = self.gdb.wait_prompt(timeout=STEP_TIMEOUT)
        first, _, rest = out.partition("\n")
        if first.strip() == gdb_command.strip():
            out = rest
        self.running = False
        return out, tokens

    def finish_guest(self, tokens: list[int]) -> list[str]:
        self.resume()
        return [self.lab.guest.wait(token, timeout=STEP_TIMEOUT, check=False) for token in tokens]

    def run_host(self, commands: list[str]) -> list[str]:
        """A host block's commands in one bash (so `cd` and variables carry over). The guest
        runs and its console is free meanwhile, as a reader's after leaving `make shell`:
        `python -m qemu.probe_module load DIR` takes it (KP_LAB_CONSOLE says where it is)."""
        marker = "KP-TUTORIAL-STEP"
        script = "".join(f"echo {marker}-{i}\n{command}\n" for i, command in enumerate(commands))
        env = dict(os.environ, KERNEL=self.lab.kernel_name,
                   KP_LAB_CONSOLE=str(self.lab.workdir / "console.sock"))
        # a reader's plain shell: not inside `make tutorial-check` (make[1]: ...) or the venv
        for name in ("PYTHONPATH", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
            env.pop(name, None)
        self.resume()
        self.lab.guest.close()
        try:
            result = subprocess.run(["bash", "-c", script], cwd=REPO, env=env,
                                    timeout=STEP_TIMEOUT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        finally:
            conn = self.lab._connect_console()
            if conn is None:
                raise LabError("QEMU went away during a host step")
            self.lab.guest = Guest(conn, self.lab._log)
        parts = re.split(rf"^{marker}-\d+\n", result.stdout, flags=re.M)
        return parts[1:] + [""] * (len(commands) - len(parts) + 1)


@dataclasses.dataclass
class Outcome:
    kernel: str
    steps: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    updates: dict[int, list[str]] = dataclasses.field(default_factory=dict)  # first -> body
    seconds: float = 0.0


def replay(kernel: str, gdb_binary: str = "gdb", update: bool = False,
           doc: pathlib.Path = DOC, log=None) -> Outcome:
    """Boot `kernel`, run every step that applies to it, compare (or collect updates)."""
    started = time.monotonic()
    blocks = parse(doc.read_text())
    outcome = Outcome(kernel)
    for block in blocks:
        if block.where == "excerpt":
            problem = check_excerpt(block)
            if problem:
                outcome.failures.append(f"{block.label()}: {problem}")
    steps = [b for b in blocks if b.where != "excerpt" and b.applies(kernel)]
    lab = Lab(kernel)
    lab.start()
    try:
        replay_ = Replay(lab, lab.gdb(gdb_binary=gdb_binary, logfile=log))
        # guest blocks started next to an async gdb block: they finish when the guest next runs
        pending: list[tuple[Block, list[int]]] = []

        def finish_pending() -> None:
            for partner, tokens in pending:
                _judge(partner, [clean(o) for o in replay_.finish_guest(tokens)], kernel,
                       update, outcome)
            pending.clear()

        index = 0
        block = steps[0] if steps else None
        try:
            while index < len(steps):
                block = steps[index]
                index += 1
                outs = _run_block(replay_, block, steps, index, pending, finish_pending)
                if "async" in block.attrs:
                    index += 1
                _judge(block, [clean(o) for o in outs], kernel, update, outcome)
            finish_pending()
        except (pexpect.TIMEOUT, pexpect.EOF, LabError, OSError) as exc:
            # the lab's state is unknown after a step that never ended (OSError: QEMU went
            # away, e.g. the guest panicked): stop here, with what the guest said last
            outcome.failures.append(f"{block.label() if block else '?'} on {kernel}: the step "
                                    f"did not finish ({type(exc).__name__}); later steps not "
                                    f"run\n  gdb said last: {_tail(replay_.gdb)!r}"
                                    f"\n  console:\n{lab.console_log_tail()}")
    finally:
        lab.stop()
    outcome.seconds = time.monotonic() - started
    return outcome


def _run_block(replay_: Replay, block: Block, steps: list[Block], index: int,
               pending: list[tuple[Block, list[int]]], finish_pending) -> list[str]:
    """Run one block; `index` is the position after it in `steps`."""
    if block.where == "host":
        finish_pending()
        return replay_.run_host([c.text for c in block.commands])
    if block.where == "guest":
        finish_pending()
        return [replay_.run_guest(c.text) for c in block.commands]
    if "async" not in block.attrs:
        return [replay_.run_gdb(c.text) for c in block.commands]
    partner = steps[index] if index < len(steps) else None
    if partner is None or partner.where != "guest":
        raise DocError(f"{block.label()}: an async gdb block needs a guest block right after it")
    finish_pending()
    outs = [replay_.run_gdb(c.text) for c in block.commands[:-1]]
    last, tokens = replay_.start_async(block.commands[-1].text,
                                       [c.text for c in partner.commands])
    pending.append((partner, tokens))
    return outs + [last]


def _tail(gdb: Gdb) -> str:
    before = gdb.child.before
    return before[-300:] if isinstance(before, str) else ""


def _judge(block: Block, outs: list[list[str]], kernel: str, update: bool,
           outcome: Outcome) -> None:
    outcome.steps += len(block.commands)
    if update and block.source == kernel:
        body: list[str] = []
        for command, actual in zip(block.commands, outs):
            body.append(PROMPTS[block.where] + command.text)
            body += [for_readers(line) for line in updated(command.expected, actual)]
        outcome.updates[block.first] = body
        return
    for command, actual in zip(block.commands, outs):
        problem = compare(command.expected, actual, "unordered" in block.attrs)
        if problem:
            shown = "\n".join("    | " + line for line in actual[:60])
            outcome.failures.append(
                f"{block.label()} on {kernel}: {PROMPTS[block.where]}{command.text}\n"
                f"  {problem}\n  actual output:\n{shown}")


def write_updates(updates: dict[int, list[str]], doc: pathlib.Path = DOC) -> None:
    """Replace the bodies of the given blocks (keyed by their first line) in the document."""
    lines = doc.read_text().split("\n")
    blocks = {b.first: b for b in parse("\n".join(lines))}
    for first in sorted(updates, reverse=True):
        block = blocks[first]
        lines[block.first:block.last] = updates[first]
    doc.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make tutorial-check", description=(
        "Replay docs/tutorial.md in the lab and compare each step's output shape."))
    parser.add_argument("--kernels", default=",".join(kernels.names()),
                        help="comma-separated lab kernels (default: all)")
    parser.add_argument("--gdb", default="gdb", help="gdb binary")
    parser.add_argument("--update", action="store_true",
                        help="rewrite the outputs of the steps that come from these kernels")
    parser.add_argument("--doc", type=pathlib.Path, default=DOC)
    parser.add_argument("--log", action="store_true", help="echo the gdb session to stderr")
    options = parser.parse_args(argv)
    failed = False
    for kernel in [k for k in options.kernels.split(",") if k]:
        print(f"tutorial: {kernel}: booting and replaying {options.doc.name} ...", flush=True)
        outcome = replay(kernel, options.gdb, options.update, options.doc,
                         log=sys.stderr if options.log else None)
        for failure in outcome.failures:
            print(f"FAIL {failure}\n")
        if options.update and outcome.updates:
            write_updates(outcome.updates, options.doc)
        status = "FAILED" if outcome.failures else "ok"
        print(f"tutorial: {kernel}: {outcome.steps} steps, {len(outcome.failures)} failed, "
              f"{len(outcome.updates)} blocks rewritten, {outcome.seconds:.0f} s: {status}",
              flush=True)
        failed |= bool(outcome.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
