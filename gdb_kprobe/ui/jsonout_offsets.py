"""JSON of kp-locals --offsets (docs/json.md, docs/schema/kp-locals-offsets.json): every
instruction boundary as a row, never grouped. The conventions are ui/jsonout.py's."""
from __future__ import annotations

from gdb_kprobe.ui import jsonout
from gdb_kprobe.ui.offsets_table import cell_text

__all__ = ["offsets_table"]


def _cell(cell) -> dict | None:
    if cell is None:
        return None
    variable = cell.variable
    return {"where": variable.where,
            "register": variable.register,
            "offset": variable.offset if variable.where in ("cfa", "regoffset") else None,
            "address": jsonout.hexed(variable.address),
            "placement": cell.placement,
            "short": cell_text(cell),
            "readable": cell.readable}


def _row(row, names: list[str]) -> dict:
    verdict = row.verdict
    return {"offset": row.offset,
            "address": jsonout.hexed(row.address),
            "bytes": row.insn.raw.hex(),
            "asm": row.insn.asm,
            "inlined": row.inlined,
            "probe": {"label": row.label,
                      "accepted": row.probe_able,
                      "place": verdict.place,
                      "register_kprobe": jsonout.answer(verdict.register_kprobe),
                      "kprobe_events": jsonout.answer(verdict.kprobe_events),
                      "notes": list(verdict.notes)},
            "cells": [_cell(row.cells.get(name)) for name in names]}


def offsets_table(table) -> dict:
    """kp-locals --offsets FUNCTION: what ui/offsets_table.render() prints, row by row."""
    function = table.function
    document = jsonout.head("kp-locals-offsets")
    document["address"] = jsonout.hexed(function.address)
    document["symbol"] = function.symbol
    document["module"] = function.module
    document["size"] = function.size
    document["source"] = table.source
    names = [column.name for column in table.columns]
    document["variables"] = [{"name": column.name,
                              "kind": "param" if column.is_argument else "local",
                              "type": column.type_name,
                              "inlined": column.inlined} for column in table.columns]
    document["rows"] = [_row(row, names) for row in table.rows]
    document["notes"] = list(table.notes)
    return document
