"""gdb-kprobe: `source gdbinit.py` inside gdb (plain gdb 13+, or after pwndbg's gdbinit).

Only puts the package on sys.path and loads it: gdb_kprobe.plugin.load() registers the
kp-* commands (importing the package itself registers nothing).
"""
import os
import sys

_root = os.path.dirname(os.path.abspath(os.path.expanduser(__file__)))
if _root not in sys.path:
    sys.path.insert(0, _root)

import gdb_kprobe.plugin  # noqa: E402

gdb_kprobe.plugin.load()
