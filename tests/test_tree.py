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


def test_argument_leaves_use_the_call_s_own_paths():
    a, b, c = FakeArray(16), FakeArray(32), FakeArray(48)
    from cgraph.core.tree import argument_addresses, argument_leaves

    assert argument_leaves((a, [3, b]), {"out": c}) == [("args[0]", a), ("args[1][1]", b),
                                                        ("kwargs['out']", c)]
    assert argument_addresses((a,), {"out": c}) == (("args[0]", 16), ("kwargs['out']", 48))


def test_describe_argument_names_the_parameter():
    from cgraph.core.tree import describe_argument

    def step(x, bufs, *, out=None):
        return x

    assert describe_argument(step, "args[0]") == "x (positional argument 0)"
    assert describe_argument(step, "args[1][2]['k']") == "bufs[2]['k'] (positional argument 1)"
    assert describe_argument(step, "kwargs['out']") == "out (keyword argument)"
    assert describe_argument(step, "args[5]") == "args[5]"  # more arguments than parameters
    assert describe_argument(len, "args[0]") in ("obj (positional argument 0)", "args[0]")
