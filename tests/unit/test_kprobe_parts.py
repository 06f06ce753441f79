"""A struct kprobe read in parts (kp-read-block on a link that pays per byte): a view refuses
the fields not read, and a probe decoded from its row's fields reads the rest (the whole
struct, once) when first asked for. Fake memory and a hand-made layout (x86-64 6.1)."""
from __future__ import annotations

import types

import pytest

ADDRESS = 0xFF11000004599800
# struct kprobe on x86-64 6.1: offset, size
FIELDS = {"hlist.next": (0, 8), "list.next": (16, 8), "nmissed": (32, 8), "addr": (40, 8),
          "symbol_name": (48, 8), "offset": (56, 4), "pre_handler": (64, 8),
          "post_handler": (72, 8), "opcode": (80, 1), "flags": (120, 4)}
VALUES = {"hlist.next": 0, "list.next": 0, "nmissed": 3, "addr": 0xFFFFFFFF8134CC50,
          "symbol_name": 0, "offset": 0, "pre_handler": 0xFFFFFFFF811E5910,
          "post_handler": 0, "opcode": 0xF3, "flags": 8}


@pytest.fixture
def parts(fake_gdb, monkeypatch):
    from gdb_kprobe.kernel import kprobes
    from gdb_kprobe.target import layouts, memory

    class Layout:
        name, size = "struct kprobe", 128
        decoder, spans = layouts.Layout.decoder, layouts.Layout.spans

        def __init__(self):
            self._decoders, self._spans = {}, {}

        def field(self, path):
            offset, size = FIELDS[path]
            return types.SimpleNamespace(offset=offset, size=size, signed=False, bitsize=0,
                                         bitpos=0)

        def view(self, data, address=0, known=None):
            return layouts.View(self, data, address, known)

    whole = bytearray(128)
    for path, (offset, size) in FIELDS.items():
        whole[offset: offset + size] = VALUES[path].to_bytes(size, "little")
    reads = []

    def read(address, size):
        reads.append((address, size))
        return bytes(whole[address - ADDRESS: address - ADDRESS + size])

    monkeypatch.setattr(layouts, "layout", lambda name: Layout())
    monkeypatch.setattr(memory, "read", read)
    row = ((0, 8), (40, 32), (120, 4))          # read_model.cover() at 115200 baud
    data = bytearray(128)
    for offset, size in row:
        data[offset: offset + size] = whole[offset: offset + size]
    view = Layout().view(bytes(data), ADDRESS, row)
    return types.SimpleNamespace(kprobes=kprobes, view=view, reads=reads)


def test_a_field_not_read_is_refused(parts):
    from gdb_kprobe.errors import KpError
    assert parts.view.ptr("addr") == VALUES["addr"]
    with pytest.raises(KpError, match="`nmissed` .* was not read"):
        parts.view.int("nmissed")


def row_probe(parts):
    values = parts.view.ints(parts.kprobes.ROW_FIELDS)
    return parts.kprobes.Kprobe.of_row(ADDRESS, *values)


def test_fields_decode_in_one_go_in_the_order_asked(parts):
    assert parts.view.ints(("flags", "hlist.next", "addr")) == \
        (VALUES["flags"], VALUES["hlist.next"], VALUES["addr"])
    from gdb_kprobe.errors import KpError
    with pytest.raises(KpError, match="`post_handler` .* was not read"):
        parts.view.ints(("addr", "post_handler"))


def test_the_rest_is_read_once_when_asked_for(parts):
    probe = row_probe(parts)
    assert (probe.addr, probe.flags, probe.pre_handler) == \
        (VALUES["addr"], VALUES["flags"], VALUES["pre_handler"])
    assert probe.ftrace and not parts.reads
    assert probe.nmissed == 3 and probe.opcode == 0xF3
    assert parts.reads == [(ADDRESS, 128)]
    assert probe.post_handler == 0 and probe.symbol_name == 0
    assert parts.reads == [(ADDRESS, 128)]


def test_a_missing_attribute_is_still_an_attribute_error(parts):
    probe = row_probe(parts)
    with pytest.raises(AttributeError):
        probe.no_such_field
    assert not parts.reads
