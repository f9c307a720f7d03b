"""suggest_capture_sizes: the capture sizes that waste the least padding on a workload.

Given how often each batch size (num_tokens) occurs, choose at most ``max_graphs``
capture sizes minimising the padded tokens computed, where every batch is padded to the
smallest chosen size >= its num_tokens. The largest observed size is always chosen:
without it the largest batches would have no graph at all and run eagerly, which the
padded-token objective cannot price. An optimal set only ever uses observed sizes (a
size between observations can drop to the largest observation below it for free), so
the search runs over the m distinct observed sizes by dynamic programming, exactly, in
O(max_graphs * m^2) vectorised steps.
"""

from __future__ import annotations

import numbers
from collections import Counter
from typing import Iterable, Mapping

import numpy as np

from cgraph.core.checks import check_int

_BLOCK = 512  # rows of the DP matrix done per numpy step (bounds memory to _BLOCK * m)


def _histogram(histogram: Mapping[int, float] | Iterable[int]) -> dict[int, float]:
    """Validated {num_tokens: weight > 0} from a mapping of weights or an iterable of sizes."""
    if isinstance(histogram, Mapping):
        items = histogram.items()
    elif isinstance(histogram, Iterable) and not isinstance(histogram, (str, bytes)):
        items = Counter(check_int(n, "observed num_tokens", 1) for n in histogram).items()
    else:
        raise TypeError(
            f"histogram must be a mapping {{num_tokens: count}} or an iterable of num_tokens, "
            f"got {type(histogram).__name__}; pass e.g. {{1: 40, 8: 3}} or [1, 1, 8]"
        )
    out: dict[int, float] = {}
    for size, weight in items:
        size = check_int(size, "histogram key (num_tokens)", 1)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not weight >= 0:
            raise ValueError(
                f"histogram count for num_tokens={size} must be a real number >= 0, got "
                f"{weight!r}; pass how often (or how likely) that batch size occurs"
            )
        if weight > 0:
            out[size] = out.get(size, 0) + weight
    if not out:
        raise ValueError(
            "histogram has no batch with a positive count; pass at least one observed num_tokens"
        )
    return out


def padded_tokens(sizes: Iterable[int], histogram: Mapping[int, float] | Iterable[int]) -> float:
    """Total padded tokens when each observed batch pads to the smallest size >= it.

    Raises ValueError if a batch is above every size. Returns an int for integer counts.
    """
    hist = _histogram(histogram)
    chosen = sorted({check_int(s, "capture size", 1) for s in sizes})
    if not chosen or max(hist) > chosen[-1]:
        raise ValueError(
            f"capture sizes {chosen} do not cover the largest observed batch {max(hist)}; "
            "include a size >= every observed num_tokens"
        )
    idx = np.searchsorted(np.asarray(chosen), np.asarray(list(hist)), side="left")
    total = sum(chosen[i] * w for i, w in zip(idx.tolist(), hist.values()))
    return total


def suggest_capture_sizes(
    histogram: Mapping[int, float] | Iterable[int], max_graphs: int
) -> tuple[int, ...]:
    """At most ``max_graphs`` capture sizes (ascending) minimising the expected padded tokens.

    ``histogram`` maps num_tokens to a count or probability (zero entries are ignored), or
    is an iterable of observed num_tokens. The result always contains the largest
    observed size (see the module docstring) and has min(max_graphs, distinct observed
    sizes) entries: with positive counts every extra observed size strictly lowers the
    cost. Ties between equally good sets are broken deterministically. Integer counts are
    optimised in exact integer arithmetic.
    """
    max_graphs = check_int(max_graphs, "max_graphs", 1, hint="at least one graph is needed")
    hist = _histogram(histogram)
    sizes = np.asarray(sorted(hist), dtype=np.int64)
    exact = all(isinstance(w, numbers.Integral) for w in hist.values())
    dtype = np.int64 if exact else np.float64
    weights = np.asarray([hist[s] for s in sizes.tolist()], dtype=dtype)
    m = len(sizes)
    k_max = min(max_graphs, m)
    big = np.iinfo(np.int64).max // 4 if exact else np.inf
    sizes_d = sizes.astype(dtype)
    prefix = np.cumsum(weights)  # prefix[j]: weight of sizes[0..j]
    # cost[j]: least padded tokens for sizes[0..j] with the current number of chosen
    # sizes, the largest of them sizes[j]. One size: everything pads to sizes[j].
    cost = sizes_d * prefix
    parents = []  # parents[k][j]: previous chosen index for k+2 sizes ending at j
    for _ in range(1, k_max):
        new = np.full(m, big, dtype=dtype)
        parent = np.full(m, -1, dtype=np.int64)
        for lo in range(1, m, _BLOCK):
            hi = min(m, lo + _BLOCK)
            rows = np.arange(lo, hi)
            # cand[r, i] = cost[i] + sizes[j] * (prefix[j] - prefix[i]) for i < j = rows[r]
            cand = cost[None, :hi] + sizes_d[rows, None] * (prefix[rows, None] - prefix[None, :hi])
            cand = np.where(np.arange(hi)[None, :] < rows[:, None], cand, big)
            cand = np.where(cost[None, :hi] >= big, big, cand)
            best = np.argmin(cand, axis=1)
            new[lo:hi] = cand[np.arange(hi - lo), best]
            parent[lo:hi] = best
        cost = new
        parents.append(parent)
    chosen = [m - 1]
    for parent in reversed(parents):
        chosen.append(int(parent[chosen[-1]]))
    return tuple(int(sizes[i]) for i in reversed(chosen))
