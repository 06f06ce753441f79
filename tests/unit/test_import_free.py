"""Importing gdb_kprobe, or any module of it, registers nothing with gdb and touches no
target; gdb_kprobe.plugin.load() is the one place that does, once."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import types

from conftest import isolate_plugin_modules


class Forbidden:
    """Any use raises: a gdb API that importing must not call."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str):
        raise AssertionError(f"importing gdb_kprobe used gdb.{self._what}.{name}")

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"importing gdb_kprobe called gdb.{self._what}")


def strict_gdb(monkeypatch, request) -> types.ModuleType:
    """A gdb module whose registration and execution entry points all raise."""
    fake = types.ModuleType("gdb")
    fake.error = type("error", (RuntimeError,), {})
    fake.MemoryError = type("MemoryError", (fake.error,), {})
    fake.GdbError = type("GdbError", (Exception,), {})
    fake.events = Forbidden("events")
    fake.execute = Forbidden("execute")
    fake.parameter = Forbidden("parameter")
    fake.selected_inferior = Forbidden("selected_inferior")
    fake.current_progspace = Forbidden("current_progspace")

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"importing gdb_kprobe made a {type(self).__mro__[1].__name__}")

    for name in ("Command", "Parameter", "Breakpoint"):
        setattr(fake, name, type(name, (), {"__init__": refuse}))
    for index, name in enumerate(("COMMAND_DATA", "COMMAND_MAINTENANCE", "COMMAND_SUPPORT",
                                  "COMMAND_STACK", "PARAM_BOOLEAN", "PARAM_ENUM", "PARAM_STRING",
                                  "COMPLETE_NONE", "COMPLETE_SYMBOL", "COMPLETE_FILENAME")):
        setattr(fake, name, index)
    unwinder = types.ModuleType("gdb.unwinder")
    unwinder.Unwinder = type("Unwinder", (), {"__init__": refuse})
    unwinder.register_unwinder = Forbidden("unwinder.register_unwinder")
    decorator = types.ModuleType("gdb.FrameDecorator")
    decorator.FrameDecorator = type("FrameDecorator", (), {})
    fake.unwinder = unwinder
    fake.frame_filters = types.MappingProxyType({})          # read-only: no filter added
    monkeypatch.setitem(sys.modules, "gdb", fake)
    monkeypatch.setitem(sys.modules, "gdb.unwinder", unwinder)
    monkeypatch.setitem(sys.modules, "gdb.FrameDecorator", decorator)
    isolate_plugin_modules(request)
    return fake


def all_modules() -> list[str]:
    import gdb_kprobe
    return ["gdb_kprobe"] + [info.name for info in
                             pkgutil.walk_packages(gdb_kprobe.__path__, "gdb_kprobe.")]


def test_importing_every_module_registers_nothing(monkeypatch, request):
    strict_gdb(monkeypatch, request)
    names = all_modules()
    assert len(names) > 40
    for name in names:
        importlib.import_module(name)


def test_load_registers_everything_once(fake_gdb):
    made: dict[str, list] = {"command": [], "parameter": [], "unwinder": [], "events": []}

    def recorder(kind):
        return lambda self, name, *args, **kwargs: made[kind].append(name)

    fake_gdb.Command = type("Command", (), {"__init__": recorder("command")})
    fake_gdb.Parameter = type("Parameter", (), {"__init__": recorder("parameter")})
    fake_gdb.unwinder.Unwinder = type("Unwinder", (), {"__init__": lambda self, name: None})
    fake_gdb.unwinder.register_unwinder = lambda *args, **kwargs: made["unwinder"].append(args)
    fake_gdb.execute = lambda *args, **kwargs: ""
    fake_gdb.events = types.SimpleNamespace(**{
        name: types.SimpleNamespace(connect=lambda function, _name=name:
                                    made["events"].append(_name))
        for name in ("cont", "stop", "memory_changed", "exited", "new_objfile",
                     "clear_objfiles", "inferior_call", "before_prompt", "new_thread")})
    from gdb_kprobe import plugin
    plugin.load()
    plugin.load()                        # a second `source gdbinit.py` adds nothing
    names = ["list", "show", "hooks", "modules", "sim", "check", "blacklist", "kaslr", "locals", "where"]
    assert sorted(made["command"]) == sorted(["kp"] + [f"kp-{name}" for name in names]
                                             + [f"kp {name}" for name in names])
    assert made["parameter"] == ["kp-debug", "kp-color", "kp-unwind", "kp-read-block"]
    assert len(made["unwinder"]) == 1 and "gdb-kprobe" in fake_gdb.frame_filters
    # one listener per gdb event for the whole plugin (the hooks go through the cache
    # registry), and none on `stop`: each is a call into Python at every stop (#19)
    assert all(made["events"].count(name) == 1 for name in
               ("cont", "new_objfile", "clear_objfiles", "before_prompt", "new_thread"))
    assert "stop" not in made["events"]
    assert len(plugin.loaded_commands()) == 10


LIBRARY_LAYERS = ("arch", "target", "kernel", "analysis", "ui")


def library_modules() -> list[str]:
    return [name for name in all_modules()
            if name.count(".") == 2 and name.split(".")[1] in LIBRARY_LAYERS]


def test_library_modules_declare_all(fake_gdb):
    """Every module below the gdb machinery says what it offers (drgn's helpers do)."""
    missing, wrong = [], []
    for name in library_modules():
        module = importlib.import_module(name)
        if not hasattr(module, "__all__"):
            missing.append(name)
        elif not set(module.__all__) <= set(dir(module)):
            wrong.append(f"{name}: {sorted(set(module.__all__) - set(dir(module)))}")
    assert not missing and not wrong, f"no __all__: {missing}; names not there: {wrong}"


def test_model_functions_are_typed(fake_gdb):
    """The public functions of kernel/ and analysis/ annotate every parameter and the
    return value."""
    import inspect
    untyped = []
    for name in library_modules():
        if name.split(".")[1] not in ("kernel", "analysis"):
            continue
        module = importlib.import_module(name)
        for public in module.__all__:
            function = getattr(module, public)
            if not inspect.isfunction(function):
                continue
            signature = inspect.signature(function)
            if signature.return_annotation is inspect.Signature.empty or any(
                    parameter.annotation is inspect.Parameter.empty
                    for parameter in signature.parameters.values()):
                untyped.append(f"{name}.{public}")
    assert not untyped, f"untyped public functions: {untyped}"
