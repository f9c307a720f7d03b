"""cgraph.engine.heap.frozen_heap: the collector skips the objects alive at entry, and the
process's collector state is as it was afterwards (pure Python, runs anywhere)."""

from __future__ import annotations

import gc
import weakref

import pytest

from cgraph.engine.heap import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.other = None


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def _clean_collector():
    gc.unfreeze()
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_objects_alive_at_entry_are_frozen_and_thawed_after():
    keep = [_Node() for _ in range(100)]
    with frozen_heap():
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == 0
    assert len(keep) == 100


def test_a_cycle_that_was_alive_at_entry_is_not_collected_inside_but_is_after():
    ref = _cycle()  # garbage already, not collected yet
    with frozen_heap():
        gc.collect()
        assert ref() is not None, "a frozen object was scanned"
    gc.collect()
    assert ref() is None


def test_cycles_made_inside_are_still_collected():
    with frozen_heap():
        ref = _cycle()
        gc.collect()
        assert ref() is None


def test_the_collector_is_thawed_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_heap():
            assert gc.get_freeze_count() > 0
            raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_a_callers_own_freeze_and_a_disabled_collector_are_left_alone():
    gc.freeze()
    frozen = gc.get_freeze_count()
    with frozen_heap():
        pass
    assert gc.get_freeze_count() == frozen, "the caller's frozen objects must stay frozen"
    gc.unfreeze()
    gc.disable()
    with frozen_heap():
        assert gc.get_freeze_count() == 0
    assert not gc.isenabled()
