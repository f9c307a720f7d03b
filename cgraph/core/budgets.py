"""Pure planning for encoder budget graphs: budgets, greedy packing, load balance.

A vision encoder sees images of many sizes. One graph is captured per *token budget*
(output tokens a graph can hold); a batch of images is padded up to the smallest budget
that holds its total. Budgets are a ladder in the sense of :mod:`cgraph.core.buckets`,
whose lookup, padding cost, usage value and optimiser this module names in the encoder's
terms. It imports no CuPy and every result is an immutable attrs value, so plans can be
built, compared and tested anywhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence

import attrs

from cgraph.core.buckets import Histogram, TokenUsage, bucket_for, bucket_usage, suggest
from cgraph.core.checks import (check_histogram, check_instance, check_int, check_int_sequence,
                                check_sizes, int_converter, optional_int_converter)
from cgraph.core.errors import ArgumentError, ArgumentTypeError

_BUDGETS_HINT = "budgets are a ladder such as (64, 256, 1024)"


def generate_budgets(min_budget: int, max_budget: int) -> tuple[int, ...]:
    """Powers of two times `min_budget` while <= `max_budget`, then `max_budget` itself.

    (64, 800) -> (64, 128, 256, 512, 800); (64, 64) -> (64,); (64, 512) -> (64, ..., 512).
    """
    min_budget = check_int(min_budget, "min_budget", 1, hint="a budget holds at least 1 token")
    max_budget = check_int(max_budget, "max_budget", 1, hint="a budget holds at least 1 token")
    if min_budget > max_budget:
        raise ArgumentError(
            f"min_budget ({min_budget}) is larger than max_budget ({max_budget}); "
            "pass min_budget <= max_budget"
        )
    budgets = []
    b = min_budget
    while b <= max_budget:
        budgets.append(b)
        b *= 2
    if budgets[-1] < max_budget:
        budgets.append(max_budget)
    return tuple(budgets)


def smallest_fitting_budget(budgets: Sequence[int], num_tokens: int) -> int | None:
    """The smallest budget >= `num_tokens`, or None when none fits.

    `budgets` must be strictly ascending (an unsorted ladder is refused, not misread);
    `num_tokens` an int >= 1.
    """
    return bucket_for(check_sizes(budgets, "budgets", hint=_BUDGETS_HINT), num_tokens)


@attrs.frozen
class EncoderBatch:
    """One batch of items run together.

    items: original item indices in packing order (ascending tokens);
    tokens: their total output tokens; budget: the graph's token budget, None = eager.
    """

    items: tuple[int, ...] = attrs.field(converter=lambda v: check_int_sequence(v, "EncoderBatch.items", 0))
    tokens: int = attrs.field(converter=int_converter("EncoderBatch.tokens", 0))
    budget: int | None = attrs.field(converter=optional_int_converter(
        "EncoderBatch.budget", 1, hint="or None for a batch that runs eagerly"))

    @property
    def eager(self) -> bool:
        return self.budget is None

    @property
    def padding(self) -> int:
        """Tokens of padding the graph computes for nothing (0 when eager)."""
        return 0 if self.budget is None else self.budget - self.tokens


def plan_batches(
    item_tokens: Sequence[int], budgets: Sequence[int], max_batch_size: int
) -> tuple[EncoderBatch, ...]:
    """Pack items greedily, smallest first, into batches that fit the largest budget.

    `item_tokens` has one entry per item (its output tokens, >= 1); batches refer to
    items by index, so a histogram {tokens: count} is refused (expand it to a list).
    `budgets` is a strictly ascending ladder.

    1. Sort items by tokens ascending (stable, so equal sizes keep input order).
    2. Add the next item to the open batch while total + tokens <= the largest budget and
       the batch has fewer than `max_batch_size` items; otherwise close it and open a new one.
    3. Each closed batch gets the smallest budget that fits its total.
    4. An item above the largest budget runs alone and eagerly (budget None).

    Smallest-first packing keeps every batch total as low as possible, so the only eager
    items are those that fit no budget on their own: no plan has fewer.
    """
    tokens = check_int_sequence(item_tokens, "item_tokens", 1,
                                hint="every item produces at least 1 output token")
    ladder = check_sizes(budgets, "budgets", hint=_BUDGETS_HINT)
    max_batch_size = check_int(max_batch_size, "max_batch_size", 1, hint="a batch holds at least 1 item")
    largest = ladder[-1]
    order = sorted(range(len(tokens)), key=tokens.__getitem__)
    batches: list[EncoderBatch] = []
    current: list[int] = []
    total = 0
    for i in order:
        t = tokens[i]
        if current and (total + t > largest or len(current) >= max_batch_size):
            batches.append(EncoderBatch(current, total, bucket_for(ladder, total)))
            current, total = [], 0
        current.append(i)
        total += t
    if current:
        batches.append(EncoderBatch(current, total, bucket_for(ladder, total)))
    return tuple(batches)


@attrs.frozen
class PaddingStats(TokenUsage):
    """The :class:`~cgraph.core.buckets.TokenUsage` of a plan, and how many batches ran eagerly."""

    eager_batches: int = attrs.field(kw_only=True, converter=int_converter("PaddingStats.eager_batches", 0))

    @eager_batches.validator
    def _at_most_all(self, attribute: attrs.Attribute, value: int) -> None:
        if value > self.batches:
            raise ArgumentError(
                f"PaddingStats.eager_batches={value} exceeds batches={self.batches}; "
                "eager batches are some of the plan's batches"
            )

    @property
    def graph_batches(self) -> int:
        """Batches that replayed a budget graph."""
        return self.batches - self.eager_batches


def padding_stats(batches: Iterable[EncoderBatch]) -> PaddingStats:
    """Sum the padding of planned batches (eager batches compute exactly their tokens).

    `batches` is what :func:`plan_batches` returns (any iterable of EncoderBatch).
    """
    if isinstance(batches, (str, bytes, Mapping)) or not isinstance(batches, Iterable):
        raise ArgumentTypeError(
            f"batches must be an iterable of EncoderBatch, got {type(batches).__name__}; "
            "pass the plan that plan_batches(...) returns"
        )
    plan = [check_instance(b, EncoderBatch, f"batches[{i}]",
                           hint="pass the plan that plan_batches(...) returns")
            for i, b in enumerate(batches)]
    real = sum(b.tokens for b in plan)
    computed = sum(b.tokens if b.budget is None else b.budget for b in plan)
    return PaddingStats(len(plan), real, computed, eager_batches=sum(b.eager for b in plan))


def expected_padding(token_histogram: Histogram, budgets: Sequence[int]) -> int:
    """Padding tokens when each histogram entry pads to its smallest fitting budget.

    `token_histogram` is {tokens: count} or a list of token counts; entries above the
    largest budget run eagerly and add no padding.
    """
    hist = check_histogram(token_histogram, "token_histogram")
    return bucket_usage(check_sizes(budgets, "budgets", hint=_BUDGETS_HINT), hist).padding_tokens


def suggest_budgets(
    token_histogram: Histogram,
    max_graphs: int,
    *,
    max_budget: int | None = None,
) -> tuple[int, ...]:
    """At most `max_graphs` budgets minimising the padding of the given token counts.

    `token_histogram` is {tokens: count} (how many items or batch totals have that many
    tokens) or a plain list of token counts: the sizes a graph will be asked to hold
    (per-image tokens, or batch totals from `plan_batches`). Each is padded to the
    smallest budget >= it. The largest budget is `max_budget` when given (counts above it
    run eagerly and are ignored) and otherwise the largest count, so nothing runs
    eagerly. Exact, with the tie-breaking of :func:`cgraph.core.buckets.suggest`.
    """
    max_graphs = check_int(max_graphs, "max_graphs", 1, hint="at least one graph is needed")
    if max_budget is not None:
        max_budget = check_int(max_budget, "max_budget", 1, hint="or None for the largest count")
    return suggest(token_histogram, max_graphs, largest=max_budget, name="token_histogram")


def suggest_budgets_for_workload(
    item_tokens: Sequence[int], max_budget: int, max_batch_size: int, max_graphs: int
) -> tuple[int, ...]:
    """Budgets for a sample workload, keeping `max_budget` as the largest.

    Packing depends only on the largest budget and `max_batch_size`, so the batch totals
    are known before the other budgets are chosen: plan with (max_budget,), then pick the
    budgets that pad those totals least.
    """
    max_graphs = check_int(max_graphs, "max_graphs", 1, hint="at least one graph is needed")
    max_budget = check_int(max_budget, "max_budget", 1, hint="a budget holds at least 1 token")
    batches = plan_batches(item_tokens, (max_budget,), max_batch_size)
    totals = [b.tokens for b in batches if not b.eager]
    return suggest_budgets(totals, max_graphs, max_budget=max_budget)


@attrs.frozen
class LoadBalance:
    """Assignment of items to ranks.

    order: item indices grouped by rank (rank 0's items first, each rank in assignment
    order); counts: items per rank; loads: total size per rank.
    """

    order: tuple[int, ...] = attrs.field(converter=tuple)
    counts: tuple[int, ...] = attrs.field(converter=tuple)
    loads: tuple[int, ...] = attrs.field(converter=tuple)

    def rank_items(self, rank: int) -> tuple[int, ...]:
        """The item indices assigned to `rank`, in assignment order."""
        rank = check_int(rank, "rank", 0, len(self.counts) - 1,
                         hint=f"this plan has {len(self.counts)} ranks")
        start = sum(self.counts[:rank])
        return self.order[start : start + self.counts[rank]]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        # Lets `order, counts, loads = load_balance(...)` unpack like a tuple.
        return iter((self.order, self.counts, self.loads))


def load_balance(sizes: Sequence[int], num_ranks: int) -> LoadBalance:
    """Assign items largest first (stable) to the least-loaded rank (lowest index on ties).

    sizes [1000, 100, 200, 50] on 2 ranks -> order (0, 2, 1, 3), counts (1, 3),
    loads (1000, 350). `sizes` has one int >= 0 per item.
    """
    num_ranks = check_int(num_ranks, "num_ranks", 1, hint="at least one rank encodes")
    values = check_int_sequence(sizes, "sizes", 0, hint="sizes are token counts or costs")
    per_rank: list[list[int]] = [[] for _ in range(num_ranks)]
    loads = [0] * num_ranks
    heap = [(0, r) for r in range(num_ranks)]  # (load, rank): least loaded, lowest rank first
    for i in sorted(range(len(values)), key=lambda j: -values[j]):
        load, rank = heapq.heappop(heap)
        per_rank[rank].append(i)
        loads[rank] = load + values[i]
        heapq.heappush(heap, (loads[rank], rank))
    order = [i for items in per_rank for i in items]
    return LoadBalance(order, [len(items) for items in per_rank], loads)
