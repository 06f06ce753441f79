"""kernel/ftrace_ops (issue #16): hash containment as hash_contains_ip() has it, a struct
ftrace_hash decoded from fake memory, the classification of ops by identity and callback,
and hooked_ips() as one pass over the ops' hashes."""
from __future__ import annotations

import struct

import pytest

BASE = 0xFF11000001000000
KERNEL, MODULE, MODULE_SPACE, VMALLOC = "kernel_image", "module", "module_space", "vmalloc"


@pytest.fixture
def fto(fake_gdb):
    from gdb_kprobe.kernel import ftrace_hash, ftrace_ops, ftrace_owners
    return ftrace_hash, ftrace_owners, ftrace_ops


class FakeMemory:
    """Sparse little-endian memory: read(address, size) of what was put, else KpError."""

    def __init__(self) -> None:
        self.bytes: dict[int, int] = {}
        self.reads = 0

    def put(self, address: int, data: bytes) -> None:
        for index, byte in enumerate(data):
            self.bytes[address + index] = byte

    def read(self, address: int, size: int) -> bytes:
        from gdb_kprobe.errors import KpError
        self.reads += 1
        try:
            return bytes(self.bytes[address + i] for i in range(size))
        except KeyError:
            raise KpError(f"cannot read {size} bytes at {address:#x}") from None


# struct ftrace_hash {size_bits, buckets, count, flags, rcu_head}; struct ftrace_func_entry
# {hlist_node {next, pprev}, ip, direct}: the x86-64 layouts of 6.1 and 6.12
def _layout(fto):
    ftrace_hash = fto[0]
    return ftrace_hash.HashLayout(size=48, size_bits=0, buckets=8, count=16, entry_size=32,
                                  entry_next=0, entry_ip=16, entry_direct=24)


def _hash(memory: FakeMemory, address: int, bits: int, ips: dict[int, int]) -> None:
    """A hash at `address` with its buckets and entries after it, chained per bucket."""
    buckets = address + 0x100
    entry = address + 0x1000
    heads = [0] * (1 << bits)
    for ip, direct in ips.items():
        bucket = ip % (1 << bits)
        memory.put(entry, struct.pack("<QQQQ", heads[bucket], 0, ip, direct))
        heads[bucket] = entry
        entry += 32
    memory.put(buckets, struct.pack(f"<{len(heads)}Q", *heads))
    memory.put(address, struct.pack("<QQQQ", bits, buckets, len(ips), 0) + bytes(16))


def test_hash_contents_from_memory(fto):
    ftrace_hash = fto[0]
    memory = FakeMemory()
    ips = {0xFFFFFFFF81354500 + 16 * i: 0 for i in range(11)}
    _hash(memory, BASE, 2, ips)
    assert set(ftrace_hash.read_hash_ips(BASE, _layout(fto), memory.read)) == set(ips)
    # NULL hash and an empty one (count 0): no ips, read nothing past the header
    assert ftrace_hash.read_hash_ips(0, _layout(fto), memory.read) == {}
    _hash(memory, BASE + 0x10000, 4, {})
    assert ftrace_hash.read_hash_ips(BASE + 0x10000, _layout(fto), memory.read) == {}


def test_direct_entries_keep_their_trampoline(fto):
    ftrace_hash = fto[0]
    memory = FakeMemory()
    _hash(memory, BASE, 1, {0xFFFFFFFF81354500: 0xFFFFFFFFC0300000, 0xFFFFFFFF81354601: 0})
    found = ftrace_hash.read_hash_ips(BASE, _layout(fto), memory.read, with_direct=True)
    assert found == {0xFFFFFFFF81354500: 0xFFFFFFFFC0300000, 0xFFFFFFFF81354601: 0}


def test_damaged_hash_is_one_error_not_a_hang(fto):
    ftrace_hash = fto[0]
    from gdb_kprobe.errors import KpError
    memory = FakeMemory()
    _hash(memory, BASE, 0, {0xFFFFFFFF81000000: 0})
    entry = BASE + 0x1000
    memory.put(entry, struct.pack("<Q", entry))          # the entry points at itself
    with pytest.raises(KpError, match="bucket 0 is damaged"):
        ftrace_hash.read_hash_ips(BASE, _layout(fto), memory.read)
    memory.put(BASE, struct.pack("<Q", 63))              # size_bits no hash has
    with pytest.raises(KpError, match="size_bits 63"):
        ftrace_hash.read_hash_ips(BASE, _layout(fto), memory.read)


def test_containment_rule(fto):
    contains = fto[0].hash_contains
    a, b, c = 0x1000, 0x2000, 0x3000
    assert contains(set(), set(), a)                      # empty filter: every function
    assert contains({a, b}, set(), a) and not contains({a, b}, set(), c)
    assert not contains({a, b}, {a}, a) and contains({a, b}, {a}, b)   # notrace excludes
    assert not contains(set(), {c}, c) and contains(set(), {c}, a)


def _facts(fto, **given):
    values = dict(ops_symbol=None, func_symbol=None, ops_func_symbol=None,
                  func_region=KERNEL, flags=0)
    values.update(given)
    return fto[1].OpsFacts(**values)


@pytest.mark.parametrize("given, kind", [
    (dict(ops_symbol="kprobe_ftrace_ops", func_symbol="kprobe_ftrace_handler"), "kprobes"),
    (dict(ops_symbol="kprobe_ipmodify_ops", func_symbol="kprobe_ftrace_handler"), "kprobes"),
    # a module's ops calling kprobes' handler is still kprobes' mechanism
    (dict(func_symbol="kprobe_ftrace_handler", func_region=KERNEL), "kprobes"),
    (dict(ops_symbol="global_ops", func_symbol="function_trace_call"), "function_tracer"),
    (dict(func_symbol="function_trace_call", trace_array_ops=True), "function_tracer"),
    (dict(func_symbol="fprobe_handler"), "fprobe"),
    (dict(func_symbol="fprobe_kprobe_handler"), "fprobe"),
    (dict(func_symbol="klp_ftrace_handler"), "livepatch"),
    (dict(func_symbol="call_direct_funcs", ops_func_symbol="bpf_tramp_ftrace_ops_func",
          flags=1 << 17), "bpf_trampoline"),
    (dict(func_symbol="call_direct_funcs", flags=1 << 17), "direct"),
    (dict(func_region=KERNEL, has_direct_call=True), "direct"),
    (dict(ops_symbol="graph_ops", func_symbol="ftrace_graph_func"), "kernel"),
    (dict(func_symbol=None, func_region=MODULE), "module"),
    (dict(func_symbol=None, func_region=MODULE_SPACE), "unlisted"),
    (dict(func_symbol=None, func_region=VMALLOC), "unlisted"),
])
def test_classification(fto, given, kind):
    assert fto[1].classify(_facts(fto, **given)) == kind


def test_classification_never_says_kernel_outside_the_image(fto):
    for region in (MODULE_SPACE, VMALLOC, "direct_map", "unknown"):
        assert fto[1].classify(_facts(fto, func_region=region)) == "unlisted"


def test_flag_names(fto):
    assert fto[1].flag_names((1 << 0) | (1 << 2) | (1 << 17)) == ["ENABLED", "SAVE_REGS",
                                                                    "DIRECT"]
    assert fto[1].flag_names(1 << 40) == [f"{1 << 40:#x}"]


def _ops(fto, address: int, kind: str, filter_all: bool = False):
    return fto[2].FtraceOps(address=address, func=0, flags=0, trampoline=None, kind=kind,
                            owner=kind, details={}, filter_all=filter_all)


def test_hooked_ips_one_pass(fto, monkeypatch):
    ftrace_ops = fto[2]
    a, b, c, d = (0xFFFFFFFF81000000 + 0x100 * i for i in range(4))
    tracer, kprobes, everything = (_ops(fto, BASE + i, k) for i, k in
                                   enumerate(("function_tracer", "kprobes", "kernel")))
    hashes = {tracer.address: (frozenset({a, b}), frozenset()),
              kprobes.address: (frozenset({b, c}), frozenset()),
              everything.address: (frozenset(), frozenset({d}))}
    site_reads = []
    monkeypatch.setattr(ftrace_ops, "ops_list", lambda: (tracer, kprobes))
    monkeypatch.setattr(ftrace_ops, "_hashes", lambda ops: hashes[ops.address])
    monkeypatch.setattr(ftrace_ops, "_all_site_ips",
                        lambda: site_reads.append(1) or [a, b, c, d])
    ftrace_ops.hooked_ips.cache_clear()
    found = ftrace_ops.hooked_ips()
    assert found == {a: (tracer,), b: (tracer, kprobes), c: (kprobes,)}
    assert not site_reads, "no ops traces everything: the call-site records are not read"
    assert ftrace_ops.ops_on(b) == (tracer, kprobes) and ftrace_ops.ops_on(d) == ()
    # an ops with an empty filter hash takes every call site but its notrace ones
    monkeypatch.setattr(ftrace_ops, "ops_list", lambda: (tracer, kprobes, everything))
    ftrace_ops.hooked_ips.cache_clear()
    found = ftrace_ops.hooked_ips()
    assert found == {a: (tracer, everything), b: (tracer, kprobes, everything),
                     c: (kprobes, everything)}
    assert site_reads == [1]
    assert ftrace_ops.ops_on(d) == ()
    ftrace_ops.hooked_ips.cache_clear()


def test_expected_site_follows_ftrace_get_addr_new(fto, monkeypatch):
    ftrace_hash, _owners, ftrace_ops = fto
    from gdb_kprobe.target import symbols
    callers = {"ftrace_caller": 0xFFFFFFFF81E00000, "ftrace_regs_caller": 0xFFFFFFFF81E00100}
    names = {v: k for k, v in callers.items()} | {0xFFFFFFFFC0201000: "ftrace_trampoline",
                                                  0xFFFFFFFFC0300000: "bpf_trampoline_7"}
    monkeypatch.setattr(symbols, "kernel_address", callers.__getitem__)
    monkeypatch.setattr(ftrace_ops, "code_name", lambda address, _modules: names[address])
    monkeypatch.setattr(ftrace_ops, "_modules", lambda: ([], None))
    monkeypatch.setattr(ftrace_hash, "direct_functions", lambda: {0x1000: 0xFFFFFFFFC0300000})

    def ops(flags=0, trampoline=None):
        return ftrace_ops.FtraceOps(address=BASE, func=0, flags=flags, trampoline=trampoline,
                                    kind="kernel", owner="", details={}, filter_all=False)
    own = ops(flags=4, trampoline=0xFFFFFFFFC0201000)
    assert ftrace_ops.expected_site(0x2000, ()).kind == "nop"
    assert ftrace_ops.expected_site(0x2000, (own,)).target_name == "ftrace_trampoline"
    # two ops: the list caller, with registers when one of them wants them
    assert ftrace_ops.expected_site(0x2000, (own, ops())).target_name == "ftrace_regs_caller"
    assert ftrace_ops.expected_site(0x2000, (ops(), ops())).target_name == "ftrace_caller"
    # a direct call alone: its trampoline; shared: through ftrace_regs_caller
    direct = ops(flags=(1 << 17) | 4, trampoline=callers["ftrace_regs_caller"])
    site = ftrace_ops.expected_site(0x1000, (direct,))
    assert site.target_name == "bpf_trampoline_7" and "not read" in site.words
    assert ftrace_ops.expected_site(0x1000, (direct, own)).target_name == "ftrace_regs_caller"


def test_callbacks_outside_kernel_and_modules_are_flagged(fto, monkeypatch):
    """A callback in module space of no listed module, or in vmalloc'ed memory: kind
    "unlisted", kp-list -v's flagged words, never "kernel"."""
    _hash, ftrace_owners, _ops = fto
    from gdb_kprobe.kernel import owners
    from gdb_kprobe.target import symbols
    regions = {0xFFFFFFFFC0201000: owners.Region(owners.MODULE_SPACE),
               0xFFFFC90000100000: owners.Region(owners.VMALLOC),
               0xFFFFFFFFC0300000: owners.Region(owners.MODULE, "kp_ftrace_ops")}
    monkeypatch.setattr(owners, "region_of", lambda address, _modules: regions[address])
    monkeypatch.setattr(symbols, "in_kernel_image", lambda address: False)
    monkeypatch.setattr(ftrace_owners, "code_name", lambda address, _m: f"{address:#x}")
    monkeypatch.setattr(ftrace_owners, "symbol_at", lambda address: None)
    for func, kind, words in [
            (0xFFFFFFFFC0201000, "unlisted", "UNLISTED MODULE CODE at 0xffffffffc0201000"),
            (0xFFFFC90000100000, "unlisted", "CODE OUTSIDE THE KERNEL AND ITS MODULES at "
                                             "0xffffc90000100000 (in vmalloc space)"),
            (0xFFFFFFFFC0300000, "module", "module kp_ftrace_ops")]:
        fields = ftrace_owners.OpsFields(address=BASE, func=func, flags=1, private=0,
                                         ops_func=0, trampoline=0, trampoline_size=0,
                                         filter_hash=0, notrace_hash=0, direct_call=0)
        found_kind, owner, details = ftrace_owners.decide(fields, {}, [])
        assert (found_kind, owner.startswith(words)) == (kind, True), owner
        assert "kernel" not in owner.replace("THE KERNEL", "")
        assert details["func_name"] == f"{func:#x}"
