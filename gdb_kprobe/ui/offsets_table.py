"""Text of kp-locals --offsets: instruction boundaries as rows, parameters and locals as
columns, each cell where the variable lives there, each row the kernel's verdict on a probe
there. Consecutive rows whose cells and verdict read the same are one row. No gdb calls.
"""
from __future__ import annotations

import textwrap
from typing import Sequence

from gdb_kprobe.ui.colour import PLAIN, Palette

__all__ = ["cell_text", "groups", "render"]

MAX_HEADER = 12                  # longer names are cut (the legend names them in full)
GAP = "  "

LEGEND = ("cells: %reg a register; N(%rsp) N(%rbp) N(%reg) memory there; unalloc: its stack "
          "slot is below %rsp here; entry: only the value a register had at entry (gone); "
          "const: a constant; -: optimized out; blank: not in scope")


def cell_text(cell) -> str:
    """A cell in a few characters (kp-locals PLACE says it in full: cell.placement)."""
    if cell is None:
        return ""
    variable = cell.variable
    if variable.where == "register":
        return f"%{variable.register}"
    if variable.where == "cfa":
        return cell.placement.split("  [")[0] if cell.readable else "unalloc"
    if variable.where == "regoffset":
        return cell.placement
    if variable.where in ("static", "entry", "const"):
        return variable.where
    return "-"


def groups(rows: Sequence, names: Sequence[str]) -> list[tuple[list, list[str]]]:
    """Runs of consecutive rows that read the same in the columns `names` and the verdict:
    (the rows, the cells' text)."""
    found: list[tuple[list, list[str]]] = []
    previous = None
    for row in rows:
        texts = [cell_text(row.cells.get(name)) for name in names]
        key = (row.label, row.inlined, texts)
        if found and key == previous:
            found[-1][0].append(row)
        else:
            found.append(([row], texts))
        previous = key
    return found


def _span(members: list) -> str:
    first, last = members[0].offset, members[-1].offset
    return f"+{first:#x}" if first == last else f"+{first:#x}..+{last:#x}"


def _inlined(row) -> str:
    return f"{row.inlined}()" if row.inlined else ""


def _header(name: str) -> str:
    return name if len(name) <= MAX_HEADER else name[:MAX_HEADER - 1] + "~"


def _chunks(names: list[str], widths: dict[str, int], fixed: int,
            width: int | None) -> list[list[str]]:
    """The columns split into tables that each fit `width` (one column at least)."""
    if not width:
        return [names]
    chunks: list[list[str]] = [[]]
    used = fixed
    for name in names:
        need = len(GAP) + widths[name]
        if chunks[-1] and used + need > width:
            chunks.append([])
            used = fixed
        chunks[-1].append(name)
        used += need
    return chunks


def _table(table, names: list[str], palette: Palette) -> list[str]:
    runs = groups(table.rows, names)
    spans = [_span(members) for members, _ in runs]
    span_width = max([len("offsets"), *map(len, spans)])
    count_width = max(len(str(len(members))) for members, _ in runs)
    label_width = max([len("probe"), *(len(members[0].label) for members, _ in runs)])
    inlined = [_inlined(members[0]) for members, _ in runs]
    inline_width = max(map(len, inlined)) if any(inlined) else 0
    widths = {name: max([len(_header(name)), *(len(texts[i]) for _, texts in runs)])
              for i, name in enumerate(names)}
    head = GAP.join([f"{'offsets':<{span_width}}", f"{'n':>{count_width}}",
                     f"{'probe':<{label_width}}",
                     *([f"{'inlined':<{inline_width}}"] if inline_width else []),
                     *(f"{_header(n):<{widths[n]}}" for n in names)])
    lines = [palette.heading(head.rstrip())]
    for span, inline, (members, texts) in zip(spans, inlined, runs):
        label = members[0].label
        shown = f"{label:<{label_width}}"
        parts = [palette.address(f"{span:<{span_width}}"), f"{len(members):>{count_width}}",
                 shown if label.startswith("ok") else palette.flag(shown),
                 *([f"{inline:<{inline_width}}"] if inline_width else []),
                 *(f"{text:<{widths[n]}}" for n, text in zip(names, texts))]
        lines.append(GAP.join(parts).rstrip())
    return lines


def render(table, palette: Palette = PLAIN, width: int | None = None) -> str:
    """The table, split into several when its columns do not fit `width` (None: one)."""
    function = table.function
    source = f", {table.source}" if table.source else ""
    runs = len(groups(table.rows, [c.name for c in table.columns]))
    out = [f"{table.spec} ({function.address:#x}, {function.size:#x} bytes{source}): "
           f"{len(table.rows)} instructions in {runs} rows"]
    names = [column.name for column in table.columns]
    probe_width = max([len("probe"), *(len(row.label) for row in table.rows)])
    last = table.rows[-1].offset                     # the widest span a group can have
    span_width = len(f"+{last:#x}..+{last:#x}")
    fixed = span_width + len(GAP) * 2 + len(str(len(table.rows))) + probe_width
    widths = {name: max([len(_header(name)), *(len(cell_text(row.cells.get(name)))
                                                for row in table.rows)]) for name in names}
    for index, chunk in enumerate(_chunks(names, widths, fixed, width)):
        if index:
            out.append("")
        out += _table(table, chunk, palette)
    wrap = width or 100
    out += textwrap.wrap(LEGEND, wrap, subsequent_indent="  ")
    out += textwrap.wrap(f"probe: kprobe_events' verdict on `p {table.spec}+OFF` (kp-check "
                         f"{table.spec}+OFF says why; --json gives every row)", wrap,
                         subsequent_indent="  ")
    owners = [None, *sorted({c.inlined for c in table.columns if c.inlined})]
    for owner in owners:
        for kind, wanted in (("params", True), ("locals", False)):
            listed = [f"{c.name} ({c.type_name})" for c in table.columns
                      if c.is_argument == wanted and c.inlined == owner]
            where = f" of inlined {owner}()" if owner else ""
            if listed:
                out += textwrap.wrap(f"{kind}{where}: " + ", ".join(listed), wrap,
                                     subsequent_indent="  ")
    out += [f"note: {note}" for note in table.notes]
    return "".join(line + "\n" for line in out)
