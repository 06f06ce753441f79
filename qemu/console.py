"""`make shell`: the guest's root shell, on the serial console of the lab `make lab` booted.

Run it in a second terminal while `make lab` has gdb in the first. The guest only runs (and
answers) while gdb lets it (`continue`). Ctrl-] leaves; the lab keeps running.
"""
from __future__ import annotations

import os
import select
import socket
import sys
import termios
import tty

from qemu.lab import CONSOLE_POINTER

QUIT = b"\x1d"          # Ctrl-], as in telnet


def connect() -> socket.socket:
    if not CONSOLE_POINTER.exists():
        raise SystemExit("make shell: no lab is running (start one with `make lab`)")
    path = CONSOLE_POINTER.read_text().strip()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as exc:
        raise SystemExit(f"make shell: the lab's console {path} does not answer ({exc.strerror}); "
                         "is `make lab` still running?") from None
    return conn


def bridge(conn: socket.socket) -> None:
    """Copy bytes both ways until Ctrl-] or the lab goes away."""
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved:
        tty.setraw(stdin)
    try:
        conn.sendall(b"\n")                      # a fresh prompt
        while True:
            ready, _, _ = select.select([stdin, conn], [], [])
            if conn in ready:
                data = conn.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in ready:
                data = os.read(stdin, 1024)
                if not data or QUIT in data:
                    break
                conn.sendall(data.replace(b"\n", b"\r") if saved is None else data)
    finally:
        if saved:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        conn.close()


def main() -> int:
    conn = connect()
    print("make shell: the guest's console (it answers while gdb lets the guest run; "
          "Ctrl-] leaves)", file=sys.stderr)
    bridge(conn)
    print("\nmake shell: left the guest's console", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
