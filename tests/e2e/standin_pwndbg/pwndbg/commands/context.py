"""Stand-in pwndbg.commands.context: the backtrace section as pwndbg builds it, from the
selected frame, `backtrace_lines` frames each way, one `info symbol` per frame."""
import gdb

backtrace_lines = 8


def _symbol(address: int):
    try:
        text = gdb.execute(f"info symbol {address:#x}", to_string=True, from_tty=False)
    except gdb.error:
        return None
    if text.startswith("No symbol"):
        return None
    return text.split("\n")[0].split(" in section ")[0].replace(" + ", "+")


def context_backtrace(with_banner=True, target=None, width=None):
    result = ["─── backtrace ───"] if with_banner else []
    this_frame = gdb.selected_frame()
    newest = oldest = this_frame
    for _ in range(backtrace_lines - 1):
        try:
            candidate = oldest.older()
        except gdb.error:
            break
        if not candidate:
            break
        oldest = candidate
    for _ in range(backtrace_lines - 1):
        candidate = newest.newer()
        if not candidate:
            break
        newest = candidate
    frame, number = newest, 0
    while True:
        prefix = " ▶" if frame == this_frame else "  "
        address = f"\x1b[31m{int(frame.pc()):#018x}\x1b[0m"
        line = f"{prefix} f {number:<3} {address} \x1b[33m{_symbol(int(frame.pc()))}\x1b[0m"
        result.append(line)
        if frame == oldest:
            break
        frame = frame.older()
        number += 1
    return result


context_sections = {"b": context_backtrace}
