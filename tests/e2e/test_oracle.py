"""Issue 15, agree with the kernel on every rule: kp-check --json against the guest kernel's
own verdicts on 300+ generated places per lab kernel, through both kprobe_events and
register_kprobe() (the lab module kp_oracle). The places, the guest loop and the comparison
are qemu/oracle.py's; the report (counts per class and interface, the two interfaces'
disagreements, kp-check's mismatches grouped by class) goes to oracle-<kernel>/report.txt in
the pytest tmp dir, next to verdicts.json (every place, both verdicts, kp-check's entry)."""
from __future__ import annotations

import json
import pathlib
import time

import jsonschema
import pytest

from qemu import oracle

MIN_PLACES = 300
SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / "kp-check.json"


@pytest.fixture(scope="module")
def asked(session, kernel, tmp_path_factory):
    """The places (fixed seed) and the kernel's verdicts on them, asked once per kernel."""
    started = time.monotonic()
    places = oracle.generate(session.lab.files, session.guest)
    verdicts = oracle.ask_kernel(session.guest, places)
    folder = tmp_path_factory.mktemp(f"oracle-{kernel}", numbered=False)
    report = oracle.report(kernel, places, verdicts)
    (folder / "report.txt").write_text(report)
    (folder / "verdicts.json").write_text(
        json.dumps(oracle.results_json(kernel, places, verdicts), indent=1) + "\n")
    print(f"\noracle {kernel}: {len(places)} places asked in "
          f"{time.monotonic() - started:.0f} s; report in {folder / 'report.txt'}")
    return places, verdicts, folder


def test_the_kernel_answers_every_place(asked):
    """The oracle itself: enough places, every class drawn, every answer understood (an
    errno name for each refusal, p->addr for each register_kprobe() success)."""
    places, verdicts, folder = asked
    assert len(places) >= MIN_PLACES
    classes = {p.cls for p in places}
    assert {"entry_sym", "entry_addr", "boundary", "mid_insn", "blacklist", "notrace",
            "nonfunc_text", "data", "module", "module_offset", "module_unloaded",
            "negative_offset", "huge_offset", "past_end", "duplicate", "unknown", "return",
            "bad_suffix"} <= classes
    unclear = [(p.spec, i, v.raw) for p, answer in zip(places, verdicts)
               for i, v in answer.items()
               if v is not None and (v.errno is None and not v.accepted)]
    assert not unclear, unclear
    # register_kprobe() is asked exactly where it can be
    for place, answer in zip(places, verdicts):
        assert (answer["register_kprobe"] is not None) == place.ask_register, place
    # both verdicts occur in the classes that are there to show them
    counts = oracle.class_counts(places, verdicts)
    assert counts["boundary"]["register_kprobe"]["accepted"] > 0
    assert counts["mid_insn"]["register_kprobe"]["EILSEQ"] > 0
    assert set(counts["blacklist"]["register_kprobe"]) == {"EINVAL"}, \
        (folder / "report.txt").read_text()


def test_kp_check_agrees_with_the_kernel(session, kernel, asked):
    places, verdicts, folder = asked
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    ours = oracle.kp_check_documents(lambda c: session.gdb_cmd(c, timeout=600),
                                     [p.spec for p in places], validate=validator.validate)
    mismatches = oracle.compare(places, verdicts, ours)
    report = oracle.report(kernel, places, verdicts, mismatches)
    (folder / "report.txt").write_text(report)
    (folder / "verdicts.json").write_text(
        json.dumps(oracle.results_json(kernel, places, verdicts, ours), indent=1) + "\n")
    counts = f"{oracle.counts_table(places, verdicts)}(report: {folder / 'report.txt'})"
    if mismatches:
        pytest.fail(f"{oracle.mismatch_table(mismatches, per_class=12)}\n{counts}",
                    pytrace=False)
    print(f"\n{counts}")
