"""Stand-in pwndbg root (see ../README.md)."""
