"""kp-sim's pre view against a sample-style module's pre_handler (qemu/modules/kp_lab_sample.c),
for the same hit, on every mechanism a kprobe can have: an int3, an optimized probe, an
ftrace-based probe at a function's entry and, on IBT kernels, an entry behind a sealed
endbr64. The places are found with kp-check on the function's own instructions, not written
down (they differ between builds)."""
from __future__ import annotations

import json
import re
import time

import pytest
from test_kp_sim import assert_clean, regs_of, sim_with_traffic
from test_sealed_ibt import sealed_function

FUNCTION = "inet_accept"            # called once per accepted connection (the lab's traffic)
SAMPLE = "/lib/modules/kp-lab/kp_lab_sample.ko"
KPROBE_FLAG_FTRACE = 8
PRINT = re.compile(r"kp_lab_sample: pre <(\S+)> p->addr=0x(\w+) ip=0x(\w+) flags=0x(\w+) "
                   r"di=0x(\w+) si=0x(\w+)")


def places_by_mechanism(session) -> dict[str, str]:
    """One place per mechanism in FUNCTION, as kp-check predicts it."""
    offsets = session.file_offsets(FUNCTION, 40)
    specs = [f"{FUNCTION}+{offset}" for offset in offsets]
    document = json.loads(session.gdb_cmd("kp-check --json " + " ".join(specs)))
    found: dict[str, str] = {"ftrace": FUNCTION}      # its entry: the fentry call site
    for entry in document["places"]:
        notes = " ".join(entry["notes"])
        if not (entry["register_kprobe"] or {}).get("accepted") or "already registered" in notes:
            continue
        if "int3 kprobe; not optimizable" in notes:
            found.setdefault("int3", entry["spec"])
        elif "likely optimizable" in notes:
            found.setdefault("optimized", entry["spec"])
    return found


def compare_with_module(session, symbol: str, offset: int, spec: str,
                        optimized: bool = False, ftrace: bool = False) -> None:
    session.guest(f"insmod {SAMPLE} symbol={symbol} offset={offset}")
    try:
        planted = re.findall(r"kp_lab_sample: planted kprobe at (\w+)", session.guest("dmesg"))
        address = int(planted[-1], 16)
        if optimized:                       # the optimizer works a few jiffies later
            for _ in range(50):
                if re.search(rf"^{address:016x}  k  .*\[OPTIMIZED\]",
                             session.stable_list(), re.M):
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"{spec}: kp-check said likely optimizable; the kernel did not "
                            "optimize it")
        out = sim_with_traffic(session, f"kp-sim {spec}")
        regs = regs_of(out)
        prints = PRINT.findall(session.guest("dmesg"))
        assert prints, f"{spec}: the module's pre_handler never ran"
        _where, p_addr, ip, flags, di, si = prints[-1]
        assert int(p_addr, 16) == address
        if ftrace:
            assert int(flags, 16) & KPROBE_FLAG_FTRACE, (spec, flags)
        assert "breakpoint at " in out and f"({address:#x})" in out, out
        assert regs["ip"][0] == int(ip, 16) == address + 1, (spec, out)
        assert regs["di"][0] == int(di, 16) and regs["si"][0] == int(si, 16), (spec, out)
        assert_clean(session)
    finally:
        session.guest("rmmod kp_lab_sample", check=False)


@pytest.mark.parametrize("mechanism", ["ftrace", "int3", "optimized"])
def test_pre_ip_equals_the_module_print(session, mechanism):
    spec = places_by_mechanism(session).get(mechanism)
    if spec is None:
        pytest.skip(f"no {mechanism} place in {FUNCTION} on this kernel")
    symbol, _, offset = spec.partition("+")
    compare_with_module(session, symbol, int(offset or 0), spec,
                        optimized=mechanism == "optimized", ftrace=mechanism == "ftrace")


def test_sealed_entry_equals_the_module_print(session):
    name = sealed_function(session)
    compare_with_module(session, name, 0, name, ftrace=True)
