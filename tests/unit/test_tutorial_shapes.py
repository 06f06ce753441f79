"""The tutorial checker's own logic (qemu/tutorial.py): parsing docs/tutorial.md, output
shapes, comparison and update; tests/e2e/test_tutorial.py replays the tutorial itself."""
from __future__ import annotations

from qemu import tutorial


def test_the_document_parses_and_its_excerpts_are_current():
    blocks = tutorial.parse(tutorial.DOC.read_text())
    assert {b.where for b in blocks} >= {"guest", "gdb", "host", "excerpt"}
    for block in blocks:
        if block.where == "excerpt":
            assert tutorial.check_excerpt(block) is None, block.label()
        else:
            assert block.commands, block.label()


def test_shapes_keep_words_and_drop_numbers(monkeypatch):
    shape = tutorial.shape
    assert shape("ffffffff81855477  k  inet_csk_accept+0x7") == \
        shape("ffffffff81af06fb  k  inet_csk_accept+0xb")
    assert shape("      ffffffff81855470:  e8 bb 62 81 ff   call   0xffffffff8106b730") == \
        shape("      ffffffff81af06f4:  e8 f7 03 5a ff   call   0xffffffff81090af0")
    assert shape("[    2.56] kp_lab_kprobe: planted") == shape("kp_lab_kprobe: planted")
    assert shape("  local  err   int   +0x4(%rsp)   -6291456") == \
        shape("  local  err   int   +0x4(%rsp)   12")
    assert shape("CFA-0x2c") != shape("CFA+0x2c")          # an operator is not a sign
    assert shape("[FTRACE]") != shape("[OPTIMIZED]")
    assert shape("/root/.cache/gdb-kprobe/kernels/6.1.0-56-cloud-amd64/modules/ab12/x.c:42") == \
        shape("/home/u/.cache/gdb-kprobe/kernels/6.12.117+deb12-cloud-amd64/modules/cd/x.c:7")
    # a cache anywhere (GDB_KPROBE_CACHE), and the document's form of its paths
    # (tutorial.for_readers)
    monkeypatch.setenv("GDB_KPROBE_CACHE", "/tmp/fresh/cache")
    assert shape("/tmp/fresh/cache/kernels/6.1.0-57-cloud-amd64/modules/ab12/x.c:42") == \
        shape("<cache>/kernels/<kernel>/modules/<sources>/x.c:42")
    assert shape("<cache>/kernels/<kernel>/modules/<sources>/x.c:42") == \
        shape("/home/u/.cache/gdb-kprobe/kernels/6.12.117+deb12-cloud-amd64/modules/cd/x.c:7")


def test_compare_ellipsis_unordered_and_noise():
    compare = tutorial.compare
    assert compare(["a 1", "...", "z 9"], ["a 2", "b", "c", "z 3"]) is None
    assert "line 4" in compare(["a 1", "...", "z 9"], ["a 2", "b", "c", "y 3"])
    assert compare(["x 1", "y 2"], ["y 5", "x 7"], unordered=True) is None
    assert compare(["x 1", "y 2"], ["y 5", "x 7"]) is not None
    assert compare(["a"], ["[Switching to Thread 1.2]", "a"]) is None
    assert "2 lines, expected 1" in compare(["a"], ["a", "b"])


def test_update_keeps_the_ellipsis_where_it_was():
    assert tutorial.updated(["h", "...", "t"], ["1", "2", "3", "4"]) == ["1", "...", "4"]
    assert tutorial.updated(["h", "..."], ["1", "2", "3"]) == ["1", "..."]
    assert tutorial.updated(["a"], ["1", "2"]) == ["1", "2"]


def test_untagged_steps_run_on_x86_kernels_only():
    """The lecture's untagged steps are x86-64's; the arm64 appendix's name their kernel."""
    untagged, arm64 = tutorial.parse("```console gdb\n(gdb) kp-list\n```\n\n"
                                     "```console gdb kernel=6.1-arm64\n(gdb) kp-kaslr\n```\n")
    assert [untagged.applies(k) for k in ("6.1", "6.12", "6.1-fp", "6.1-arm64")] == \
        [True, True, True, False]
    assert arm64.applies("6.1-arm64") and not arm64.applies("6.1")
    assert arm64.source == "6.1-arm64"
