"""kernel/probe_owners.py on hand-made kernel memory: a trace_kprobe's BPF prog_array (NULL-
terminated, the detached slot's dummy_bpf_prog skipped), bpf_prog's aux id/name/tag, a perf
kprobe PMU probe told apart by its self-linked devent.list, and fields this kernel's DWARF
lacks degrading to None instead of a crash."""
from __future__ import annotations

import struct

import pytest

DUMMY = 0xFFFFFFFF82A00000


class FakeLayout:
    """The few Layout methods probe_owners uses, over {path: (offset, size)}."""

    def __init__(self, name: str, fields: dict[str, tuple[int, int]], size: int) -> None:
        self.name, self.fields, self.size = name, fields, size

    def has_field(self, path: str) -> bool:
        return path in self.fields

    def offset(self, path: str) -> int:
        return self.fields[path][0]

    def view(self, data: bytes, address: int = 0):
        return FakeView(self, data, address)


class FakeView:
    def __init__(self, layout: FakeLayout, data: bytes, address: int) -> None:
        self.layout, self.data, self.address = layout, data, address

    def int(self, path: str) -> int:
        offset, size = self.layout.fields[path]
        return int.from_bytes(self.data[offset:offset + size], "little")

    ptr = int

    def bytes(self, path: str) -> bytes:
        offset, size = self.layout.fields[path]
        return self.data[offset:offset + size]

    def string(self, path: str) -> str:
        return self.bytes(path).split(b"\0")[0].decode()


LAYOUTS = {
    "struct bpf_prog": FakeLayout("struct bpf_prog", {"type": (4, 4), "tag": (16, 8),
                                                      "aux": (56, 8)}, 64),
    "struct bpf_prog_aux": FakeLayout("struct bpf_prog_aux", {"id": (0, 4),
                                                              "name": (8, 16)}, 32),
    "struct bpf_prog_array": FakeLayout("struct bpf_prog_array", {"items": (16, 0)}, 16),
    "struct bpf_prog_array_item": FakeLayout("struct bpf_prog_array_item", {"prog": (0, 8)}, 16),
    "struct trace_kprobe": FakeLayout("struct trace_kprobe", {"devent.list": (0, 16)}, 256),
}


@pytest.fixture
def owners(fake_gdb, monkeypatch):
    from gdb_kprobe.errors import KpError
    from gdb_kprobe.kernel import probe_owners
    from gdb_kprobe.target import layouts, memory, symbols
    image: dict[int, bytes] = {}

    def read(address: int, size: int) -> bytes:
        for start, data in image.items():
            if start <= address and address + size <= start + len(data):
                return data[address - start:address - start + size]
        raise KpError(f"cannot read {size} bytes at {address:#x}")

    monkeypatch.setattr(memory, "read", read)
    monkeypatch.setattr(memory, "read_u64", lambda a: struct.unpack("<Q", read(a, 8))[0])
    monkeypatch.setattr(layouts, "layout", lambda name: LAYOUTS[name])
    monkeypatch.setattr(layouts, "try_layout", lambda name: LAYOUTS.get(name))
    monkeypatch.setattr(symbols, "kernel", lambda: type("T", (), {
        "address_of": staticmethod(lambda name: DUMMY if name == "dummy_bpf_prog" else None)})())
    return probe_owners, image


def prog_bytes(aux: int, kind: int, tag: bytes) -> bytes:
    data = bytearray(64)
    struct.pack_into("<I", data, 4, kind)
    data[16:24] = tag
    struct.pack_into("<Q", data, 56, aux)
    return bytes(data)


def aux_bytes(prog_id: int, name: bytes) -> bytes:
    data = bytearray(32)
    struct.pack_into("<I", data, 0, prog_id)
    data[8:8 + len(name)] = name
    return bytes(data)


def test_prog_array_lists_programs_up_to_null_without_the_dummy(owners):
    probe_owners, image = owners
    prog, aux, array = 0xFFFFC90000010000, 0xFFFFC90000020000, 0xFF11000001000000
    image[prog] = prog_bytes(aux, 2, bytes.fromhex("0123456789abcdef"))
    image[aux] = aux_bytes(12, b"kp_prog")
    image[array] = bytes(16) + struct.pack("<QQQQQQ", DUMMY, 0, prog, 0, 0, 0)
    (found,) = probe_owners.prog_array(array)
    assert found == probe_owners.BpfProg(prog, 12, "kp_prog", "0123456789abcdef", 2)
    assert str(found) == "bpf prog 12 kp_prog tag 0123456789abcdef"
    assert probe_owners.prog_array(0) == []


def test_missing_aux_field_degrades(owners, monkeypatch):
    probe_owners, image = owners
    prog = 0xFFFFC90000010000
    image[prog] = prog_bytes(0, 17, bytes(8))
    found = probe_owners.bpf_prog(prog)
    assert (found.id, found.name, found.type) == (None, "", 17)
    assert str(found) == "bpf prog ? tag 0000000000000000"


def test_local_trace_kprobe_has_a_self_linked_devent(owners):
    probe_owners, image = owners
    local, listed = 0xFF11000002000000, 0xFF11000003000000
    image[local] = struct.pack("<QQ", local, local) + bytes(240)
    image[listed] = struct.pack("<QQ", 0xFFFFFFFF83000000, 0xFFFFFFFF83000000) + bytes(240)
    from gdb_kprobe.kernel import kprobes
    assert kprobes.on_dyn_event_list(local) is False
    assert kprobes.on_dyn_event_list(listed) is True


def test_unreadable_prog_array_is_one_error_line(owners):
    from gdb_kprobe.errors import KpError
    probe_owners, _ = owners
    with pytest.raises(KpError, match="cannot read"):
        probe_owners.prog_array(0xFF11000009000000)
