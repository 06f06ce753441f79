"""Stand-in pwndbg.commands: the command list gdb-kprobe adds its entries to."""
import enum


class CommandCategory(str, enum.Enum):
    KERNEL = "Kernel"


commands: list = []
command_names: set = set()
