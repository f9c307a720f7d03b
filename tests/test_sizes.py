"""suggest_capture_sizes: optimal by brute force, its input forms and its errors.

The optimiser itself (exactness on large and huge histograms, ties) is tested in
tests/test_buckets.py; here the decoder's entry point is checked against every subset.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgraph import suggest_capture_sizes
from cgraph.core.buckets import padded_tokens
from cgraph.core.errors import ArgumentError, ArgumentTypeError


def computed(sizes, hist):
    # Independent of the library: every batch pads to the smallest size >= it.
    return sum(c * min(s for s in sizes if s >= n) for n, c in hist.items() if c)


def brute_force(hist, max_graphs):
    # Every subset of 1..top that contains top (sizes need not be observed ones).
    top = max(n for n, c in hist.items() if c > 0)
    best = None
    for r in range(max_graphs):
        for extra in itertools.combinations(range(1, top), r):
            value = computed(extra + (top,), hist)
            best = value if best is None else min(best, value)
    return best


histograms = st.dictionaries(st.integers(1, 11), st.integers(0, 9), min_size=1).filter(
    lambda h: any(h.values()))


@settings(max_examples=120, deadline=None)
@given(histograms, st.integers(1, 5))
def test_matches_brute_force_on_integer_counts(hist, max_graphs):
    sizes = suggest_capture_sizes(hist, max_graphs)
    observed = sorted(n for n, c in hist.items() if c > 0)
    assert list(sizes) == sorted(set(sizes)) and sizes[-1] == observed[-1]
    assert len(sizes) == min(max_graphs, len(observed))
    assert set(sizes) <= set(observed)
    assert computed(sizes, hist) == padded_tokens(sizes, hist) == brute_force(hist, max_graphs)


def test_forms_of_input_and_enough_graphs():
    assert suggest_capture_sizes([5, 5, 1, 2, 9], 3) == suggest_capture_sizes({5: 2, 1: 1, 2: 1, 9: 1}, 3)
    assert suggest_capture_sizes({1: 3, 7: 1, 4: 2}, 10) == (1, 4, 7)
    assert suggest_capture_sizes({6: 1, 3: 0}, 1) == (6,)
    assert suggest_capture_sizes({1: 10, 3: 5, 7: 2, 8: 1}, 2) == (3, 8)
    assert suggest_capture_sizes(np.array([3, 3, 9]), np.int64(2)) == (3, 9)
    assert suggest_capture_sizes({np.int32(3): np.int64(4), 9: 1}, 1) == (9,)


def test_probabilities_are_refused_with_the_fix():
    # A mapping always holds counts; probabilities scale to counts exactly.
    with pytest.raises(ArgumentTypeError, match=r"round\(p \* 10\*\*6\)"):
        suggest_capture_sizes({1: 0.7, 8: 0.3}, 1)
    assert suggest_capture_sizes({1: 700_000, 8: 300_000}, 1) == (8,)


@pytest.mark.parametrize("hist, graphs, exc, word", [
    ({}, 2, ArgumentError, "positive count"),
    ({4: 0}, 2, ArgumentError, "positive count"),
    ({4: -1}, 2, ArgumentError, "count for 4"),
    ({4: "x"}, 2, ArgumentTypeError, "count for 4"),
    ({0: 1}, 2, ArgumentError, "histogram size"),
    ({True: 1}, 2, ArgumentTypeError, "bool"),
    ([3, 0], 2, ArgumentError, "histogram size"),
    (5, 2, ArgumentTypeError, "mapping"),
    ({4: 1}, 0, ArgumentError, "max_graphs"),
    ({4: 1}, True, ArgumentTypeError, "max_graphs"),
])
def test_bad_inputs(hist, graphs, exc, word):
    with pytest.raises(exc) as err:
        suggest_capture_sizes(hist, graphs)
    assert word in str(err.value)


def test_padded_tokens_needs_a_covering_size():
    assert padded_tokens([4, 8], {3: 2, 8: 1}) == 16
    assert padded_tokens([8, 4, 8], [3, 3, 8]) == 16  # capture sizes are a set: any order
    with pytest.raises(ArgumentError, match="do not cover"):
        padded_tokens([4], {5: 1})
