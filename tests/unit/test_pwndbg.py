"""pwndbg integration against a stand-in pwndbg: a module tree with only the API surface
gdb_kprobe.integration.pwndbg reads (pwndbg itself is not on PyPI and is never installed here)."""
from __future__ import annotations

import enum
import sys
import types

import pytest

KP_COMMANDS = {"kp-list", "kp-show", "kp-hooks", "kp-modules", "kp-sim", "kp-check", "kp-blacklist",
               "kp-kaslr", "kp-locals", "kp-where"}


class _Param:
    """pwndbg.lib.config.Parameter as the colour code uses it: str() and bool()."""

    def __init__(self, value) -> None:
        self.value = value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __str__(self) -> str:
        return str(self.value)


def _tag(name: str):
    return lambda text: f"<{name}>{text}</{name}>"


def _module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


class Category(str, enum.Enum):
    MISC = "Misc"
    KERNEL = "Kernel"


def install_pwndbg(monkeypatch, layout: str = "aglib", categories: bool = True,
                   colours: bool = True) -> types.SimpleNamespace:
    """A loaded pwndbg in sys.modules: `aglib` is the newer layout (pwndbg.config,
    pwndbg.aglib.nearpc), `gdblib` the older one (pwndbg.gdblib.config, .nearpc)."""
    config = types.SimpleNamespace(syntax_highlight=_Param(True))
    root = _module(monkeypatch, "pwndbg")
    own = types.SimpleNamespace(config=config, disable=_Param(False))
    existing = types.SimpleNamespace(__name__="context", command_name="context", __doc__="ctx",
                                     description="ctx", shell=False, is_alias=False,
                                     aliases=["ctx"], category=Category.MISC)
    commands = _module(monkeypatch, "pwndbg.commands", commands=[existing],
                       command_names={"context"})
    if categories:
        commands.CommandCategory = Category
    _module(monkeypatch, "pwndbg.color", disable_colors=own.disable)
    if colours:
        _module(monkeypatch, "pwndbg.color.context", banner=_tag("banner"))
        _module(monkeypatch, "pwndbg.color.message", hint=_tag("hint"))
        _module(monkeypatch, "pwndbg.color.memory", c=types.SimpleNamespace(code=_tag("code")))
        _module(monkeypatch, "pwndbg.color.syntax_highlight",
                syntax_highlight=lambda text, filename: f"<asm {filename}>{text}</asm>")
    nearpc = types.SimpleNamespace(symbol=_tag("symbol"))
    if layout == "aglib":
        root.config = config
        _module(monkeypatch, "pwndbg.aglib")
        _module(monkeypatch, "pwndbg.aglib.nearpc", c=nearpc)
    else:
        _module(monkeypatch, "pwndbg.gdblib")
        _module(monkeypatch, "pwndbg.gdblib.config", config=config)
        _module(monkeypatch, "pwndbg.gdblib.nearpc", c=nearpc)
    own.commands = commands
    return own


def listing_new(pwndbg_commands) -> list[tuple]:
    """What pwndbg's newer `pwndbg [filter]` reads (pwndbg/commands/pwndbg_.py)."""
    return sorted((c.command_name, c.aliases, c.category, c.description.splitlines()[0])
                  for c in pwndbg_commands.commands)


def listing_old(pwndbg_commands) -> list[tuple]:
    """What pwndbg's older listing reads (pwndbg/commands/misc.py list_and_filter_commands)."""
    return sorted((c.__name__, c.aliases, c.category, c.__doc__.strip().splitlines()[0])
                  for c in pwndbg_commands.commands if not (c.shell or c.is_alias))


@pytest.fixture
def gdb_stub(fake_gdb, monkeypatch):
    """fake_gdb plus what this integration touches: a before_prompt registry, gdb.parameter,
    gdb.write, and a count of the commands made with gdb."""
    made = []
    prompt_hooks = []
    fake_gdb.events.before_prompt = types.SimpleNamespace(connect=prompt_hooks.append)
    fake_gdb.parameter = lambda name: True
    fake_gdb.written = []
    fake_gdb.write = fake_gdb.written.append
    fake_gdb.Command = type("Command", (), {"__init__": lambda self, name, *a, **k:
                                             made.append(name)})
    fake_gdb.made, fake_gdb.prompt_hooks = made, prompt_hooks
    # a terminal gdb styles (target/terminal.py): kp-color auto then follows pwndbg
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr("os.isatty", lambda fd: True)
    return fake_gdb


class _Setting:
    """A `set kp-…` parameter as gdb drives it: the value is assigned, then
    get_set_string() runs (which is where the parameter passes it on)."""

    def __init__(self, parameter) -> None:
        self.parameter = parameter

    @property
    def value(self):
        return self.parameter.value

    @value.setter
    def value(self, value) -> None:
        self.parameter.value = value
        self.parameter.get_set_string()

    def get_set_string(self) -> str:
        return self.parameter.get_set_string()


def load_plugin():
    """plugin.load() as gdbinit.py runs it; then (plugin, palette maker, the pwndbg
    integration, the kp-debug and kp-color parameters)."""
    from gdb_kprobe import plugin
    from gdb_kprobe.commands import base
    from gdb_kprobe.integration import parameters, pwndbg
    from gdb_kprobe.ui import colour
    plugin.load()
    debug, colour_setting, *_ = parameters._registered
    return (plugin, types.SimpleNamespace(palette=base.palette, PLAIN=colour.PLAIN), pwndbg,
            types.SimpleNamespace(_debug=_Setting(debug), _colour=_Setting(colour_setting)))


# -- commands in pwndbg's list ------------------------------------------------------------

@pytest.mark.parametrize("layout", ["aglib", "gdblib"])
def test_commands_listed_under_kernel_without_second_gdb_registration(gdb_stub, monkeypatch,
                                                                      layout):
    pwndbg = install_pwndbg(monkeypatch, layout)
    _, _, compat, _ = load_plugin()
    kernel = [row for row in listing_new(pwndbg.commands) if row[2] == Category.KERNEL]
    assert {row[0] for row in kernel} == KP_COMMANDS
    lines = dict((row[0], row[3]) for row in kernel)      # one short clause per command
    assert lines["kp-list"].startswith("List the registered kprobes")
    assert lines["kp-show"] == "Show how the kprobes at a place are built."
    assert all(line.endswith(".") and not line.endswith("..") for line in lines.values())
    old = {row[0] for row in listing_old(pwndbg.commands) if row[2] is Category.KERNEL}
    assert old == KP_COMMANDS
    # gdb got each command once (ours), pwndbg's list got entries that are not gdb commands
    assert sorted(n for n in gdb_stub.made if n.startswith("kp-")) == sorted(KP_COMMANDS)
    assert not any(isinstance(c, gdb_stub.Command) for c in pwndbg.commands.commands)
    assert KP_COMMANDS <= pwndbg.commands.command_names
    assert compat.attached()


def test_attach_twice_lists_once(gdb_stub, monkeypatch):
    pwndbg = install_pwndbg(monkeypatch)
    _, _, compat, _ = load_plugin()
    compat.attach()
    compat._state["attached"] = False          # as if attach ran again (e.g. re-source)
    compat.attach()
    names = [c.command_name for c in pwndbg.commands.commands]
    assert len(names) == len(set(names)) == len(KP_COMMANDS) + 1


def test_pwndbg_loaded_after_us_attaches_at_the_next_prompt(gdb_stub, monkeypatch):
    _, colour, compat, _ = load_plugin()
    assert not compat.attached() and len(gdb_stub.prompt_hooks) >= 1
    pwndbg = install_pwndbg(monkeypatch)
    for hook in gdb_stub.prompt_hooks:
        hook()
    assert compat.attached()
    assert {c.command_name for c in pwndbg.commands.commands} >= KP_COMMANDS


def test_pwndbg_reload_gets_the_commands_listed_again(gdb_stub, monkeypatch):
    pwndbg = install_pwndbg(monkeypatch)
    load_plugin()
    fresh = [c for c in pwndbg.commands.commands if c.command_name == "context"]
    pwndbg.commands.commands = fresh                   # what pwndbg's `reload` leaves
    for hook in gdb_stub.prompt_hooks:
        hook()
    assert {c.command_name for c in fresh} == KP_COMMANDS | {"context"}
    assert len(fresh) == len(KP_COMMANDS) + 1


# -- colours from pwndbg's theme ----------------------------------------------------------

@pytest.mark.parametrize("layout", ["aglib", "gdblib"])
def test_palette_takes_pwndbg_theme_colours(gdb_stub, monkeypatch, layout):
    install_pwndbg(monkeypatch, layout)
    _, colour, _, _ = load_plugin()
    pal = colour.palette()
    assert pal.enabled
    assert pal.flag("[GONE]") == "<hint>[GONE]</hint>"
    assert pal.heading("probe 1") == "<banner>probe 1</banner>"
    assert pal.address("ffffffff81000000") == "<code>ffffffff81000000</code>"
    assert pal.symbol("inet_csk_accept") == "<symbol>inet_csk_accept</symbol>"
    assert pal.asm("push %rbp") == "<asm .asm>push %rbp</asm>"


def test_kp_show_renders_with_theme_addresses(gdb_stub, monkeypatch):
    install_pwndbg(monkeypatch)
    _, colour, _, _ = load_plugin()
    from gdb_kprobe.ui import render
    insn = types.SimpleNamespace(address=0xFFFFFFFF81000000, raw=b"\x55", asm="push %rbp")
    line, = render._insn_lines([insn], colour.palette())
    assert "<code>ffffffff81000000</code>:" in line and "<asm .asm>push %rbp</asm>" in line


def test_pwndbg_disable_colors_and_kp_color_override(gdb_stub, monkeypatch):
    pwndbg = install_pwndbg(monkeypatch)
    _, colour, _, settings = load_plugin()
    pwndbg.disable.value = True
    assert not colour.palette().enabled                 # kp-color auto follows pwndbg
    assert colour.palette().flag("x") == "x"
    settings._colour.value = "on"                       # an explicit setting wins
    assert colour.palette().flag("x") == "<hint>x</hint>"
    pwndbg.disable.value = False
    settings._colour.value = "off"
    assert not colour.palette().enabled


def test_pwndbg_syntax_highlight_off_leaves_asm_plain(gdb_stub, monkeypatch):
    pwndbg = install_pwndbg(monkeypatch, "gdblib")
    pwndbg.config.syntax_highlight.value = False
    _, colour, _, _ = load_plugin()
    assert colour.palette().asm("push %rbp") == "push %rbp"


def test_no_color_env_wins_over_the_theme(gdb_stub, monkeypatch):
    install_pwndbg(monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    _, colour, _, _ = load_plugin()
    assert colour.palette() is colour.PLAIN


# -- without pwndbg, or with a pwndbg whose API differs -----------------------------------

def test_without_pwndbg_everything_is_plain_gdb(gdb_stub, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    _, colour, compat, settings = load_plugin()
    assert "pwndbg" not in sys.modules
    assert compat.theme() is None and not compat.attached() and compat.notes == []
    settings._colour.value = "on"
    pal = colour.palette()
    assert pal.theme == {}
    assert pal.flag("[GONE]") == "\x1b[33m[GONE]\x1b[0m"
    assert pal.heading("h") == "\x1b[1mh\x1b[0m"
    assert pal.address("ffff") == "\x1b[36mffff\x1b[0m"
    settings._colour.value = "auto"                     # gdb's `style enabled` (stub: on)
    assert colour.palette().enabled
    assert colour.PLAIN.flag("[GONE]") == "[GONE]"


def test_pwndbg_without_command_categories_is_not_listed_and_says_why(gdb_stub, monkeypatch):
    pwndbg = install_pwndbg(monkeypatch, categories=False)
    _, colour, compat, settings = load_plugin()
    assert [c.command_name for c in pwndbg.commands.commands] == ["context"]
    assert any("commands not listed (AttributeError" in note for note in compat.notes)
    assert colour.palette().flag("x") == "<hint>x</hint>"       # the theme still applies
    settings._debug.value = True
    assert "gdb-kprobe: pwndbg: commands not listed" in settings._debug.get_set_string()


def test_pwndbg_without_theme_modules_keeps_our_colours(gdb_stub, monkeypatch):
    install_pwndbg(monkeypatch, colours=False)
    _, colour, compat, settings = load_plugin()
    settings._colour.value = "on"
    pal = colour.palette()
    assert pal.flag("x") == "\x1b[33mx\x1b[0m"
    assert pal.symbol("s") == "<symbol>s</symbol>"              # nearpc is still there
    assert any("no pwndbg colour for 'flag'" in note for note in compat.notes)


def test_theme_function_that_fails_falls_back_to_ours(gdb_stub, monkeypatch):
    install_pwndbg(monkeypatch)
    sys.modules["pwndbg.color.message"].hint = lambda text: 1 / 0

    class BadConfig:                     # a colour name pwndbg cannot parse
        def __getattr__(self, name):
            raise KeyError(name)

    sys.modules["pwndbg.color.memory"].c = BadConfig()
    _, colour, compat, _ = load_plugin()
    pal = colour.palette()
    assert pal.flag("x") == "\x1b[33mx\x1b[0m"
    assert pal.address("ffff") == "\x1b[36mffff\x1b[0m"
    assert any("pwndbg.color.memory.c.code: KeyError" in note for note in compat.notes)


def test_theme_reading_that_fails_leaves_our_palette(gdb_stub, monkeypatch):
    install_pwndbg(monkeypatch)

    class Unreadable:                    # disable-colors whose value cannot be read
        def __bool__(self):
            raise RuntimeError("no value")

    sys.modules["pwndbg.color"].disable_colors = Unreadable()
    _, colour, compat, settings = load_plugin()
    settings._colour.value = "on"
    assert compat.theme() is None
    assert colour.palette().flag("x") == "\x1b[33mx\x1b[0m"
    assert any("theme not used (RuntimeError" in note for note in compat.notes)


def test_broken_pwndbg_commands_list_does_not_break_loading(gdb_stub, monkeypatch):
    pwndbg = install_pwndbg(monkeypatch)
    pwndbg.commands.commands = None                    # not a list at all
    _, colour, compat, _ = load_plugin()      # loads without raising
    assert compat.attached()
    assert any("commands not listed (TypeError" in note for note in compat.notes)
    assert colour.palette().enabled
