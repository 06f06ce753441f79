"""How the plugin fits into gdb and pwndbg: the `set kp-...` parameters, pwndbg's command list
and theme."""
