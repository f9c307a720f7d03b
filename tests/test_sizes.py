"""suggest_capture_sizes: exact DP, checked against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgraph import suggest_capture_sizes
from cgraph.core.buckets import padded_tokens


def brute_force(hist: dict[int, float], max_graphs: int) -> float:
    # Every subset of 1..max that contains max (sizes need not be observed ones).
    top = max(n for n, c in hist.items() if c > 0)
    best = float("inf")
    for r in range(max_graphs):
        for extra in itertools.combinations(range(1, top), r):
            best = min(best, padded_tokens(extra + (top,), hist))
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
    assert padded_tokens(sizes, hist) == brute_force(hist, max_graphs)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(1, 9), st.floats(0.001, 1.0), min_size=1), st.integers(1, 4))
def test_matches_brute_force_on_probabilities(hist, max_graphs):
    sizes = suggest_capture_sizes(hist, max_graphs)
    assert padded_tokens(sizes, hist) == pytest.approx(brute_force(hist, max_graphs), rel=1e-12)


def test_larger_histogram_beats_every_single_swap():
    import random

    rng = random.Random()
    hist = {rng.randint(1, 1000): rng.randint(1, 50) for _ in range(250)}
    sizes = suggest_capture_sizes(hist, 8)
    best = padded_tokens(sizes, hist)
    observed = sorted(hist)
    for i in range(len(sizes) - 1):  # moving any size to any other observed size never helps
        for alt in observed:
            if alt not in sizes:
                other = sizes[:i] + (alt,) + sizes[i + 1:]
                assert padded_tokens(other, hist) >= best


def test_forms_of_input_and_enough_graphs():
    assert suggest_capture_sizes([5, 5, 1, 2, 9], 3) == suggest_capture_sizes({5: 2, 1: 1, 2: 1, 9: 1}, 3)
    assert suggest_capture_sizes({1: 3, 7: 1, 4: 2}, 10) == (1, 4, 7)
    assert suggest_capture_sizes({6: 1, 3: 0}, 1) == (6,)
    assert suggest_capture_sizes({1: 10, 3: 5, 7: 2, 8: 1}, 2) == (3, 8)


@pytest.mark.parametrize("hist, graphs, exc, word", [
    ({}, 2, ValueError, "positive count"),
    ({4: 0}, 2, ValueError, "positive count"),
    ({4: -1}, 2, ValueError, "num_tokens=4"),
    ({4: "x"}, 2, ValueError, "real number"),
    ({0: 1}, 2, ValueError, "histogram key"),
    ({True: 1}, 2, TypeError, "bool"),
    ([3, 0], 2, ValueError, "observed num_tokens"),
    (5, 2, TypeError, "mapping"),
    ({4: 1}, 0, ValueError, "max_graphs"),
    ({4: 1}, True, TypeError, "max_graphs"),
])
def test_bad_inputs(hist, graphs, exc, word):
    with pytest.raises(exc) as err:
        suggest_capture_sizes(hist, graphs)
    assert word in str(err.value)


def test_padded_tokens_needs_a_covering_size():
    assert padded_tokens([4, 8], {3: 2, 8: 1}) == 16
    with pytest.raises(ValueError, match="do not cover"):
        padded_tokens([4], {5: 1})
