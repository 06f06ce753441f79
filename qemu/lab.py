"""The lab: boot a Debian debug kernel in QEMU with a scenario of kprobes, and drive it.

    with Lab("6.1") as lab:
        print(lab.guest.run("cat /sys/kernel/debug/kprobes/list"))
        gdb = lab.gdb()               # gdb attached through QEMU's gdbstub, plugin loaded
        print(gdb.execute("kp-list"))

`python3 -m qemu.lab` (what `make lab` runs) boots a kernel and leaves you at a gdb prompt.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pexpect
import pexpect.fdpexpect

from qemu import build, kernels

REPO = pathlib.Path(__file__).resolve().parent.parent
GDBINIT = REPO / "gdbinit.py"
BOOT_TIMEOUT = 90           # a TCG boot takes ~3 s; allow for a loaded 2-core machine
BOOT_TRIES = 2              # a rare early-boot hang under TCG must not fail a whole run
QEMU = "qemu-system-x86_64"


@dataclasses.dataclass(frozen=True)
class Machine:
    """How QEMU boots a kernel of one architecture, and which gdb reads it."""

    qemu: str
    machine: tuple[str, ...]          # -M ... (x86 takes QEMU's default pc)
    tcg_cpu: str
    console: str                      # the serial console's name in the guest
    append: tuple[str, ...]           # arch-specific kernel command line
    gdb: str                          # the Debian gdb that knows the architecture


MACHINES = {
    "amd64": Machine(QEMU, (), "max", "ttyS0", ("tsc=reliable",), "gdb"),
    # -cpu max,pauth-impdef=on: every ARMv8 feature TCG has, pointer authentication included
    # (the Debian kernel signs return addresses: CONFIG_ARM64_PTR_AUTH_KERNEL), with QEMU's
    # cheap "implementation defined" PAC instead of the architected QARMA5 that plain `max`
    # computes in software on every paciasp/autiasp (boot to shell measured in the README).
    # Debian's `gdb` knows x86 only; gdb-multiarch (and the gdb 18.1 venv) read aarch64.
    "arm64": Machine("qemu-system-aarch64", ("-M", "virt"), "max,pauth-impdef=on", "ttyAMA0",
                     (), "gdb-multiarch"),
}


def gdb_for(arch: str, gdb_binary: str) -> str:
    """The gdb to run for a kernel: Debian's plain `gdb` (the default) means that
    architecture's Debian gdb; any other binary is taken as given."""
    return MACHINES[arch].gdb if gdb_binary == "gdb" else gdb_binary


# Guest shell line that makes the kernel accept one TCP connection (inet_accept →
# inet_csk_accept, where the lab's probes are). The listener runs in a subshell so that its
# input is /dev/null, not the console (a background job of an interactive shell keeps it).
ACCEPT_TRAFFIC = ("(nc -l -p 5555 > /dev/null &) ; sleep 0.5; echo hi | nc 127.0.0.1 5555; "
                  "sleep 0.3")
# where `make lab` records its guest console for `make shell` (the newest lab wins)
CONSOLE_POINTER = kernels.cache_dir() / "lab-console"


class LabError(RuntimeError):
    pass


class BootPanic(LabError):
    """The guest kernel panicked before its shell came up."""


def free_tcp_port() -> int:
    """A loopback port nobody listens on now (QEMU binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Guest:
    """The guest's serial console: a root shell driven with pexpect."""

    def __init__(self, conn: socket.socket, logfile) -> None:
        self._sock = conn
        self.console = pexpect.fdpexpect.fdspawn(conn.fileno(), encoding="utf-8",
                                                 codec_errors="replace", timeout=30)
        self.console.logfile_read = logfile
        self._seq = 0

    def wait_ready(self, timeout: float) -> None:
        index = self.console.expect(["KP-LAB-SCENARIO-OK", "KP-LAB-SCENARIO-FAILED",
                                     "Kernel panic"], timeout=timeout)
        if index != 0:
            self.console.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=2)
            error = BootPanic if index == 2 else LabError
            raise error(f"guest boot failed: {self.console.before[-2000:]}")
        self.console.expect("KP-LAB-READY", timeout=timeout)
        # No echo, no prompt noise: output between our markers is the command's alone.
        self.run("stty -echo; PS1=''; PS2=''", timeout=timeout)

    def run(self, command: str, timeout: float = 60, check: bool = True) -> str:
        """Run a shell command in the guest; return its output (stdout+stderr, \\n ends)."""
        return self.wait(self.send(command), timeout, check, command)

    def send(self, command: str) -> int:
        """Start a command without waiting (for commands that will hit a breakpoint)."""
        self._seq += 1
        # The markers are split with "" so the echoed command line never matches them.
        # { } so a redirection inside the command does not swallow its stderr
        self.console.sendline(f'echo KP-B""EGIN-{self._seq}; {{ {command}\n}} 2>&1; '
                              f'echo KP-E""ND-{self._seq}-$?')
        return self._seq

    def wait(self, token: int, timeout: float = 60, check: bool = True,
             command: str = "") -> str:
        """The output of a command started with send()."""
        exited = r"KP-LAB-SHELL-EXITED \d+"        # qemu/guest/init started a new shell
        if self.console.expect([f"KP-BEGIN-{token}\r?\n", exited], timeout=timeout) == 1 or \
                self.console.expect([rf"KP-END-{token}-(\d+)", exited], timeout=timeout) == 1:
            raise LabError(f"the guest's console shell exited while running: {command}")
        output = self.console.before.replace("\r\n", "\n").replace("\r", "")
        rc = int(self.console.match.group(1))
        if check and rc != 0:
            raise LabError(f"guest command failed (exit {rc}): {command}\n{output}")
        return output

    def settled(self, command: str, attempts: int = 20) -> str:
        """The output of `command` once two runs 0.3 s apart agree (the kprobe optimizer
        rewrites probes asynchronously, so /sys/kernel/debug/kprobes/list settles late)."""
        previous = self.run(command)
        for _ in range(attempts):
            time.sleep(0.3)
            current = self.run(command)
            if current == previous:
                return current
            previous = current
        raise LabError(f"`{command}` kept changing")

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class Gdb:
    """gdb attached to the lab through QEMU's gdbstub, driven with pexpect."""

    PROMPT = "<kp-gdb> "

    def __init__(self, args: list[str], gdb_binary: str = "gdb", timeout: float = 120,
                 logfile=None) -> None:
        env = dict(os.environ, TERM="dumb")
        env.pop("PYTHONPATH", None)   # gdb embeds the system Python: keep the venv out
        index = kernels.cache_dir() / "gdb-index"
        index.mkdir(parents=True, exist_ok=True)
        self.child = pexpect.spawn(gdb_binary, ["-q", "-nx", "-iex", f"set prompt {self.PROMPT}",
                                                "-iex", "set editing off",
                                                "-iex", "set pagination off", "-iex", "set height 0",
                                                # gdb 18 would ask about debuginfod
                                                "-iex", "set debuginfod enabled off",
                                                "-iex", f"set index-cache directory {index}",
                                                "-iex", "set index-cache enabled on", *args],
                                   encoding="utf-8", codec_errors="replace", timeout=timeout,
                                   env=env, dimensions=(100, 1000))
        self.child.logfile_read = logfile
        self.child.expect_exact(self.PROMPT)
        self.startup_output = self.child.before

    def execute(self, command: str, timeout: float = 120) -> str:
        """Run one gdb command and return what it printed (errors included)."""
        self.child.sendline(command)
        self.child.expect_exact(self.PROMPT, timeout=timeout)
        output = self.child.before.replace("\r\n", "\n").replace("\r", "")
        first, _, rest = output.partition("\n")
        if first.strip() == command.strip():
            output = rest
        return output

    def resume(self) -> None:
        """Let the guest run (gdb waits in the foreground until interrupt())."""
        self.child.sendline("continue")
        self.child.expect_exact("Continuing.")

    def wait_prompt(self, timeout: float = 60) -> str:
        """After resume(): wait until the target stops by itself (a breakpoint) and gdb
        is back at its prompt; return what gdb printed."""
        self.child.expect_exact(self.PROMPT, timeout=timeout)
        return self.child.before.replace("\r\n", "\n").replace("\r", "")

    def wait_for_stop(self, timeout: float = 30) -> str:
        """After `interrupt` of a `continue &`: wait for the asynchronous stop report."""
        self.child.expect(r"received signal|[Ss]topped", timeout=timeout)
        return self.execute("echo")

    def interrupt(self, timeout: float = 30) -> str:
        self.child.sendintr()
        self.child.expect_exact(self.PROMPT, timeout=timeout)
        return self.child.before

    def close(self) -> None:
        if self.child.isalive():
            try:
                # A gdb in a foreground `continue` reads no commands: interrupt it first
                # (at a prompt ^C only prints a new one). Without this each lab left
                # running waited out the EOF timeout below: most of `make test`'s time.
                self.child.sendintr()
                self.child.expect_exact(self.PROMPT, timeout=10)
            except (pexpect.ExceptionPexpect, OSError):
                pass
            try:
                self.child.sendline("detach")
                self.child.sendline("quit")
                self.child.expect(pexpect.EOF, timeout=30)
            except (pexpect.ExceptionPexpect, OSError):
                pass
        try:
            self.child.close(force=True)
        except pexpect.ExceptionPexpect:
            # SIGKILL sent, but a loaded host had not reaped gdb within pexpect's short
            # wait (it may be writing its index cache): wait for it rather than fail
            try:
                self.child.ptyproc.wait()
            except Exception:        # ptyprocess: already reaped
                pass


class Lab:
    """One booted guest: a kernel, a scenario, QEMU with a gdbstub and a serial shell."""

    def __init__(self, kernel: str = kernels.DEFAULT_KERNEL, scenario: str = "default",
                 kvm: bool = False, memory_mb: int = 512, cpus: int = 2,
                 append: str = "", kaslr: bool = False, vmlinux: str | None = None,
                 headers: str | None = None) -> None:
        """`kernel`: a lab kernel name (6.1, 6.12, 6.1-fp, SERIES/FLAVOUR), or the path of a
        kernel image of your own, with `vmlinux` (its DWARF) and optionally `headers`."""
        self.kernel_name = kernel
        self.own_vmlinux = vmlinux
        self.own_headers = headers
        self.scenario_name = scenario
        self.kvm = kvm
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.append = append
        self.kaslr = kaslr
        self.files: kernels.KernelFiles | None = None
        self.modules_dir: pathlib.Path | None = None
        self.workdir: pathlib.Path | None = None
        self.gdb_port: int | None = None
        self.qemu: subprocess.Popen | None = None
        self.guest: Guest | None = None
        self._gdbs: list[Gdb] = []
        self._log = None

    # -- life cycle -------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything before boot: kernel files, modules, initramfs (all cached)."""
        if self.own_vmlinux:
            self.files = kernels.own_kernel(self.kernel_name, self.own_vmlinux, self.own_headers)
        else:
            self.files = kernels.fetch(self.kernel_name)
        self.modules_dir = build.build_modules(self.files)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="kp-lab-"))
        scenario = build.scenario_path(self.scenario_name, self.kernel_name)
        build.build_initramfs(self.workdir / "initramfs.gz", self.modules_dir, scenario,
                              # kp_hookload is built for the host: x86-64 guests only so far
                              build.build_guest_programs() if self.files.arch == "amd64" else [],
                              self.files.arch)

    def qemu_command(self) -> list[str]:
        assert self.files and self.workdir and self.gdb_port
        machine = MACHINES[self.files.arch]
        append = [f"console={machine.console}", "quiet", "panic=-1", "oops=panic",
                  *machine.append]
        append.append("kaslr" if self.kaslr else "nokaslr")
        if self.append:
            append.append(self.append)
        command = [
            machine.qemu, *machine.machine, "-nodefaults", "-nographic", "-no-reboot",
            "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-kernel", str(self.files.vmlinuz), "-initrd", str(self.workdir / "initramfs.gz"),
            "-append", " ".join(append),
            "-chardev", f"socket,id=console,path={self.workdir / 'console.sock'},server=on,wait=on",
            "-serial", "chardev:console",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            "-gdb", f"tcp:127.0.0.1:{self.gdb_port}",
        ]
        if self.kvm:
            command += ["-enable-kvm", "-cpu", "host"]
        else:
            # KP_LAB_CPU overrides the model (to compare, e.g. plain `max` on arm64)
            command += ["-accel", "tcg,thread=multi", "-cpu", os.environ.get("KP_LAB_CPU") or
                        machine.tcg_cpu]
        return command

    def start(self) -> "Lab":
        """Boot; on any failure nothing is left running (QEMU, sockets, temp files).
        A boot that times out is tried once more (and says so on stderr)."""
        for attempt in range(1, BOOT_TRIES + 1):
            try:
                return self._start()
            except (pexpect.TIMEOUT, BootPanic) as exc:
                # a rare early-boot hang or panic of the guest under TCG (seen ~1 in 100
                # boots on a loaded machine) is the emulator's, not the lab's: try once more
                log = self.console_log_tail()
                self.stop()
                if attempt == BOOT_TRIES:
                    raise LabError(f"the guest did not boot ({BOOT_TRIES} tries): "
                                   f"{type(exc).__name__}; console:\n{log}") from None
                print(f"lab: boot failed ({type(exc).__name__}), trying again; console:\n{log}",
                      file=sys.stderr)
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def console_log_tail(self, size: int = 2000) -> str:
        if self.workdir is None or not (self.workdir / "console.log").exists():
            return ""
        if self._log:
            self._log.flush()
        return (self.workdir / "console.log").read_text(errors="replace")[-size:]

    def _start(self) -> "Lab":
        if self.workdir is None:
            self.prepare()
        assert self.workdir
        self._log = open(self.workdir / "console.log", "w", encoding="utf-8")
        for attempt in range(5):
            self.gdb_port = free_tcp_port()
            # its own session: Ctrl-C at `make lab`'s gdb prompt must not reach QEMU
            self.qemu = subprocess.Popen(self.qemu_command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            conn = self._connect_console()
            if conn is not None:
                break
            output = self.qemu.stdout.read().decode(errors="replace") if self.qemu.stdout else ""
            if "Address already in use" not in output:
                raise LabError(f"QEMU did not start: {output.strip()[-2000:]}")
        else:
            raise LabError("QEMU could not bind a gdbstub port after 5 tries")
        self.guest = Guest(conn, self._log)
        self.guest.wait_ready(BOOT_TIMEOUT)
        return self

    def _connect_console(self) -> socket.socket | None:
        sock_path = self.workdir / "console.sock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.qemu.poll() is not None:
                return None
            if sock_path.exists():
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    conn.connect(str(sock_path))
                    return conn
                except OSError:
                    conn.close()
            time.sleep(0.05)
        raise LabError("QEMU did not open its console socket within 30 s")

    def stop(self) -> None:
        """Close gdb and the console, then end QEMU whatever closing them raised: a guest
        left running (its console peer gone) spins a host core for the rest of a test run."""
        try:
            for gdb in self._gdbs:
                gdb.close()
            if self.guest:
                self.guest.close()
        finally:
            self._gdbs.clear()
            self.guest = None
            self._end_qemu()

    def _end_qemu(self) -> None:
        if self.qemu and self.qemu.poll() is None:
            self.qemu.terminate()
            try:
                self.qemu.wait(10)
            except subprocess.TimeoutExpired:
                self.qemu.kill()
                self.qemu.wait()
        if self._log:
            self._log.close()
            self._log = None
        if self.workdir and not os.environ.get("KP_LAB_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- a shell for people ---------------------------------------------------------------
    def hand_over_console(self) -> pathlib.Path:
        """Give the guest's serial console to people: echo and a `$ ` prompt back, our
        connection closed (QEMU then accepts the next one), and the socket's path recorded
        where `python3 -m qemu.console` (`make shell`) finds it."""
        assert self.guest and self.workdir
        self.guest.run("stty echo; PS1='$ '")
        self.guest.close()
        self.guest = None
        CONSOLE_POINTER.parent.mkdir(parents=True, exist_ok=True)
        CONSOLE_POINTER.write_text(str(self.workdir / "console.sock") + "\n")
        return self.workdir / "console.sock"

    # -- QMP ----------------------------------------------------------------------------
    def qmp(self, command: str, arguments: dict | None = None, timeout: float = 300) -> dict:
        """One QMP command on the monitor socket (a new session each time)."""
        assert self.workdir
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.workdir / "qmp.sock"))
            stream = sock.makefile("rw")
            json.loads(stream.readline())                       # greeting
            for request in ({"execute": "qmp_capabilities"},
                            {"execute": command, "arguments": arguments or {}}):
                stream.write(json.dumps(request) + "\n")
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "event" not in reply:
                        break
                if "error" in reply:
                    raise LabError(f"QMP {command}: {reply['error'].get('desc')}")
            return reply.get("return", {})

    def dump(self, path: pathlib.Path, paging: bool = True) -> pathlib.Path:
        """An ELF dump of guest memory (gdb opens it as a core): with virtual addresses
        (`dump-guest-memory -p`), or with `paging=False` physical addresses only, QEMU's
        default and what `virsh dump --memory-only` makes."""
        self.qmp("dump-guest-memory", {"paging": paging, "protocol": f"file:{path}"})
        return path

    # -- gdb ----------------------------------------------------------------------------
    def gdb_args(self, attach: bool = True, plugin: bool = True) -> list[str]:
        """gdb arguments: index cache, the DWARF vmlinux, the plugin, the gdbstub."""
        assert self.files
        index = kernels.cache_dir() / "gdb-index"
        index.mkdir(parents=True, exist_ok=True)
        args = ["-iex", f"set index-cache directory {index}", "-iex", "set index-cache enabled on",
                "-ex", "set pagination off", "-ex", "set confirm off",
                "-ex", f"file {self.files.vmlinux}"]
        if plugin:
            args += ["-ex", f"source {GDBINIT}"]
        if attach:
            args += ["-ex", f"target remote 127.0.0.1:{self.gdb_port}"]
            if plugin and self.modules_dir:
                # the lab knows where it built the modules: give gdb their symbols
                args += ["-ex", f"kp-modules --load {self.modules_dir}"]
        return args

    def gdb(self, gdb_binary: str = "gdb", attach: bool = True, plugin: bool = True,
            logfile=None) -> Gdb:
        assert self.files
        session = Gdb(["-ex", "set style enabled off", *self.gdb_args(attach, plugin)],
                      gdb_binary=gdb_for(self.files.arch, gdb_binary), logfile=logfile)
        self._gdbs.append(session)
        return session



class Attached:
    """A booted lab and one gdb attached to it, as a reader with two terminals uses them:
    a gdb command stops the guest first (Ctrl-C), a guest command lets it run first."""

    def __init__(self, lab: Lab, gdb: Gdb) -> None:
        self.lab = lab
        self.gdb = gdb
        self.running = False              # gdb has the guest stopped after attaching

    def resume(self) -> None:
        if not self.running:
            self.gdb.resume()
            self.running = True

    def stop(self) -> None:
        if self.running:
            self.gdb.interrupt()
            self.running = False

    def gdb_cmd(self, command: str, timeout: float = 120) -> str:
        self.stop()
        return self.gdb.execute(command, timeout=timeout)

    def guest(self, command: str, **kwargs) -> str:
        """Run a guest shell command (Guest.run's keyword arguments)."""
        self.resume()
        return self.lab.guest.run(command, **kwargs)

def _build_id(elf: pathlib.Path) -> str | None:
    """The GNU build-id of an ELF file (the name of gdb's index-cache entry for it), from
    its PT_NOTE segments (the plugin's own ELF note parser: it imports without gdb)."""
    import struct
    from gdb_kprobe.target.elfcore import parse_notes
    with open(elf, "rb") as f:
        header = f.read(64)
        if header[:5] != b"\x7fELF\x02":
            return None
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if p_type != 4:                        # PT_NOTE
                continue
            f.seek(p_offset)
            for note in parse_notes(f.read(min(p_filesz, 1 << 16))):
                if note.type == 3 and note.name == b"GNU":     # NT_GNU_BUILD_ID
                    return note.desc.hex()
    return None


def first_dwarf_load(vmlinux: pathlib.Path) -> bool:
    """True when gdb has no index of this vmlinux yet: its first load takes ~15 s."""
    build_id = _build_id(vmlinux)
    return build_id is not None and not (
        kernels.cache_dir() / "gdb-index" / f"{build_id}.gdb-index").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lab", description=(
        "Boot a lab kernel in QEMU with a scenario of kprobes and attach gdb with gdb-kprobe."))
    parser.add_argument("--kernel", default=os.environ.get("KERNEL") or kernels.DEFAULT_KERNEL,
                        help=f"a lab kernel ({', '.join(kernels.names())}), a Debian "
                             "SERIES/FLAVOUR (6.1/rt-amd64), or the path of your own bzImage "
                             "(with --vmlinux)")
    parser.add_argument("--vmlinux", default=os.environ.get("VMLINUX") or None,
                        help="the DWARF vmlinux of the kernel image given by path")
    parser.add_argument("--headers", default=os.environ.get("HEADERS") or None,
                        help="its kbuild tree, to build the lab modules (else they are skipped)")
    parser.add_argument("--scenario", default=os.environ.get("SCENARIO") or "default")
    parser.add_argument("--kvm", action="store_true",
                        help="use KVM (dies on the first int3 on hypervisors that don't pass it through)")
    parser.add_argument("--batch", action="append", default=[], metavar="COMMANDS",
                        help="run these gdb commands (separated by ';') after kp-list and exit")
    parser.add_argument("--gdb", default=os.environ.get("GDB") or "gdb", help="gdb binary")
    options = parser.parse_args(argv)
    if pathlib.Path(options.kernel).is_file() and not options.vmlinux:
        parser.error(f"{options.kernel} is a file: give its DWARF vmlinux too "
                     "(make lab KERNEL=<bzImage> VMLINUX=<vmlinux>)")

    lab = Lab(options.kernel, options.scenario, kvm=options.kvm, vmlinux=options.vmlinux,
              headers=options.headers)
    print(f"lab: preparing kernel {options.kernel} ...", file=sys.stderr)
    try:
        lab.prepare()
    except (kernels.debarchive.ResolveError, kernels.fpkernel.BuildError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    scenario = build.scenario_path(options.scenario, lab.kernel_name)
    print(f"lab: booting {lab.files.release} ({lab.files.description}) with scenario "
          f"{scenario.name!r}{'' if lab.modules_dir else ', no lab modules (no kbuild tree)'} ...",
          file=sys.stderr)
    started = time.monotonic()
    try:
        lab.start()
        print(f"lab: guest ready in {time.monotonic() - started:.1f} s; gdbstub on "
              f"127.0.0.1:{lab.gdb_port}; console log {lab.workdir / 'console.log'}",
              file=sys.stderr)
        if first_dwarf_load(lab.files.vmlinux):
            print(f"lab: gdb reads the DWARF of {lab.files.vmlinux} for the first time: about "
                  "15 s (its index is cached: later starts take under a second)", file=sys.stderr)
        command = [gdb_for(lab.files.arch, options.gdb), "-q", "-nx", *lab.gdb_args(),
                   "-ex", "kp-list"]
        if options.batch:
            command.insert(1, "-batch")
            for extra in options.batch:
                command += [arg for c in extra.split(";") if c.strip() for arg in ("-ex", c.strip())]
        else:
            lab.hand_over_console()
            print("lab: at the gdb prompt: `continue` lets the guest run, Ctrl-C stops it, "
                  "`help kp` lists the commands; `make shell` in another terminal is the "
                  "guest's shell", file=sys.stderr)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        # Ctrl-C at the gdb prompt goes to the whole foreground group: it is gdb's (stop the
        # guest), not ours (that would kill gdb and the lab); gdb sets its own handler
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return subprocess.call(command, env=env)
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        lab.stop()


if __name__ == "__main__":
    sys.exit(main())
