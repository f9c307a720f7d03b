"""The bucketing core: ladder lookup, histogram forms, token usage and the exact optimiser.

The optimiser is checked against a plain O(k m^2) dynamic programme written here from
the definition (leftmost optimum at every step, as documented), on fresh random
histograms each run: small ones, ones with more than 512 distinct sizes, and ones with
counts far beyond int64 (10**17, 10**30).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgraph.core.buckets import (TokenUsage, bucket_for, bucket_table, bucket_usage, suggest,
                                 suggest_capture_sizes)
from cgraph.core.budgets import suggest_budgets
from cgraph.core.checks import check_histogram, check_sizes
from cgraph.core.errors import ArgumentError, ArgumentTypeError


# ---------------------------------------------------------------- references
def candidates(hist, largest=None):
    """(sizes, counts) the optimiser chooses among: observations <= largest, plus largest."""
    items = sorted((n, c) for n, c in hist.items() if c > 0)
    if largest is not None:
        items = [(n, c) for n, c in items if n <= largest]
        if not items or items[-1][0] != largest:
            items.append((largest, 0))
    return [n for n, _ in items], [c for _, c in items]


def reference_ladder(hist, k, largest=None):
    """Plain DP in Python ints: best[t][j] = least padding of sizes[0..j] with t sizes,
    the largest sizes[j]; the first (smallest) i wins ties."""
    sizes, counts = candidates(hist, largest)
    m = len(sizes)
    k = min(k, m)

    def pad(a, j):  # items a..j all padded to sizes[j]
        return sum(counts[x] * (sizes[j] - sizes[x]) for x in range(a, j + 1))

    best = [[None] * m for _ in range(k + 1)]
    back = [[None] * m for _ in range(k + 1)]
    for j in range(m):
        best[1][j] = pad(0, j)
    for t in range(2, k + 1):
        for j in range(t - 1, m):
            run = 0  # pad(i + 1, j), grown as i falls
            options = []
            for i in range(j - 1, t - 3, -1):
                run += counts[i + 1] * (sizes[j] - sizes[i + 1])
                options.append((best[t - 1][i] + run, i))
            best[t][j], back[t][j] = min(options)  # ties: smallest i
    chosen, j = [m - 1], m - 1
    for t in range(k, 1, -1):
        j = back[t][j]
        chosen.append(j)
    return tuple(sizes[i] for i in reversed(chosen))


def reference_ladder_int64(hist, k):
    """The same DP with each row's minimum taken by NumPy (first minimum wins): fast
    enough for a thousand sizes, exact while the values fit in int64."""
    sizes, counts = candidates(hist)
    m = len(sizes)
    k = min(k, m)
    assert 4 * sizes[-1] * sum(counts) < 2**63, "reference needs int64-sized values"
    s = np.array(sizes, dtype=np.int64)
    c = np.array(counts, dtype=np.int64)
    w = np.concatenate(([0], np.cumsum(c)))  # w[a] = count of items before a
    t = np.concatenate(([0], np.cumsum(c * s)))
    best = s * w[1:] - t[1:]
    backs = []
    for layer in range(2, k + 1):
        new = np.full(m, np.iinfo(np.int64).max // 2)
        back = np.zeros(m, dtype=np.int64)
        for j in range(layer - 1, m):
            i = np.arange(layer - 2, j)
            cand = best[i] + s[j] * (w[j + 1] - w[i + 1]) - (t[j + 1] - t[i + 1])
            pick = int(np.argmin(cand))
            new[j], back[j] = cand[pick], i[pick]
        best = new
        backs.append(back)
    chosen = [m - 1]
    for back in reversed(backs):
        chosen.append(int(back[chosen[-1]]))
    return tuple(sizes[i] for i in reversed(chosen))


def cost(ladder, hist):
    return bucket_usage(ladder, hist).padding_tokens


def random_hist(rng, m, top, max_count):
    return {n: rng.randint(1, max_count) for n in rng.sample(range(1, top + 1), m)}


# ---------------------------------------------------------------- the optimiser
@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(1, 3000), st.integers(1, 10**6), min_size=1, max_size=40),
       st.integers(1, 12), st.none() | st.integers(1, 3000))
def test_suggest_matches_the_reference_dp(hist, k, largest):
    got = suggest(hist, k, largest=largest)
    assert got == reference_ladder(hist, k, largest)
    sizes, _ = candidates(hist, largest)
    assert len(got) == min(k, len(sizes)) and got[-1] == sizes[-1]
    assert list(got) == sorted(set(got))


@pytest.mark.parametrize("max_count", [10**17, 10**30])
def test_huge_counts_stay_exact(max_count):
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(20):
        hist = random_hist(rng, rng.randint(2, 60), 5000, max_count)
        k = rng.randint(2, 10)
        got = suggest_capture_sizes(hist, k)
        assert got == reference_ladder(hist, k), (seed, hist, k)
        assert len(set(got)) == len(got)


def test_the_overflowing_example_of_the_issue():
    # 1001 * 10**17 overflows int64: the old code answered (1001, 1001).
    assert suggest_capture_sizes({1: 1, 1000: 1, 1001: 10**17}, 2) == (1, 1001)
    assert cost((1, 1001), {1: 1, 1000: 1, 1001: 10**17}) == 1
    assert suggest_budgets({1: 1, 1000: 1, 1001: 10**30}, 2) == (1, 1001)


def test_more_than_512_sizes_match_the_reference():
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(3):
        m = rng.randint(513, 1100)
        hist = random_hist(rng, m, 20 * m, rng.choice([3, 1000, 10**6]))
        k = rng.randint(2, 24)
        got = suggest_capture_sizes(hist, k)
        assert got == reference_ladder_int64(hist, k), (seed, m, k)


def test_a_large_ladder_beats_every_single_move():
    rng = random.Random()
    hist = random_hist(rng, 700, 4000, 50)
    sizes = suggest_capture_sizes(hist, 12)
    best = cost(sizes, hist)
    observed = sorted(hist)
    for i in range(len(sizes) - 1):  # moving one size to any other observation never helps
        for alt in rng.sample(observed, 60):
            if alt not in sizes:
                assert cost(tuple(sorted(sizes[:i] + (alt,) + sizes[i + 1:])), hist) >= best


def test_ties_go_to_the_smaller_sizes_from_the_second_largest_down():
    # (1, 3) and (2, 3) both pad 2 tokens; the documented rule picks (1, 3).
    assert cost((1, 3), {1: 1, 2: 1, 3: 1}) == cost((2, 3), {1: 1, 2: 1, 3: 1})
    assert suggest({1: 1, 2: 1, 3: 1}, 2) == (1, 3)
    assert suggest_budgets({1: 1, 2: 1, 3: 1}, 2) == (1, 3)
    assert suggest({1: 1, 2: 1, 3: 1}, 3) == (1, 2, 3)


def test_decoder_and_encoder_entry_points_share_the_optimiser():
    rng = random.Random()
    hist = random_hist(rng, 300, 3000, 100)
    for k in (1, 2, 7, 31):
        assert suggest_capture_sizes(hist, k) == suggest_budgets(hist, k) == suggest(hist, k)
    top = max(hist) // 2
    assert suggest_budgets(hist, 9, max_budget=top) == suggest(hist, 9, largest=top)
    assert suggest_budgets(hist, 9, max_budget=top)[-1] == top


def test_enough_graphs_take_every_size():
    assert suggest({5: 1, 3: 2, 9: 4}, 10) == (3, 5, 9)
    assert suggest({5: 1}, 1) == (5,)


# ---------------------------------------------------------------- lookup and usage
ladders = st.lists(st.integers(1, 500), min_size=1, max_size=8, unique=True).map(lambda x: tuple(sorted(x)))


@given(ladders, st.integers(1, 600))
def test_bucket_for_is_the_smallest_size_not_below(ladder, n):
    assert bucket_for(ladder, n) == next((s for s in ladder if s >= n), None)
    assert bucket_for(list(map(np.int64, ladder)), np.int32(n)) == bucket_for(ladder, n)


@given(ladders)
def test_bucket_table_matches_the_lookup(ladder):
    table = bucket_table(ladder)
    assert len(table) == ladder[-1] + 1
    assert all(table[n] == min(s for s in ladder if s >= n) for n in range(ladder[-1] + 1))


@given(ladders, st.dictionaries(st.integers(1, 700), st.integers(0, 50)))
def test_bucket_usage_counts_each_batch_in_its_bucket_or_eagerly(ladder, hist):
    usage = bucket_usage(ladder, hist)
    real = sum(n * c for n, c in hist.items())
    computed = sum(c * next((s for s in ladder if s >= n), n) for n, c in hist.items())
    assert usage == TokenUsage(sum(hist.values()), real, computed)
    assert usage.padding_tokens == computed - real


@pytest.mark.parametrize("call, exc, words", [
    (lambda: bucket_for([1024, 256], 100), ArgumentError, ["strictly ascending", "(256, 1024)"]),
    (lambda: bucket_for([256, 1024], 0), ArgumentError, ["num_tokens", "got 0"]),
    (lambda: bucket_for([256, 1024], -5), ArgumentError, ["num_tokens", "got -5"]),
    (lambda: bucket_for([], 5), ArgumentError, ["empty"]),
    (lambda: bucket_for("ab", 1), ArgumentTypeError, ["iterable of ints"]),
    (lambda: bucket_for([4, 8], 2.0), ArgumentTypeError, ["num_tokens", "float"]),
    (lambda: bucket_usage([4], 5), ArgumentTypeError, ["mapping {key: count}", "[1, 1, 8]"]),
])
def test_lookup_errors(call, exc, words):
    with pytest.raises(exc) as err:
        call()
    for word in words:
        assert word in str(err.value), (word, str(err.value))


# ---------------------------------------------------------------- histogram forms
@settings(max_examples=80)
@given(st.lists(st.integers(1, 50), max_size=60))
def test_a_mapping_is_counts_and_an_iterable_is_observations(observed):
    counts = {}
    for n in observed:
        counts[n] = counts.get(n, 0) + 1
    assert check_histogram(observed, "h") == check_histogram(counts, "h") == dict(sorted(counts.items()))
    assert list(check_histogram(counts, "h")) == sorted(counts)


def test_histogram_accepts_numpy_and_drops_zero_counts():
    assert check_histogram({np.int64(3): np.int32(2), 5: 0}, "h") == {3: 2}
    assert check_histogram(np.array([4, 4, 2]), "h") == {2: 1, 4: 2}
    assert check_histogram((n for n in [7, 7]), "h") == {7: 2}


@pytest.mark.parametrize("hist, exc, words", [
    (5, ArgumentTypeError, ["mapping {key: count}", "iterable", "{1: 40, 8: 3}"]),
    ("12", ArgumentTypeError, ["mapping"]),
    ({4: 0.5}, ArgumentTypeError, ["count for 4", "int", "round(p * 10**6)"]),
    ({4: -1}, ArgumentError, ["count for 4", ">= 0"]),
    ({0: 1}, ArgumentError, ["size", ">= 1", "got 0"]),
    ({True: 1}, ArgumentTypeError, ["size", "bool"]),
    ([3, 2.5], ArgumentTypeError, ["size", "float"]),
])
def test_histogram_errors_say_which_forms_are_accepted(hist, exc, words):
    with pytest.raises(exc) as err:
        check_histogram(hist, "histogram")
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_check_sizes_sorts_only_when_asked():
    assert check_sizes([8, 2, 8, np.int64(4)], "s", sort=True) == (2, 4, 8)
    with pytest.raises(ArgumentError, match=r"pass \(2, 4, 8\)"):
        check_sizes([8, 2, 4], "s")
    with pytest.raises(ArgumentTypeError, match="mapping"):
        check_sizes({2: 1}, "s")


def test_token_usage_is_a_checked_value():
    u = TokenUsage(2, 10, 16)
    assert (u.padding_tokens, u.waste) == (6, 6 / 16)
    assert TokenUsage(0, 0, 0).waste == 0.0
    with pytest.raises(ArgumentError, match="computed >= real"):
        TokenUsage(1, 10, 9)
    with pytest.raises(ArgumentError, match="batches"):
        TokenUsage(-1, 0, 0)
