"""load(): the one place where gdb-kprobe registers anything with gdb.

gdbinit.py calls it. Loading twice is harmless (the second call does nothing), so
`source gdbinit.py` may be repeated.
"""
from __future__ import annotations

from gdb_kprobe.commands.kp_blacklist import KpBlacklist
from gdb_kprobe.commands.kp_check import KpCheck
from gdb_kprobe.commands.kp_hooks import KpHooks
from gdb_kprobe.commands.kp_kaslr import KpKaslr
from gdb_kprobe.commands.kp_list import KpList
from gdb_kprobe.commands.kp_locals import KpLocals
from gdb_kprobe.commands.kp_modules import KpModules
from gdb_kprobe.commands.kp_prefix import KpPrefix, KpSubcommand
from gdb_kprobe.commands.kp_show import KpShow
from gdb_kprobe.commands.kp_sim import KpSim
from gdb_kprobe.commands.kp_where import KpWhere
from gdb_kprobe.engine import finish, framefilter, unwind
from gdb_kprobe.integration import parameters, pwndbg
from gdb_kprobe.target import cache

__all__ = ["COMMANDS", "load", "loaded_commands"]

# in the order `help kp` and pwndbg's list show them
COMMANDS = (KpList, KpShow, KpHooks, KpModules, KpSim, KpCheck, KpBlacklist, KpKaslr, KpLocals, KpWhere)
_commands: list = []


def load() -> None:
    """Register the kp-* commands, the `set kp-…` parameters, the unwinder and frame
    filter, `finish` that follows the task, the cache-clearing events and pwndbg's hooks."""
    if _commands:
        return
    cache.install()
    parameters.register()
    KpPrefix()
    _commands.extend(command() for command in COMMANDS)
    for command in _commands:          # `kp list` = `kp-list`
        KpSubcommand(command)
    unwind.register()
    framefilter.register()
    finish.register()
    pwndbg.register(_commands)    # only acts when pwndbg is (or gets) loaded


def loaded_commands() -> list:
    """The registered kp-* command objects (empty before load())."""
    return list(_commands)
