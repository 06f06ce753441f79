"""kp-locals --module: C types → printk conversions, pt_regs reads, comments for what cannot
be read, and the generated C and Kbuild text, on hand-made variables and frames."""
from __future__ import annotations

import pytest


@pytest.fixture
def mods(fake_gdb):
    from gdb_kprobe.analysis import probe_module, prologue, scope
    from gdb_kprobe.kernel import places
    from gdb_kprobe.ui import module_source
    return probe_module, prologue, scope, places, module_source


def ctype(mods, kind="int", spelling="int", size=4, signed=True, base="int", label=None):
    return mods[0].CType(kind, spelling, size, signed, base, label or spelling or "?")


def var(mods, name="x", where="register", register="rsi", offset=0, argument=True):
    return mods[2].Variable(name=name, is_argument=argument, type_name="?", size=8,
                            signed=False, is_pointer=False, is_struct=False, where=where,
                            register=register, offset=offset,
                            detail="no location at this PC (optimized out here)")


def frame(mods, frame_pointer=False, cfa_from_rsp=0x30):
    return mods[1].Prologue(["rbp"], 0x20, frame_pointer, cfa_from_rsp, None)


@pytest.mark.parametrize("kind,size,signed,base,expected", [
    ("int", 4, True, "int", "%d"), ("int", 4, False, "unsigned int", "%u"),
    ("int", 8, True, "long", "%ld"), ("int", 8, False, "long unsigned int", "%lu"),
    ("int", 8, True, "long long", "%lld"), ("int", 8, False, "unsigned long long", "%llu"),
    ("int", 2, True, "short", "%hd"), ("int", 2, False, "short unsigned int", "%hu"),
    ("int", 1, True, "char", "%hhd"), ("int", 1, False, "unsigned char", "%hhu"),
    ("bool", 1, False, "_Bool", "%d"), ("enum", 4, True, "int", "%d"),
    ("enum", 4, False, "int", "%u"), ("pointer", 8, False, "", "%px"),
    ("struct", 128, False, "", "%px"), ("int", 16, False, "__int128 unsigned", None),
])
def test_conversions(mods, kind, size, signed, base, expected):
    assert mods[0].conversion(ctype(mods, kind, "t", size, signed, base)) == expected


def test_register_reads(mods):
    read_of = mods[0].read_of
    flags = read_of(var(mods, "flags", register="rsi"), ctype(mods), frame(mods))
    assert (flags.expression, flags.conversion, flags.label) == ("(int)regs->si", "%d", "flags")
    kern = read_of(var(mods, "kern", register="rcx"),
                   ctype(mods, "bool", "bool", 1, False, "_Bool"), frame(mods))
    assert kern.expression == "(u8)regs->cx"           # the low byte, as gdb reads a bool
    sock = read_of(var(mods, "sock", register="r12"),
                   ctype(mods, "pointer", "struct socket *", 8, False, ""), frame(mods))
    assert sock.expression == "(struct socket *)regs->r12" and sock.conversion == "%px"
    clash = read_of(var(mods, "regs", register="rdi"), ctype(mods), frame(mods))
    assert clash.c_name == "v_regs" and clash.label == "regs"


def test_stack_slot_reads(mods):
    read_of = mods[0].read_of
    err = var(mods, "err", where="cfa", offset=-0x2c, argument=False)
    assert read_of(err, ctype(mods), frame(mods, True)).expression == \
        "*(int *)(regs->bp - 0x1c)"                    # CFA = rbp + 16
    assert read_of(err, ctype(mods), frame(mods, False, 0x30)).expression == \
        "*(int *)(regs->sp + 0x4)"                     # CFA = rsp + 0x30
    sk = read_of(var(mods, "sk", where="cfa", offset=-0x10),
                 ctype(mods, "pointer", "struct sock *", 8, False, ""), frame(mods))
    assert sk.expression == "*(struct sock **)(regs->sp + 0x20)"
    early = read_of(err, ctype(mods), frame(mods, False, 0x8))
    assert early.expression is None and "not allocated yet" in early.why_not


def test_structs_arrays_and_nothing(mods):
    read_of = mods[0].read_of
    address = read_of(var(mods, "address", where="cfa", offset=-0xc0, argument=False),
                      ctype(mods, "struct", None, 128, False, "",
                            "struct sockaddr_storage"), frame(mods, False, 0xd0))
    assert (address.expression, address.conversion, address.label) == \
        ("(void *)(regs->sp + 0x10)", "%px", "&address")
    held = read_of(var(mods, "f", register="rax"),
                   ctype(mods, "struct", None, 16, False, "", "struct fd"), frame(mods))
    assert held.expression is None and "held in registers" in held.why_not
    gone = read_of(var(mods, "sk2", where="none"),
                   ctype(mods, "pointer", "struct sock *", 8, False, ""), frame(mods))
    assert gone.expression is None and "optimized out" in gone.why_not
    wide = read_of(var(mods, "big"), ctype(mods, "int", "__int128", 16, True, "__int128"),
                   frame(mods))
    assert wide.expression is None and "no printk conversion" in wide.why_not


def test_module_names(mods):
    place = mods[3].Place(0xFFFFFFFF81000000, "foo.constprop.0", 0x1F, 0x40, None)
    assert mods[0].module_name(place) == "kp_locals_foo_constprop_0_1f"
    long_place = mods[3].Place(0xFFFFFFFF81000000, "x" * 80, 0x1F, 0x40, None)
    assert len(mods[0].module_name(long_place)) <= 55


def model(mods):
    probe_module = mods[0]
    facts = frame(mods, True)
    reads = [
        probe_module.read_of(var(mods, "sock", register="r12"),
                             ctype(mods, "pointer", "struct socket *", 8, False, ""), facts),
        probe_module.read_of(var(mods, "flags", register="rsi"), ctype(mods), facts),
        probe_module.read_of(var(mods, "sk2", where="none", argument=False),
                             ctype(mods, "pointer", "struct sock *", 8, False, ""), facts),
        probe_module.read_of(var(mods, "err", where="cfa", offset=-0x2c, argument=False),
                             ctype(mods), facts),
    ]
    return probe_module.ModuleModel(
        "inet_accept+0x30", "inet_accept", 0x30, 0xFFFFFFFF813DD390, "net/ipv4/af_inet.c:772",
        "6.1.192-lab-fp", "Linux version 6.1.192-lab-fp", "kp_locals_inet_accept_30",
        "CFA = regs->bp + 0x10 (frame pointer)", reads)


def test_c_source(mods):
    text = mods[4].c_source(model(mods))
    assert "kernel: 6.1.192-lab-fp" in text and "place:  inet_accept+0x30 = 0xffffffff813dd390" \
        in text
    assert '.symbol_name\t= "inet_accept"' in text and ".offset\t\t= 0x30," in text
    assert "\tstruct socket *sock = (struct socket *)regs->r12;\t/* %r12 */" in text
    assert "\tint err = *(int *)(regs->bp - 0x1c);\t/* -0x1c(%rbp)  [CFA-0x2c] */" in text
    assert "/* sk2 (struct sock *): no location at this PC (optimized out here) */" in text
    assert ('pr_info("kp_locals_inet_accept_30 inet_accept+0x30: sock=%px flags=%d err=%d\\n",'
            '\n\t\tsock, flags, err);') in text
    assert "%p prints a hash" in text                 # why %px
    assert "static int __kprobes kp_locals_inet_accept_30_pre(struct kprobe *p, " \
           "struct pt_regs *regs)" in text
    assert "module_init(kp_locals_inet_accept_30_init);" in text
    assert 'MODULE_LICENSE("GPL");' in text


def test_kbuild(mods):
    text = mods[4].kbuild(model(mods))
    assert text.splitlines()[-1] == "obj-m += kp_locals_inet_accept_30.o"
    assert mods[4].file_names(model(mods)) == ("kp_locals_inet_accept_30.c", "Kbuild")
