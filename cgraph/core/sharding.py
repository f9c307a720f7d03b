"""Shard and gather bookkeeping for data-parallel encoding (pure; no CuPy).

Every rank sees the same item list and computes the same ShardPlan: `load_balance` puts
items on ranks, each rank encodes its items, concatenates their outputs in assignment
order and pads them to `max_rank_tokens` rows; an all-gather stacks the ranks' blocks;
`gather_slices` says where each item's rows sit in that stacked buffer, in input order.
The array helpers only slice and assign, so they work on NumPy and CuPy arrays alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from cgraph.core.budgets import LoadBalance, load_balance
from cgraph.core.checks import check_instance, check_int_sequence
from cgraph.core.errors import ArgumentError, ArgumentTypeError


@attrs.frozen
class ShardPlan:
    """Which items each rank encodes and where their outputs land after the all-gather.

    item_tokens: output tokens per item (input order); balance: the rank assignment.
    """

    item_tokens: tuple[int, ...] = attrs.field(
        converter=lambda v: check_int_sequence(v, "ShardPlan.item_tokens", 1))
    balance: LoadBalance = attrs.field(converter=lambda b: check_instance(
        b, LoadBalance, "ShardPlan.balance", hint="build it with load_balance(sizes, num_ranks)"))

    def __attrs_post_init__(self) -> None:
        if sorted(self.balance.order) != list(range(len(self.item_tokens))):
            raise ArgumentError(
                f"ShardPlan.balance assigns {len(self.balance.order)} item indices, not each of "
                f"the {len(self.item_tokens)} items once; build the plan with "
                "shard_items(item_tokens, num_ranks)"
            )

    @property
    def num_ranks(self) -> int:
        return len(self.balance.counts)

    def local_items(self, rank: int) -> tuple[int, ...]:
        """Item indices `rank` encodes, in the order its outputs are concatenated."""
        return self.balance.rank_items(rank)

    @property
    def rank_tokens(self) -> tuple[int, ...]:
        """Output tokens each rank produces."""
        return tuple(
            sum(self.item_tokens[i] for i in self.local_items(r)) for r in range(self.num_ranks)
        )

    @property
    def max_rank_tokens(self) -> int:
        """Rows every rank's block is padded to before the all-gather."""
        return max(self.rank_tokens, default=0)

    def gather_slices(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) rows of each item in the gathered buffer, in input order."""
        slices: list[tuple[int, int] | None] = [None] * len(self.item_tokens)
        block = self.max_rank_tokens
        for r in range(self.num_ranks):
            offset = r * block
            for i in self.local_items(r):
                slices[i] = (offset, offset + self.item_tokens[i])
                offset += self.item_tokens[i]
        assert all(s is not None for s in slices), "load_balance lost an item"
        return tuple(slices)  # type: ignore[arg-type]


def shard_items(
    item_tokens: Sequence[int], num_ranks: int, sizes: Sequence[int] | None = None
) -> ShardPlan:
    """Plan data-parallel encoding of items over `num_ranks` ranks.

    Items are balanced by `sizes` (default: their output tokens; pass patch counts or any
    cost proxy to balance by that instead).
    """
    tokens = check_int_sequence(item_tokens, "item_tokens", 1,
                                hint="every item produces at least 1 output token")
    weights = tokens if sizes is None else check_int_sequence(sizes, "sizes", 0)
    if len(weights) != len(tokens):
        raise ArgumentError(
            f"sizes has {len(weights)} entries but item_tokens has {len(tokens)}; "
            "pass one size per item"
        )
    return ShardPlan(tokens, load_balance(weights, num_ranks))


def pack_rank_outputs(outputs: Sequence[Any], plan: ShardPlan, rank: int, out: Any) -> Any:
    """Write `rank`'s per-item outputs (local order) into `out` [max_rank_tokens, ...], zero tail.

    `outputs[k]` is the output of `plan.local_items(rank)[k]` with its token count of rows.
    """
    check_instance(plan, ShardPlan, "plan", hint="build one with shard_items(item_tokens, num_ranks)")
    items = plan.local_items(rank)
    _check_rows(out, "out")
    if isinstance(outputs, (str, bytes)) or not isinstance(outputs, Sequence):
        raise ArgumentTypeError(
            f"outputs must be a sequence of arrays, one per local item, got "
            f"{type(outputs).__name__}; pass a list in plan.local_items(rank) order"
        )
    if len(outputs) != len(items):
        raise ArgumentError(
            f"rank {rank} was given {len(outputs)} outputs but encodes {len(items)} items"
        )
    if out.shape[0] != plan.max_rank_tokens:
        raise ArgumentError(
            f"out has {out.shape[0]} rows; the gather block needs {plan.max_rank_tokens}: "
            "allocate out with plan.max_rank_tokens rows"
        )
    offset = 0
    for i, o in zip(items, outputs):
        n = plan.item_tokens[i]
        if _check_rows(o, f"output for item {i}") != n:
            raise ArgumentError(
                f"output for item {i} has {o.shape[0]} rows; expected {n} (its item_tokens); "
                "pass the outputs in plan.local_items(rank) order"
            )
        out[offset : offset + n] = o
        offset += n
    out[offset:] = 0  # padding rows are gathered too: keep them defined
    return out


def unpack_gathered(gathered: Any, plan: ShardPlan) -> list[Any]:
    """Per-item views into the all-gathered buffer [num_ranks * max_rank_tokens, ...], input order."""
    check_instance(plan, ShardPlan, "plan", hint="build one with shard_items(item_tokens, num_ranks)")
    expected = plan.num_ranks * plan.max_rank_tokens
    if _check_rows(gathered, "gathered") != expected:
        raise ArgumentError(
            f"gathered buffer has {gathered.shape[0]} rows; expected num_ranks * "
            f"max_rank_tokens = {expected}: pass the all-gather of every rank's packed block"
        )
    return [gathered[a:b] for a, b in plan.gather_slices()]


def _check_rows(array: Any, name: str) -> int:
    # The rows of a NumPy or CuPy array (anything with a non-empty .shape).
    shape = getattr(array, "shape", None)
    if not isinstance(shape, tuple) or not shape:
        raise ArgumentTypeError(
            f"{name} must be an array with at least one dimension, got {type(array).__name__}; "
            "pass a NumPy or CuPy array"
        )
    return shape[0]
