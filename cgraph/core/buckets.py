"""Bucketing: padding sizes up a ladder, measuring the padding, choosing the ladder.

The decoder's capture sizes and the encoder's token budgets are one concept: a strictly
ascending ladder of sizes, where a batch (or an item total) of ``n`` tokens runs in the
*bucket* of ``n``, the smallest size >= n, and one above the largest size runs eagerly.
This module is that concept, once:

- :func:`bucket_for` (one lookup) and :func:`bucket_table` (every lookup up to the top);
- :class:`TokenUsage`, real versus computed tokens of some batches, and
  :func:`bucket_usage`, the padding cost of a histogram on a ladder;
- :func:`suggest`, the exact optimiser: the ladder of at most ``k`` sizes that computes
  the fewest tokens on a histogram (:func:`suggest_capture_sizes` for the decoder,
  ``cgraph.core.budgets.suggest_budgets`` for the encoder).

Histograms go through :func:`cgraph.core.checks.check_histogram`: a mapping is
``{size: count}``, any other iterable lists observed sizes.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Mapping

import attrs
import numpy as np

from cgraph.core.checks import check_histogram, check_int, check_sizes, int_converter
from cgraph.core.errors import ArgumentError

Histogram = Mapping[int, int] | Iterable[int]

# |values| the optimiser handles are < 3 * top * total_count; int64 is used only when
# that bound fits in it, else the same code runs on Python ints (object arrays).
_INT64_LIMIT = (1 << 63) - 1


@attrs.frozen
class TokenUsage:
    """Real versus computed tokens of some batches.

    ``computed_tokens`` counts what ran: a batch in a bucket computes the bucket's size,
    an eager batch exactly its real tokens.
    """

    batches: int = attrs.field(converter=int_converter("TokenUsage.batches", 0))
    real_tokens: int = attrs.field(converter=int_converter("TokenUsage.real_tokens", 0))
    computed_tokens: int = attrs.field(converter=int_converter("TokenUsage.computed_tokens", 0))

    def __attrs_post_init__(self) -> None:
        if self.computed_tokens < self.real_tokens:
            raise ArgumentError(
                f"TokenUsage.computed_tokens={self.computed_tokens} is below real_tokens="
                f"{self.real_tokens}; padding only adds tokens, so pass computed >= real"
            )

    @property
    def padding_tokens(self) -> int:
        """Tokens computed for nothing (computed - real)."""
        return self.computed_tokens - self.real_tokens

    @property
    def waste(self) -> float:
        """Padding as a fraction of computed tokens (0.0 when nothing ran)."""
        return self.padding_tokens / self.computed_tokens if self.computed_tokens else 0.0


def bucket_for(sizes: Iterable[int], num_tokens: int) -> int | None:
    """The smallest size >= ``num_tokens`` on the ladder ``sizes``, or None above the largest.

    ``sizes`` must be strictly ascending ints >= 1 (an unsorted ladder is refused, not
    misread); ``num_tokens`` an int >= 1.
    """
    ladder = check_sizes(sizes, "sizes", hint="a ladder such as (64, 256, 1024)")
    num_tokens = check_int(num_tokens, "num_tokens", 1, hint="a batch has at least 1 token")
    i = bisect.bisect_left(ladder, num_tokens)
    return ladder[i] if i < len(ladder) else None


def bucket_table(sizes: Iterable[int]) -> tuple[int, ...]:
    """``table[n]`` = the smallest size >= n, for 0 <= n <= the largest size.

    One tuple index per lookup afterwards; the table has ``max(sizes) + 1`` entries, so
    callers bound the largest size (GraphConfig: ``MAX_CAPTURE_SIZE``).
    """
    ladder = check_sizes(sizes, "sizes", hint="a ladder such as (1, 2, 4, 8)")
    table: list[int] = [ladder[0]]
    lo = 1
    for size in ladder:
        table += [size] * (size + 1 - lo)
        lo = size + 1
    return tuple(table)


def bucket_usage(sizes: Iterable[int], histogram: Histogram) -> TokenUsage:
    """The tokens a histogram's batches compute on the ladder ``sizes``.

    Each batch computes its bucket's size; a batch above the largest size runs eagerly
    and computes exactly its own tokens (no padding). ``histogram``: ``{size: count}`` or
    an iterable of observed sizes.
    """
    ladder = check_sizes(sizes, "sizes", hint="a ladder such as (64, 256, 1024)")
    hist = check_histogram(histogram, "histogram")
    top = ladder[-1]
    computed = 0
    for n, count in hist.items():
        computed += count * (ladder[bisect.bisect_left(ladder, n)] if n <= top else n)
    return TokenUsage(sum(hist.values()), sum(n * c for n, c in hist.items()), computed)


def padded_tokens(sizes: Iterable[int], histogram: Histogram) -> int:
    """Tokens computed when every batch pads to its capture size (the decoder's cost).

    ``sizes`` may come in any order (a set of capture sizes); every observed batch must
    fit one, else ArgumentError (a batch above every size would run eagerly, which this
    cost does not price: see :func:`bucket_usage` for that).
    """
    ladder = check_sizes(sizes, "capture sizes", sort=True)
    hist = check_histogram(histogram, "histogram")
    if hist and max(hist) > ladder[-1]:
        raise ArgumentError(
            f"capture sizes up to {ladder[-1]} do not cover the largest observed batch "
            f"{max(hist)}; include a size >= every observed num_tokens"
        )
    return bucket_usage(ladder, hist).computed_tokens


def suggest(histogram: Histogram, max_sizes: int, *, largest: int | None = None,
            name: str = "histogram") -> tuple[int, ...]:
    """The ladder of at most ``max_sizes`` sizes that computes the fewest tokens.

    Every observed size n (with its count) computes its bucket's size. The largest size
    is ``largest`` when given (observations above it run eagerly and are ignored; it is
    kept even if nothing was observed at it) and otherwise the largest observation.
    An optimal ladder only uses observed sizes (a size between observations drops to the
    largest observation below it for free), and with positive counts each extra observed
    size strictly lowers the cost, so the result has min(max_sizes, candidates) sizes.
    ``name`` is the histogram's name in error messages.

    Exact: counts are Python ints of any size, and the search is a dynamic programme over
    the m candidate sizes. Its cost matrix is Monge, so each layer is solved by divide
    and conquer over monotone argmins, vectorised: O(max_sizes * m log m) work in
    O(max_sizes * log m) NumPy calls (timed by ``python -m cgraph.bench.optimizers``), in
    int64 when 3 * largest * total count fits it, else on Python ints (slower, as exact).
    Ties: among optimal ladders, the one whose sizes, compared from the second largest
    downwards, are smallest (the leftmost optimum at every step).
    """
    max_sizes = check_int(max_sizes, "max_sizes", 1, hint="at least one size is needed")
    hist = check_histogram(histogram, name)
    if largest is not None:
        largest = check_int(largest, "largest", 1, hint="or None for the largest observation")
        hist = {n: c for n, c in hist.items() if n <= largest}
        hist.setdefault(largest, 0)  # kept even when nothing was observed there
    if not hist:
        raise ArgumentError(
            f"{name} has no size with a positive count; pass at least one observation, "
            "e.g. {1: 40, 8: 3} or [1, 1, 8]"
        )
    sizes = list(hist)
    return tuple(sizes[i] for i in _optimal_ladder(sizes, [hist[n] for n in sizes], max_sizes))


def suggest_capture_sizes(histogram: Histogram, max_graphs: int) -> tuple[int, ...]:
    """At most ``max_graphs`` capture sizes (ascending) minimising the padded tokens.

    ``histogram`` is ``{num_tokens: count}`` (how many batches had that many tokens;
    counts are ints, zeros ignored) or an iterable of observed num_tokens. The largest
    observed size is always kept: without it the largest batches would lose their graph
    and run eagerly, which the padded-token objective cannot price. See :func:`suggest`
    for exactness and tie-breaking.
    """
    max_graphs = check_int(max_graphs, "max_graphs", 1, hint="at least one graph is needed")
    return suggest(histogram, max_graphs, name="histogram")


def _optimal_ladder(sizes: list[int], counts: list[int], k: int) -> list[int]:
    """Indices of at most ``k`` of ``sizes`` (always the last) minimising the padding.

    ``sizes`` strictly ascending ints, ``counts`` ints >= 0 (positive except perhaps the
    last), ``k`` >= 1, as :func:`suggest` validated them. The dynamic programme, with
    prefix sums W of the counts and T of count * size:

        F_1[j] = pad(0..j -> j) = sizes[j] * W[j] - T[j]
        F_t[j] = min_{i<j} F_{t-1}[i] + pad(i+1..j -> j)
               = F_1[j] + min_{i<j} (F_{t-1}[i] + T[i] - sizes[j] * W[i])

    so each candidate costs one multiply and one subtraction (lines of slope -W[i]
    queried at sizes[j]). Leftmost argmins are monotone in j (the cost is Monge), which
    each layer's divide and conquer relies on.
    """
    m = len(sizes)
    k = min(k, m)
    if k == m:
        return list(range(m))
    # |values| stay below 3 * largest size * total count; past int64, Python ints.
    dtype: Any = np.int64 if 3 * sizes[-1] * sum(counts) <= _INT64_LIMIT else object
    s = np.array(sizes, dtype=dtype)
    c = np.array(counts, dtype=dtype)
    w = np.cumsum(c)
    t = np.cumsum(c * s)
    first = s * w - t  # F_1: everything up to j pads to sizes[j]
    best = first
    parents = []
    for layer in range(2, k + 1):
        # Row j needs layer - 1 sizes at or below it and k - layer sizes above it.
        lo, hi = (m - 1, m - 1) if layer == k else (layer - 1, m - 1 - (k - layer))
        mins, parent = _layer(best + t, w, s, lo, hi, layer - 2)
        best = first + mins
        parents.append(parent)
    chosen = [m - 1]
    for parent in reversed(parents):
        chosen.append(int(parent[chosen[-1]]))
    return chosen[::-1]


def _layer(intercept: np.ndarray, slope: np.ndarray, x: np.ndarray, row_lo: int, row_hi: int,
           col_lo: int) -> tuple[np.ndarray, np.ndarray]:
    """min_{col_lo <= i < j} intercept[i] - x[j] * slope[i] and its leftmost argmin, for
    rows j in row_lo..row_hi (other rows are left 0).

    Divide and conquer, one recursion level per loop: every open segment of rows
    [lo, hi] knows its argmins lie in [olo, ohi]; its middle row scans that range, then
    splits it. Invariant olo <= lo - 1, so a middle row always has a candidate, and the
    scans of one level overlap only at their ends: O(m) work per level.
    """
    mins_out = np.zeros_like(intercept)
    parent = np.zeros(len(intercept), dtype=np.int64)
    lo = np.array([row_lo])
    hi = np.array([row_hi])
    olo = np.array([col_lo])
    ohi = np.array([row_hi - 1])
    while lo.size:
        mid = (lo + hi) >> 1
        lengths = np.minimum(ohi, mid - 1) - olo + 1
        starts = np.cumsum(lengths) - lengths
        i = np.arange(int(lengths.sum())) + np.repeat(olo - starts, lengths)
        values = intercept[i] - np.repeat(x[mid], lengths) * slope[i]
        mins = np.minimum.reduceat(values, starts)
        hits = np.flatnonzero(values == np.repeat(mins, lengths))
        argmin = i[hits[np.searchsorted(hits, starts)]]  # first hit of each segment
        mins_out[mid] = mins
        parent[mid] = argmin
        left, right = lo < mid, mid < hi
        lo, hi, olo, ohi = (np.concatenate((lo[left], mid[right] + 1)),
                            np.concatenate((mid[left] - 1, hi[right])),
                            np.concatenate((olo[left], argmin[right])),
                            np.concatenate((argmin[left], ohi[right])))
    return mins_out, parent
