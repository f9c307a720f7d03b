"""Pure planning for encoder budget graphs: budgets, greedy packing, load balance.

A vision encoder sees images of many sizes. One graph is captured per *token budget*
(output tokens a graph can hold); a batch of images is padded up to the smallest budget
that holds its total. This module decides budgets and batches; it imports no CuPy and
every result is an immutable attrs value, so plans can be built, compared and tested
anywhere.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

import attrs


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}; pass a value >= 1")
    return value


def _check_budgets(budgets: Sequence[int]) -> tuple[int, ...]:
    """Budgets as a strictly ascending tuple of positive ints (or a clear error)."""
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Iterable):
        raise TypeError(f"budgets must be a sequence of ints, got {budgets!r}")
    values = tuple(budgets)
    if not values:
        raise ValueError("budgets is empty; pass at least one token budget, e.g. (256, 1024)")
    for b in values:
        _check_positive_int("every budget", b)
    ordered = tuple(sorted(set(values)))
    if ordered != values:
        raise ValueError(
            f"budgets must be strictly ascending without repeats, got {values}; "
            f"pass {ordered}"
        )
    return values


def _check_item_tokens(item_tokens: Sequence[int]) -> tuple[int, ...]:
    if isinstance(item_tokens, (str, bytes)) or not isinstance(item_tokens, Iterable):
        raise TypeError(f"item_tokens must be a sequence of ints, got {item_tokens!r}")
    values = tuple(item_tokens)
    for i, t in enumerate(values):
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"item_tokens[{i}] must be an int, got {t!r}")
        if t <= 0:
            raise ValueError(
                f"item_tokens[{i}] is {t}; every item must produce at least 1 output token"
            )
    return values


def generate_budgets(min_budget: int, max_budget: int) -> tuple[int, ...]:
    """Powers of two times `min_budget` while <= `max_budget`, then `max_budget` itself.

    (64, 800) -> (64, 128, 256, 512, 800); (64, 64) -> (64,); (64, 512) -> (64, ..., 512).
    """
    _check_positive_int("min_budget", min_budget)
    _check_positive_int("max_budget", max_budget)
    if min_budget > max_budget:
        raise ValueError(
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
    """The smallest budget >= `num_tokens` (budgets ascending), or None when none fits."""
    i = bisect.bisect_left(budgets, num_tokens)
    return budgets[i] if i < len(budgets) else None


@attrs.frozen
class EncoderBatch:
    """One batch of items run together.

    items: original item indices in packing order (ascending tokens);
    tokens: their total output tokens; budget: the graph's token budget, None = eager.
    """

    items: tuple[int, ...] = attrs.field(converter=tuple)
    tokens: int
    budget: int | None

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

    1. Sort items by tokens ascending (stable, so equal sizes keep input order).
    2. Add the next item to the open batch while total + tokens <= the largest budget and
       the batch has fewer than `max_batch_size` items; otherwise close it and open a new one.
    3. Each closed batch gets the smallest budget that fits its total.
    4. An item above the largest budget runs alone and eagerly (budget None).

    Smallest-first packing keeps every batch total as low as possible, so the only eager
    items are those that fit no budget on their own: no plan has fewer.
    """
    tokens = _check_item_tokens(item_tokens)
    ladder = _check_budgets(budgets)
    _check_positive_int("max_batch_size", max_batch_size)
    largest = ladder[-1]
    order = sorted(range(len(tokens)), key=tokens.__getitem__)
    batches: list[EncoderBatch] = []
    current: list[int] = []
    total = 0

    def close() -> None:
        batches.append(EncoderBatch(current, total, smallest_fitting_budget(ladder, total)))

    for i in order:
        t = tokens[i]
        if current and (total + t > largest or len(current) >= max_batch_size):
            close()
            current, total = [], 0
        current.append(i)
        total += t
    if current:
        close()
    return tuple(batches)


@attrs.frozen
class PaddingStats:
    """Padding of a plan: real tokens, tokens the graphs compute, and the waste share."""

    real_tokens: int
    computed_tokens: int
    graph_batches: int
    eager_batches: int

    @property
    def padding_tokens(self) -> int:
        return self.computed_tokens - self.real_tokens

    @property
    def waste(self) -> float:
        """Padding as a fraction of computed tokens (0.0 for an empty plan)."""
        return self.padding_tokens / self.computed_tokens if self.computed_tokens else 0.0


def padding_stats(batches: Sequence[EncoderBatch]) -> PaddingStats:
    """Sum the padding of planned batches (eager batches compute exactly their tokens)."""
    real = sum(b.tokens for b in batches)
    computed = sum(b.tokens if b.budget is None else b.budget for b in batches)
    eager = sum(1 for b in batches if b.eager)
    return PaddingStats(real, computed, len(batches) - eager, eager)


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
        if not 0 <= rank < len(self.counts):
            raise ValueError(f"rank {rank} is out of range; this plan has {len(self.counts)} ranks")
        start = sum(self.counts[:rank])
        return self.order[start : start + self.counts[rank]]

    def __iter__(self):
        # Lets `order, counts, loads = load_balance(...)` unpack like a tuple.
        return iter((self.order, self.counts, self.loads))


def load_balance(sizes: Sequence[int], num_ranks: int) -> LoadBalance:
    """Assign items largest first (stable) to the least-loaded rank (lowest index on ties).

    sizes [1000, 100, 200, 50] on 2 ranks -> order (0, 2, 1, 3), counts (1, 3),
    loads (1000, 350).
    """
    _check_positive_int("num_ranks", num_ranks)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise TypeError(f"sizes must be a sequence of ints, got {sizes!r}")
    values = tuple(sizes)
    for i, s in enumerate(values):
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"sizes[{i}] must be an int, got {s!r}")
        if s < 0:
            raise ValueError(f"sizes[{i}] is {s}; sizes must be >= 0")
    per_rank: list[list[int]] = [[] for _ in range(num_ranks)]
    loads = [0] * num_ranks
    for i in sorted(range(len(values)), key=lambda j: -values[j]):
        rank = min(range(num_ranks), key=lambda r: (loads[r], r))
        per_rank[rank].append(i)
        loads[rank] += values[i]
    order = [i for items in per_rank for i in items]
    return LoadBalance(order, [len(items) for items in per_rank], loads)


def _histogram(token_histogram: Mapping[int, int] | Sequence[int]) -> dict[int, int]:
    if isinstance(token_histogram, Mapping):
        hist: dict[int, int] = {}
        for t, c in token_histogram.items():
            _check_positive_int("every token count in the histogram", t)
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise ValueError(f"histogram count for {t} tokens must be an int >= 0, got {c!r}")
            if c:
                hist[t] = hist.get(t, 0) + c
        return hist
    hist = {}
    for t in _check_item_tokens(token_histogram):
        hist[t] = hist.get(t, 0) + 1
    return hist


def expected_padding(token_histogram: Mapping[int, int] | Sequence[int],
                     budgets: Sequence[int]) -> int:
    """Padding tokens when each histogram entry is padded to its smallest fitting budget.

    Entries above the largest budget run eagerly and add no padding.
    """
    hist = _histogram(token_histogram)
    ladder = _check_budgets(budgets)
    total = 0
    for t, c in hist.items():
        b = smallest_fitting_budget(ladder, t)
        if b is not None:
            total += c * (b - t)
    return total


def suggest_budgets(
    token_histogram: Mapping[int, int] | Sequence[int],
    max_graphs: int,
    *,
    max_budget: int | None = None,
) -> tuple[int, ...]:
    """At most `max_graphs` budgets minimising the padding of the given token counts.

    `token_histogram` is {tokens: count} or a plain list of token counts: the sizes a graph
    will be asked to hold (per-image tokens, or batch totals from `plan_batches`). Each is
    padded to the smallest budget >= it. The largest budget is `max_budget` when given
    (counts above it run eagerly and are ignored) and otherwise the largest count, so
    nothing runs eagerly. Exact dynamic programme over the distinct sizes: an optimal
    budget always sits on a size (lowering it to the largest size it serves loses nothing).
    """
    _check_positive_int("max_graphs", max_graphs)
    hist = _histogram(token_histogram)
    if max_budget is not None:
        _check_positive_int("max_budget", max_budget)
        hist = {t: c for t, c in hist.items() if t <= max_budget}
    if not hist:
        if max_budget is None:
            raise ValueError("token_histogram is empty; pass at least one token count")
        return (max_budget,)
    sizes = sorted(hist)
    top = max_budget if max_budget is not None else sizes[-1]
    if sizes[-1] != top:
        sizes.append(top)  # the forced largest budget serves no one exactly
    counts = [hist.get(s, 0) for s in sizes]
    m = len(sizes)
    # prefix sums let cost(i, j) = padding of sizes[i..j] all padded to sizes[j] be O(1)
    pc, pt = [0] * (m + 1), [0] * (m + 1)
    for i, (s, c) in enumerate(zip(sizes, counts)):
        pc[i + 1] = pc[i] + c
        pt[i + 1] = pt[i] + c * s

    def cost(i: int, j: int) -> int:
        return sizes[j] * (pc[j + 1] - pc[i]) - (pt[j + 1] - pt[i])

    k_max = min(max_graphs, m)
    inf = float("inf")
    # best[k][j]: least padding of sizes[0..j] using k budgets, the largest at sizes[j]
    best = [[inf] * m for _ in range(k_max + 1)]
    back = [[-1] * m for _ in range(k_max + 1)]
    for j in range(m):
        best[1][j] = cost(0, j)
    for k in range(2, k_max + 1):
        for j in range(k - 1, m):
            for i in range(k - 2, j):
                v = best[k - 1][i] + cost(i + 1, j)
                if v < best[k][j]:
                    best[k][j], back[k][j] = v, i
    k_best = min(range(1, k_max + 1), key=lambda k: (best[k][m - 1], k))
    chosen, j, k = [], m - 1, k_best
    while k >= 1 and j >= 0:
        chosen.append(sizes[j])
        j, k = back[k][j], k - 1
    return tuple(sorted(chosen))


def suggest_budgets_for_workload(
    item_tokens: Sequence[int], max_budget: int, max_batch_size: int, max_graphs: int
) -> tuple[int, ...]:
    """Budgets for a sample workload, keeping `max_budget` as the largest.

    Packing depends only on the largest budget and `max_batch_size`, so the batch totals
    are known before the other budgets are chosen: plan with (max_budget,), then pick the
    budgets that pad those totals least.
    """
    batches = plan_batches(item_tokens, (max_budget,), max_batch_size)
    totals = [b.tokens for b in batches if not b.eager]
    return suggest_budgets(totals, max_graphs, max_budget=max_budget)
