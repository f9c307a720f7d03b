"""Data-parallel shard/gather bookkeeping, simulated with NumPy ranks (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.core.sharding import ShardPlan, pack_rank_outputs, shard_items, unpack_gathered


def _simulate(tokens, num_ranks, hidden=3, seed=None):
    """Each 'rank' encodes its items (random outputs), pads, all-gathers; then unpack."""
    rng = np.random.default_rng(seed)
    truth = [rng.standard_normal((t, hidden)).astype(np.float32) for t in tokens]
    plan = shard_items(tokens, num_ranks)
    blocks = []
    for r in range(num_ranks):
        block = np.full((plan.max_rank_tokens, hidden), np.nan, np.float32)  # poison
        local = [truth[i] for i in plan.local_items(r)]
        blocks.append(pack_rank_outputs(local, plan, r, block))
    gathered = np.concatenate(blocks, axis=0)  # what an all-gather returns
    return truth, plan, gathered, unpack_gathered(gathered, plan)


def test_issue_example_shard_layout():
    plan = shard_items([1000, 100, 200, 50], 2)
    assert plan.local_items(0) == (0,) and plan.local_items(1) == (2, 1, 3)
    assert plan.rank_tokens == (1000, 350) and plan.max_rank_tokens == 1000
    assert plan.gather_slices() == ((0, 1000), (1200, 1300), (1000, 1200), (1300, 1350))


def test_roundtrip_restores_input_order_and_values():
    truth, plan, gathered, out = _simulate([7, 1, 30, 4, 4, 12], 3)
    assert len(out) == len(truth)
    for t, o in zip(truth, out):
        np.testing.assert_array_equal(o, t)
    # padding rows were zeroed, never left as poison
    assert not np.isnan(gathered).any()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=30), st.integers(1, 5), st.integers(0, 2**31))
def test_roundtrip_property(tokens, ranks, seed):
    truth, plan, gathered, out = _simulate(tokens, ranks, seed=seed)
    assert sorted(i for r in range(ranks) for i in plan.local_items(r)) == list(range(len(tokens)))
    for t, o in zip(truth, out):
        np.testing.assert_array_equal(o, t)
    assert gathered.shape[0] == ranks * plan.max_rank_tokens
    assert not np.isnan(gathered).any()


def test_balance_by_custom_sizes():
    plan = shard_items([4, 4, 4], 2, sizes=[1, 10, 1])
    assert plan.local_items(0) == (1,) and plan.local_items(1) == (0, 2)


def test_numpy_inputs_are_accepted():
    plan = shard_items(np.array([1000, 100, 200, 50]), np.int64(2), sizes=np.array([1000, 100, 200, 50]))
    assert plan == shard_items([1000, 100, 200, 50], 2)
    assert plan.local_items(np.int64(1)) == (2, 1, 3)


def test_bad_inputs_raise_clear_errors():
    plan = shard_items([3, 2], 2)
    with pytest.raises(ArgumentError, match="sizes has 1 entries"):
        shard_items([3, 2], 2, sizes=[1])
    with pytest.raises(ArgumentError, match="encodes 1 items"):
        pack_rank_outputs([], plan, 0, np.zeros((3, 1)))
    with pytest.raises(ArgumentError, match="rows"):
        pack_rank_outputs([np.zeros((2, 1))], plan, 0, np.zeros((3, 1)))
    with pytest.raises(ArgumentError, match="gather block"):
        pack_rank_outputs([np.zeros((3, 1))], plan, 0, np.zeros((4, 1)))
    with pytest.raises(ArgumentError, match="gathered buffer"):
        unpack_gathered(np.zeros((5, 1)), plan)
    with pytest.raises(ArgumentError, match=r"rank must be an int in \[0, 1\], got 2"):
        plan.local_items(2)
    with pytest.raises(ArgumentError, match=r"item_tokens\[1\] must be an int >= 1, got 0"):
        shard_items([3, 0], 2)
    with pytest.raises(ArgumentTypeError, match="item_tokens"):
        shard_items({3: 1}, 2)
    with pytest.raises(ArgumentError, match="num_ranks"):
        shard_items([3], 0)
    with pytest.raises(ArgumentTypeError, match="ShardPlan"):
        unpack_gathered(np.zeros((3, 1)), [3, 2])
    with pytest.raises(ArgumentError, match="each of the 3 items once"):
        ShardPlan((3, 2, 1), plan.balance)
    with pytest.raises(ArgumentTypeError, match="out must be an array"):
        pack_rank_outputs([np.zeros((3, 1))], plan, 0, [0, 0, 0])
    with pytest.raises(ArgumentTypeError, match="outputs must be a sequence"):
        pack_rank_outputs(np.zeros((3, 1)), plan, 0, np.zeros((3, 1)))
    with pytest.raises(ArgumentTypeError, match="output for item 0 must be an array"):
        pack_rank_outputs([[1, 2, 3]], plan, 0, np.zeros((3, 1)))
