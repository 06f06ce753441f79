"""The architecture seam: everything that differs per CPU architecture lives in one module
here (registers, address masks, instruction bytes). Callers write `arch.PT_REGS`, never
an architecture's module name, so a second architecture is one more module plus its
decoders, chosen here.

The seam the commands use is x86_64's (its names are this package's). arm64.py is started
but not complete: `unwritten()` names what a command on another architecture must refuse,
so that it says so in one line instead of giving an x86 answer (commands/base.py asks it).
"""
from gdb_kprobe.arch import arm64, x86_64
from gdb_kprobe.arch.x86_64 import *          # noqa: F401,F403  (the seam in use)

__all__ = [*x86_64.__all__, "unwritten", "STARTED", "of_architecture"]

# architectures with a seam module begun, by gdb's name (arm64: kp-list works, the
# decoders, the memory map and the unwinder rules are still x86's)
STARTED = {arm64.NAME: arm64}


def of_architecture(gdb_architecture: str):
    """The seam module of gdb's architecture name (for the few pieces arm64.py already has,
    such as hides_kernel()), or None."""
    return {x86_64.NAME: x86_64, **STARTED}.get(gdb_architecture)


def unwritten(gdb_architecture: str) -> str | None:
    """None when the seam in use is the target's architecture; else what is missing."""
    if gdb_architecture == NAME:                                   # noqa: F405
        return None
    if gdb_architecture in STARTED:
        return (f"the {gdb_architecture} part of gdb_kprobe/arch/ is only started "
                f"({STARTED[gdb_architecture].__name__.rpartition('.')[2]}.py): no instruction "
                "decoders, memory map or unwinder yet")
    return f"gdb_kprobe/arch/ has nothing for {gdb_architecture}"
