"""gdb-kprobe: Linux kprobes made visible from gdb attached to a kernel.

Importing the package (or any module of it) registers nothing and touches no target:
`gdb_kprobe.plugin.load()` registers the kp-* commands, the gdb parameters, the unwinder,
the frame filter and the event hooks (gdbinit.py calls it).

Layers, each importing only those below it (tests/unit/test_layers.py checks):

    plugin        load(): the one place that registers anything with gdb
    integration/  gdb parameters (`set kp-…`), pwndbg
    commands/     kp-*: parse → one model call → render
    ui/           text, JSON, colour (no gdb calls)
    engine/       what drives or hooks gdb: breakpoints, kp-sim, unwinders, frame filter,
                  finish, symbol files
    analysis/     per-PC reports: prologue, scope, locals, where
    kernel/       the kernel's objects, a pure model (no printing)
    target/       memory and its one cache registry, layouts from DWARF, ELF symbols,
                  disassembly, dumps, small gdb context helpers
    arch/         one module per architecture: registers, masks, instruction bytes
    errors, options
"""
