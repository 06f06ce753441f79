"""The one cache registry: every cache of the plugin says until which gdb event it holds,
and one function clears them (pwndbg's `cache_until("stop")`, one place for all).

    @cache.cache_until("objfile")          # memoize a function until the symbols change
    def layout(name): ...

    cache.register(_blocks.clear, *cache.MEMORY)   # or clear a container of one's own

Events are gdb's event names (gdb.events.<name>), plus two of ours: "objfile" for
new_objfile and clear_objfiles, and "relocate" for kp-kaslr --relocate. plugin.load()
connects gdb's events (`install()`); until then nothing is cleared by gdb, which is what
unit tests without gdb want.

The plugin's other hooks on gdb events that come at every stop (before_prompt) are
registered here too, so that each gdb event has one Python listener for the whole plugin,
and an event nothing is registered for has none: every listener is a call into Python at
every stop (issue #19). Memory caches end when the target resumes ("cont"), not again at
the stop that follows; the stops that come without a resume (attaching, opening a core)
come with new threads ("new_thread").
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

__all__ = ["MEMORY", "RESUME", "OBJFILE", "register", "cache_until", "clear", "install"]

F = TypeVar("F", bound=Callable[..., Any])

# until the target runs again, memory is written, or the symbols change: anything read
# from target memory. Not "stop": every stop of a running target follows a "cont", and
# the ones that do not (target remote, core-file) bring their threads ("new_thread")
MEMORY = ("cont", "new_thread", "memory_changed", "exited", "inferior_call", "objfile")
# until the target runs again: frame labels made while gdb builds the frames of a stop
# (some before the stop event), so "stop" must not clear them
RESUME = ("cont", "objfile")
OBJFILE = ("objfile",)

_GDB_EVENTS = {"cont": ("cont",), "stop": ("stop",), "memory_changed": ("memory_changed",),
               "exited": ("exited",), "inferior_call": ("inferior_call",),
               "new_thread": ("new_thread",),
               "objfile": ("new_objfile", "clear_objfiles"),
               "clear_objfiles": ("clear_objfiles",),
               "corefile_changed": ("corefile_changed",),          # gdb 17+
               "before_prompt": ("before_prompt",),
               "relocate": ()}                                     # ours: clear("relocate")
_clearers: dict[str, list[Callable[[], None]]] = {name: [] for name in _GDB_EVENTS}
_installed = False
_connected: set[str] = set()       # gdb events with our listener


def register(clear_function: Callable[[], None], *events: str) -> None:
    """Call `clear_function()` whenever one of `events` happens."""
    for event in events:
        if event not in _clearers:
            raise ValueError(f"unknown cache event {event!r}; known: {', '.join(_clearers)}")
        _clearers[event].append(clear_function)
        if _installed:                 # a module imported after load(): its events too
            _connect(event)


def cache_until(*events: str) -> Callable[[F], F]:
    """Memoize a function (by its arguments) until one of `events`; `.cache_clear()` too."""
    def decorate(function: F) -> F:
        cached = functools.lru_cache(maxsize=None)(function)
        register(cached.cache_clear, *events)
        return cached          # type: ignore[return-value]
    return decorate


def clear(event: str) -> None:
    """Clear every cache registered for `event` (the one place caches are dropped)."""
    for clear_function in _clearers[event]:
        clear_function()


def install() -> None:
    """Connect gdb's events to `clear` (plugin.load() calls this once): one listener per
    gdb event that something is registered for."""
    global _installed
    if _installed:
        return
    _installed = True
    for ours, functions in _clearers.items():
        if functions:
            _connect(ours)


def _connect(ours: str) -> None:
    import gdb        # only here: the rest of this module is plain Python
    for name in _GDB_EVENTS[ours]:
        if name in _connected:
            continue
        registry = getattr(gdb.events, name, None)          # some are newer than gdb 13
        if registry is None:
            continue
        _connected.add(name)
        ours_of_it = tuple(o for o, names in _GDB_EVENTS.items() if name in names)
        registry.connect(lambda *_args, _ours=ours_of_it: _dispatch(_ours))


def _dispatch(events: tuple[str, ...]) -> None:
    for event in events:
        clear(event)
