"""Array-leaf flattening: stable paths, array leaves only, and no reference cycles."""

from __future__ import annotations

import gc
import weakref

from cgraph.core.tree import array_leaves


class _Mem:
    def __init__(self, ptr):
        self.ptr = ptr


class FakeArray:
    """Anything with `.data.ptr` counts as device memory."""

    def __init__(self, ptr):
        self.data = _Mem(ptr)


def test_array_leaves_name_their_paths():
    a, b = FakeArray(16), FakeArray(32)
    found = array_leaves(((a, 3), {"out": b, "n": 7}))
    assert found == [("[0][0]", a), ("[1]['out']", b)]


def test_array_leaves_leave_no_cycle_holding_the_arrays():
    a = FakeArray(64)
    ref = weakref.ref(a)
    gc.disable()
    try:
        array_leaves(([a],))
        del a
        assert ref() is None  # freed by reference counting alone, without the GC
    finally:
        gc.enable()
