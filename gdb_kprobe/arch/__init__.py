"""The architecture seam: everything that differs per CPU architecture lives in one module
here (registers, address masks, instruction bytes). Callers write `arch.PT_REGS`, never
an architecture's module name, so a second architecture is one more module plus its
decoders, chosen here."""
from gdb_kprobe.arch.x86_64 import *          # noqa: F401,F403  (the only one so far)
from gdb_kprobe.arch.x86_64 import __all__    # noqa: F401
