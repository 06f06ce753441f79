"""JSON output of kp-modules, kp-blacklist and kp-kaslr: the model objects ui/render.py
prints, shaped into plain dicts with ui/jsonout.py's conventions (docs/json.md). No gdb
calls here, and never colour."""
from __future__ import annotations

from gdb_kprobe.ui.jsonout import head, hexed

__all__ = ["modules", "blacklist", "kaslr"]


def modules(listing) -> dict:
    """kp-modules: one object per loaded module, in the `modules` list's order (which is
    /proc/modules' order); the text's columns."""
    document = head("kp-modules")
    rows = []
    for row in listing.rows:
        module = row.module
        # the text column: the first memory region (core text; MOD_TEXT on 6.4+)
        base, size = module.ranges[0] if module.ranges else (None, None)
        rows.append({"name": module.name, "module": hexed(module.address),
                     "text": hexed(base), "size": size, "ko": row.path,
                     "symbols": row.state or None})
    document["modules"] = rows
    document["damage"] = list(listing.damage)
    return document


def blacklist(listing) -> dict:
    """kp-blacklist: each range and the symbol debugfs prints for its start (%ps)."""
    document = head("kp-blacklist")
    document["entries"] = [{"start": hexed(entry.start), "end": hexed(entry.end),
                            "symbol": location.symbol if location else None,
                            "offset": location.offset if location else None,
                            "module": location.module if location else None}
                           for entry, location in listing.rows]
    document["total"] = listing.total
    document["damage"] = list(listing.damage)
    return document


def kaslr(state) -> dict:
    """kp-kaslr: the slide, the symbols' shift and what the text says about them."""
    document = head("kp-kaslr")
    document["state"] = state.state
    document["slide"] = state.slide
    document["symbols_offset"] = state.bias
    document["banner"] = state.banner
    return document
