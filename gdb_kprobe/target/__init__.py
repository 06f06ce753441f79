"""Target access: memory (with the one cache registry), layouts from DWARF, ELF symbols,
disassembly, dumps, and small gdb context helpers. Nothing here knows about kprobes."""
