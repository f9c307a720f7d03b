"""BatchDescriptor: a frozen, hashable, checked value; relax_for_mixed."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgraph import BatchDescriptor
from cgraph.core.descriptors import eager_descriptor
from cgraph.core.errors import ArgumentError, ArgumentTypeError

descriptors = st.integers(1, 4096).flatmap(
    lambda n: st.builds(BatchDescriptor, st.just(n), st.none() | st.integers(1, n), st.booleans(),
                        st.booleans(), st.integers(0, 16))
)


def test_defaults():
    d = BatchDescriptor(7)
    assert (d.num_tokens, d.num_reqs, d.uniform, d.has_lora, d.num_active_loras) == (7, None, False, False, 0)


def test_is_frozen():
    d = BatchDescriptor(7)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        d.num_tokens = 8
    assert not hasattr(d, "__dict__")  # slotted


@given(descriptors)
def test_equal_fields_give_equal_hashes_and_dict_keys(d):
    twin = BatchDescriptor(d.num_tokens, d.num_reqs, d.uniform, d.has_lora, d.num_active_loras)
    assert twin == d and hash(twin) == hash(d)
    assert {d: "graph"}[twin] == "graph"
    assert attrs.evolve(d, num_tokens=d.num_tokens + 1) != d


@given(descriptors)
def test_relax_for_mixed_drops_reqs_and_uniform_keeps_lora(d):
    r = d.relax_for_mixed()
    assert (r.num_tokens, r.num_reqs, r.uniform) == (d.num_tokens, None, False)
    assert (r.has_lora, r.num_active_loras) == (d.has_lora, d.num_active_loras)
    assert r.relax_for_mixed() == r


def test_numpy_scalars_become_python_values():
    d = BatchDescriptor(np.int64(16), np.int32(4), np.bool_(True), np.True_, np.uint8(2))
    assert d == BatchDescriptor(16, 4, True, True, 2)
    assert type(d.num_tokens) is int and type(d.num_reqs) is int and type(d.uniform) is bool


@given(st.integers(1, 10**6))
def test_eager_descriptor_equals_checked_construction(n):
    fast = eager_descriptor(n)
    assert fast == BatchDescriptor(n) and hash(fast) == hash(BatchDescriptor(n))
    assert repr(fast) == repr(BatchDescriptor(n))


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(num_tokens=True), ArgumentTypeError, ["num_tokens", "True", "bool"]),
    (dict(num_tokens=np.bool_(True)), ArgumentTypeError, ["num_tokens", "bool"]),
    (dict(num_tokens=4.0), ArgumentTypeError, ["num_tokens", "4.0", "float"]),
    (dict(num_tokens="4"), ArgumentTypeError, ["num_tokens", "'4'", "str"]),
    (dict(num_tokens=0), ArgumentError, ["num_tokens", ">= 1", "got 0"]),
    (dict(num_tokens=-3), ArgumentError, ["num_tokens", "got -3"]),
    (dict(num_tokens=4, num_reqs=0), ArgumentError, ["num_reqs", "got 0"]),
    (dict(num_tokens=4, num_reqs=False), ArgumentTypeError, ["num_reqs", "bool"]),
    (dict(num_tokens=4, num_reqs=5), ArgumentError, ["num_reqs=5", "num_tokens=4", "num_reqs <= num_tokens"]),
    (dict(num_tokens=4, uniform=1), ArgumentTypeError, ["uniform", "bool", "True or False"]),
    (dict(num_tokens=4, has_lora="yes"), ArgumentTypeError, ["has_lora", "'yes'"]),
    (dict(num_tokens=4, num_active_loras=-1), ArgumentError, ["num_active_loras", "got -1"]),
    (dict(num_tokens=4, num_active_loras=True), ArgumentTypeError, ["num_active_loras", "bool"]),
])
def test_bad_fields_raise_clear_errors(kwargs, exc, words):
    with pytest.raises(exc) as err:
        BatchDescriptor(**kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
