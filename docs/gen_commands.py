"""Write docs/commands.md from the commands' own `help` text, so it cannot drift.

    python3 docs/gen_commands.py          # rewrite docs/commands.md
    python3 docs/gen_commands.py --check  # exit 1 if it is out of date (run by the tests)
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "commands.md"
EXAMPLES = {
    "kp-list": "kp-list\nffffffff8189ad74  k  inet_accept+0x14    [OPTIMIZED]\n"
               "ffffffff81354500  k  vfs_statx+0x0    [FTRACE]",
    "kp-check": "kp-check inet_accept+21 _stext+5\n"
                "inet_accept+21 -> inet_accept+0x15 (0xffffffff8189ad75)\n"
                "  register_kprobe(): rejected: -EILSEQ (no instruction that kprobes "
                "can probe starts here): not an instruction boundary: inside `sub    $0x10,%rsp` at "
                "inet_accept+0x14 (4 bytes)\n"
                "  kprobe_events:     rejected: -EILSEQ (no instruction that kprobes "
                "can probe starts here): not an instruction boundary: inside `sub    $0x10,%rsp` at "
                "inet_accept+0x14 (4 bytes)\n"
                "_stext+5 -> startup_64+0x5 (0xffffffff81000005)\n"
                "  register_kprobe(): rejected: -EILSEQ (no instruction that kprobes "
                "can probe starts here): not an instruction boundary: inside `lea    0x1a03f51(%rip),%rsp   "
                "     # 0xffffffff82a03f58` at startup_64+0x0 (7 bytes)\n"
                "  kprobe_events:     rejected: -EINVAL (the kernel refuses this place or "
                "spec): no ftrace call site in "
                "this function: kprobe_events refuses notrace functions (trace_kprobe: \"Could not "
                "probe notrace function\"); register_kprobe() from a module does not ask\n"
                "  kallsyms calls this address startup_64 (an alias of _stext at the same address)",
    "kp-show": "kp-show inet_csk_accept\n"
               "inet_csk_accept: 3 probes in the function, at +0x0 (kretprobe, kprobe) and "
               "+0x7 (kprobe)\n\n"
               "inet_csk_accept+0x0 (0xffffffff81855470): aggregate of 2 probes\n"
               "  mechanism: ftrace call: the function's fentry call site now calls an ftrace "
               "trampoline that calls kprobe_ftrace_handler(); no int3, no single-step\n"
               "  ... (the code, each probe's struct kprobe and struct kretprobe, per-CPU state)"
               "\n\ninet_csk_accept+0x7 (0xffffffff81855477): aggregate of 1 probe\n"
               "  mechanism: int3: the first byte is now int3: the CPU traps into "
               "kprobe_int3_handler(), which runs the pre_handler, single-steps the copy in "
               "ainsn.insn, then the post_handler\n"
               "  ...\n\n"
               "kp-show inet_csk_accept+7\n"
               "inet_csk_accept+0x7 (0xffffffff81855477): aggregate of 1 probe\n"
               "  ...\n"
               "also in inet_csk_accept: +0x0 (kretprobe, kprobe); kp-show inet_csk_accept "
               "shows every probe in it\n\n"
               "kp-show vfs_read\n"
               "no kprobe is registered in vfs_read (0xffffffff8134cc50, 0x30c bytes); kp-list "
               "shows the registered ones",
    "kp-locals": "kp-locals inet_accept --offsets\n"
                 "inet_accept (0xffffffff8189ad60, 0x98 bytes, net/ipv4/af_inet.c:767): 42 "
                 "instructions in 16 rows\n"
                 "offsets       n  probe        inlined      sock   newsock  flags  kern   sk1  "
                 " sk2   err         sk\n"
                 "+0x0          1  ok (ftrace)               %rdi   %rsi     %rdx   %rcx   -    "
                 " -     unalloc\n"
                 "+0x14         1  ok (probed)               %rdi   %r12     %rdx   %rcx   -    "
                 " -     unalloc\n"
                 "+0x18         1  ok                        %rdi   %r12     %rdx   %rcx   -    "
                 " -     +0x4(%rsp)\n"
                 "+0x4e..+0x53  3  ok           lock_sock()                                    "
                 "                    %rax\n"
                 "  ...\n"
                 "params: sock (struct socket *), newsock (struct socket *), flags (int), kern "
                 "(bool)\n"
                 "locals: sk1 (struct sock *), sk2 (struct sock *), err (int)\n"
                 "params of inlined lock_sock(): sk (struct sock *)",
    "kp-where": "kp-where\ncpu0 is handling a kprobe: inet_csk_accept+0x5 (current_kprobe "
                "0xff11000004c7c900, kprobe_status KPROBE_HIT_ACTIVE)\n  stage: pre-handler",
}

PWNDBG = """## With pwndbg

Source pwndbg's gdbinit first, then this one:

```
source /path/to/pwndbg/gdbinit.py
source /path/to/gdb-kprobe/gdbinit.py
```

`pwndbg -c kernel` then lists the commands above in pwndbg's Kernel category, their colours
follow pwndbg's theme (`banner-color`, `message-hint-color`, `memory-code-color`,
`syntax-highlight-style`; `set disable-colors on` turns them off under `set kp-color auto`),
and pwndbg's context display is left as it is. Loaded the other way round, the integration
attaches at the next prompt; `set kp-debug on` says what it did. See README.md, "pwndbg"."""


def help_texts() -> dict[str, str]:
    out = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex", f"source {ROOT / 'gdbinit.py'}",
                          "-ex", "help kp"], capture_output=True, text=True, check=True).stdout
    names = re.findall(r"^  (kp-[\w-]+)", out, re.M)
    texts = {"kp": out.strip()}
    for name in names:
        texts[name] = subprocess.run(
            ["gdb", "-q", "-nx", "-batch", "-ex", f"source {ROOT / 'gdbinit.py'}",
             "-ex", f"help {name}"], capture_output=True, text=True, check=True).stdout.strip()
    return texts


def render(texts: dict[str, str]) -> str:
    parts = ["# gdb-kprobe command reference",
             "",
             "Generated from the commands' own `help` by `docs/gen_commands.py`; do not edit.",
             "Every command also takes `--help`. Bad input ends in one line saying what is "
             "wrong and what to do.",
             "`--json` (kp-list, kp-show, kp-locals): fields and schemas in [json.md](json.md).",
             "", "```", texts["kp"], "```"]
    for name, text in texts.items():
        if name == "kp":
            continue
        parts += ["", f"## {name}", "", "```", text, "```"]
        if name in EXAMPLES:
            parts += ["", "Example:", "", "```", EXAMPLES[name], "```"]
    parts += ["", PWNDBG]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    text = render(help_texts())
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print("docs/commands.md is out of date: run python3 docs/gen_commands.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
