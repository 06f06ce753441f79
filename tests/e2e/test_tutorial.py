"""docs/tutorial.md replayed on each lab kernel: every step runs, every output keeps its shape
(the checker is qemu/tutorial.py; `make tutorial-check` runs the same). The checker's own
rules are tested without a lab in tests/unit/test_tutorial_shapes.py."""
from __future__ import annotations

import pytest

from qemu import tutorial


@pytest.mark.e2e
def test_the_tutorial_replays(kernel, gdb_binary):
    outcome = tutorial.replay(kernel, gdb_binary)
    assert not outcome.failures, "\n\n".join(outcome.failures)
    assert outcome.steps > 20
