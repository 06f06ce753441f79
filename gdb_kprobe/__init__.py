"""gdb-kprobe: Linux kprobes made visible from gdb attached to a kernel.

Importing the package registers the kp-* commands; nothing touches the target
or the symbol file until a command runs.
"""
from gdb_kprobe import finish, framefilter, pwndbg_compat, settings, unwind
from gdb_kprobe.commands import register_all

settings.register()
register_all()
unwind.register()
framefilter.register()
finish.register()
pwndbg_compat.register()     # only when pwndbg is (or gets) loaded; see pwndbg_compat
