"""The architecture seam: everything that differs per CPU architecture lives in one module
here (registers, address masks, instruction bytes). Callers write `arch.PT_REGS`, never
an architecture's module name, so a second architecture is one more module plus its
decoders, chosen here.

The seam in use is chosen at run time: `select(gdb_architecture)`, called where a command
or the unwinder learns the target (target/guards.py), puts that architecture's names in
this module's namespace, so `arch.X` stays a plain attribute read (the unwinder asks per
frame). x86_64's names are the default until then. A name the selected module does not
have (arm64.py is not complete) raises `Unwritten`, a KpError saying what is missing, from
the module `__getattr__` (PEP 562), instead of an x86 answer about another architecture.
"""
from __future__ import annotations

from types import ModuleType

from gdb_kprobe.arch import arm64, x86_64
from gdb_kprobe.errors import KpError

SEAMS: dict[str, ModuleType] = {x86_64.NAME: x86_64, arm64.NAME: arm64}
# every name some seam module exports: one of them missing from the selected module is
# "unwritten" there, any other name is an ordinary AttributeError
_SEAM_NAMES = frozenset(name for seam in SEAMS.values() for name in seam.__all__)

__all__ = ["select", "selected", "select_covering", "unwritten", "covers", "Unwritten", "SEAMS", "of_architecture"]


class Unwritten(KpError, AttributeError):
    """A name of the seam the selected architecture's module does not have yet. An
    AttributeError too, so hasattr(arch, name) says False rather than raising."""


# the selected module and gdb's name of the architecture asked for (None: not known, the
# seam is then x86_64's; an architecture without a module: nothing selected)
_state: dict[str, object] = {"seam": None, "architecture": None}


def select(gdb_architecture: str) -> ModuleType | None:
    """Make `gdb_architecture`'s module (gdb's name: i386:x86-64, aarch64) the seam in use
    and return it; None when no module is written for it (every seam name then raises
    Unwritten). Costs one comparison when it is already selected."""
    if gdb_architecture == _state["architecture"]:
        return _state["seam"]                                  # type: ignore[return-value]
    seam = SEAMS.get(gdb_architecture)
    namespace = globals()
    for name in _SEAM_NAMES:
        namespace.pop(name, None)
    if seam is not None:
        namespace.update({name: getattr(seam, name) for name in seam.__all__})
    _state["seam"], _state["architecture"] = seam, gdb_architecture
    return seam


def selected() -> ModuleType | None:
    """The seam module in use (x86_64 until select() is called)."""
    return _state["seam"]                                      # type: ignore[return-value]


def of_architecture(gdb_architecture: str) -> ModuleType | None:
    """The seam module of gdb's architecture name, or None (selects nothing)."""
    return SEAMS.get(gdb_architecture)


def unwritten(gdb_architecture: str, name: str | None = None) -> str | None:
    """None when the architecture's module is complete (or has `name`); else what is
    missing there, in words for a one-line refusal."""
    seam = SEAMS.get(gdb_architecture)
    if seam is None:
        return f"gdb_kprobe/arch/ has nothing for {gdb_architecture}"
    if name is None and seam.COMPLETE or name in seam.__all__:
        return None
    missing = f" (no {name})" if name else ""
    return (f"the {gdb_architecture} part of gdb_kprobe/arch/ is only started "
            f"({seam.__name__.rpartition('.')[2]}.py{missing}): no instruction "
            "decoders, memory map or unwinder yet")


def covers(gdb_architecture: str, command: str) -> bool:
    """Does the architecture's module meet everything `command` needs of the seam? Its
    COMMANDS says which it has been checked for; a complete module covers every command."""
    seam = SEAMS.get(gdb_architecture)
    return seam is not None and (seam.COMPLETE or command in seam.COMMANDS)


def select_covering(gdb_architecture: str, command: str) -> bool:
    """select(gdb_architecture), then covers(gdb_architecture, command), in one call: the
    unwinder asks per frame, so an unchanged architecture costs a comparison and a flag."""
    if gdb_architecture != _state["architecture"]:
        select(gdb_architecture)
    seam = _state["seam"]
    return seam is not None and (seam.COMPLETE or command in seam.COMMANDS)   # type: ignore


def __getattr__(name: str):
    """Called only for names not in the namespace: a seam name the selected module lacks."""
    if name in _SEAM_NAMES:
        architecture = _state["architecture"] or "?"
        raise Unwritten(f"not available on {architecture} yet: "
                        f"{unwritten(str(architecture), name)}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


select(x86_64.NAME)
_state["architecture"] = None        # the default, not a target's answer: select() again
