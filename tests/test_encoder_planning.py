"""Encoder planning: budgets, greedy packing, load balancing, budget suggestion (CPU)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgraph.core.budgets import (
    EncoderBatch,
    expected_padding,
    generate_budgets,
    load_balance,
    padding_stats,
    plan_batches,
    smallest_fitting_budget,
    suggest_budgets,
    suggest_budgets_for_workload,
)
from cgraph.core.errors import ArgumentError, ArgumentTypeError

budget_ladders = st.lists(st.integers(1, 600), min_size=1, max_size=6, unique=True).map(
    lambda xs: tuple(sorted(xs))
)


# ---------------------------------------------------------------- generate_budgets
def test_generate_budgets_appends_max_when_not_a_power_of_two_step():
    assert generate_budgets(64, 800) == (64, 128, 256, 512, 800)


def test_generate_budgets_single_when_min_equals_max():
    assert generate_budgets(64, 64) == (64,)


def test_generate_budgets_ends_exactly_on_power_of_two_max():
    assert generate_budgets(16, 256) == (16, 32, 64, 128, 256)


@pytest.mark.parametrize("lo,hi", [(0, 10), (-4, 10), (8, 0), (8, -1)])
def test_generate_budgets_rejects_non_positive(lo, hi):
    with pytest.raises(ArgumentError, match=">= 1"):
        generate_budgets(lo, hi)


def test_generate_budgets_rejects_min_above_max():
    with pytest.raises(ValueError, match="min_budget"):
        generate_budgets(128, 64)


def test_generate_budgets_rejects_non_int():
    with pytest.raises(ArgumentTypeError, match="min_budget"):
        generate_budgets(64.0, 128)  # type: ignore[arg-type]


def test_generate_budgets_accepts_numpy_ints():
    assert generate_budgets(np.int64(64), np.int32(256)) == (64, 128, 256)
    assert all(type(b) is int for b in generate_budgets(np.int64(64), np.int32(256)))


@given(st.integers(1, 5000), st.integers(0, 20000))
def test_generate_budgets_properties(lo, extra):
    hi = lo + extra
    b = generate_budgets(lo, hi)
    assert b[0] == lo and b[-1] == hi
    assert list(b) == sorted(set(b))
    for x, y in zip(b, b[1:-1]):
        assert y == 2 * x  # doubling except possibly the last step
    assert b[-1] <= 2 * b[-2] if len(b) > 1 else True


# ---------------------------------------------------------------- smallest_fitting_budget
def test_smallest_fitting_budget_examples():
    b = (64, 128, 256)
    assert smallest_fitting_budget(b, 1) == 64
    assert smallest_fitting_budget(b, 64) == 64
    assert smallest_fitting_budget(b, 65) == 128
    assert smallest_fitting_budget(b, 256) == 256
    assert smallest_fitting_budget(b, 257) is None


@given(budget_ladders, st.integers(1, 700))
def test_smallest_fitting_budget_matches_linear_scan(budgets, n):
    expected = next((b for b in budgets if b >= n), None)
    assert smallest_fitting_budget(budgets, n) == expected
    assert smallest_fitting_budget([np.int64(b) for b in budgets], np.int32(n)) == expected


@pytest.mark.parametrize("budgets, n, exc, words", [
    ([1024, 256], 100, ArgumentError, ["strictly ascending", "pass (256, 1024)"]),
    ([256, 256], 100, ArgumentError, ["strictly ascending"]),
    ([256, 1024], 0, ArgumentError, ["num_tokens", "got 0"]),
    ([256, 1024], -5, ArgumentError, ["num_tokens", "got -5"]),
    ([256, 1024], 2.0, ArgumentTypeError, ["num_tokens", "float"]),
    ("ab", 1, ArgumentTypeError, ["budgets", "iterable of ints"]),
    ([], 1, ArgumentError, ["budgets is empty"]),
])
def test_smallest_fitting_budget_refuses_what_it_would_misread(budgets, n, exc, words):
    # The old lookup bisected blindly: 1024 for ([1024, 256], 100), 256 for n = 0 or -5.
    with pytest.raises(exc) as err:
        smallest_fitting_budget(budgets, n)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


# ---------------------------------------------------------------- plan_batches
def _brute_force_min_eager(tokens, budgets, max_batch):
    """Least eager items over every partition of items into batches (small inputs)."""
    n = len(tokens)
    best = n
    largest = budgets[-1]

    def partitions(items):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for part in partitions(rest):
            for k in range(len(part)):
                yield part[:k] + [[first] + part[k]] + part[k + 1 :]
            yield [[first]] + part

    for part in partitions(list(range(n))):
        if any(len(g) > max_batch for g in part):
            continue
        eager = 0
        feasible = True
        for g in part:
            total = sum(tokens[i] for i in g)
            if total > largest:
                if len(g) > 1:
                    feasible = False  # a multi-item batch over budget is not a legal plan
                    break
                eager += 1
        if feasible:
            best = min(best, eager)
    return best


def test_plan_batches_packs_smallest_first_and_picks_smallest_budget():
    # 10+20+40 = 70 fits 256 but adding 200 would not: close at 70 (budget 128)
    plan = plan_batches([200, 10, 20, 900, 40], (64, 128, 256), max_batch_size=8)
    assert plan == (
        EncoderBatch((1, 2, 4), 70, 128),
        EncoderBatch((0,), 200, 256),
        EncoderBatch((3,), 900, None),
    )
    assert plan[-1].eager and plan[-1].padding == 0
    assert plan[0].padding == 58


def test_plan_batches_fills_up_to_the_largest_budget():
    plan = plan_batches([300, 10, 20, 900, 40], (64, 128, 512), max_batch_size=8)
    assert plan == (EncoderBatch((1, 2, 4, 0), 370, 512), EncoderBatch((3,), 900, None))


def test_plan_batches_splits_on_max_batch_size():
    plan = plan_batches([4] * 8, (64,), max_batch_size=4)
    assert [b.items for b in plan] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert all(b.budget == 64 and b.tokens == 16 for b in plan)


def test_plan_batches_is_stable_for_equal_sizes():
    plan = plan_batches([5, 3, 5, 3], (100,), max_batch_size=2)
    assert [b.items for b in plan] == [(1, 3), (0, 2)]


def test_plan_batches_empty_input_gives_empty_plan():
    assert plan_batches([], (64,), 4) == ()


@pytest.mark.parametrize("tokens, budgets, max_batch, expected", [
    ([3, 5], (8,), 4, [((0, 1), 8, 8)]),                       # exactly fills the largest
    ([5, 3, 1], (4, 8), 4, [((2, 1), 4, 4), ((0,), 5, 8)]),    # 1 + 3 fills 4; 4 + 5 > 8
    ([4, 4, 4, 4], (8,), 4, [((0, 1), 8, 8), ((2, 3), 8, 8)]),
    ([2, 6, 1], (8, 16), 2, [((2, 0), 3, 8), ((1,), 6, 8)]),   # closed by max_batch_size
    ([8], (8,), 1, [((0,), 8, 8)]),
    ([9, 8], (8,), 3, [((1,), 8, 8), ((0,), 9, None)]),
])
def test_plan_batches_exact_fill_cases(tokens, budgets, max_batch, expected):
    plan = plan_batches(tokens, budgets, max_batch)
    assert [(b.items, b.tokens, b.budget) for b in plan] == expected


def test_plan_batches_refuses_a_histogram_and_says_how_to_expand_it():
    # A mapping used to be read as its keys: {5: 2, 7: 1} planned two items, not three.
    with pytest.raises(ArgumentTypeError) as err:
        plan_batches({5: 2, 7: 1}, (16,), 4)
    assert "mapping" in str(err.value) and "for _ in range(count)" in str(err.value)
    with pytest.raises(ArgumentTypeError, match="no order"):
        plan_batches({5, 7}, (16,), 4)


def test_plan_batches_accepts_numpy_ints():
    plan = plan_batches(np.array([5, 3]), (np.int64(8), np.int64(16)), np.int32(4))
    assert plan == plan_batches([5, 3], (8, 16), 4) == (EncoderBatch((1, 0), 8, 8),)


@pytest.mark.parametrize(
    "args,exc,word",
    [
        (([1, 0], (8,), 2), ArgumentError, "item_tokens[1]"),
        (([1, -3], (8,), 2), ArgumentError, "item_tokens[1]"),
        (([1, 2.5], (8,), 2), ArgumentTypeError, "item_tokens[1]"),
        (([1], (), 2), ArgumentError, "budgets is empty"),
        (([1], (16, 8), 2), ArgumentError, "pass (8, 16)"),
        (([1], (8, 8), 2), ArgumentError, "strictly ascending"),
        (([1], (8,), 0), ArgumentError, "max_batch_size"),
        ((5, (8,), 1), ArgumentTypeError, "item_tokens"),
    ],
)
def test_plan_batches_rejects_bad_input(args, exc, word):
    with pytest.raises(exc) as err:
        plan_batches(*args)
    assert word in str(err.value)


@settings(max_examples=300)
@given(st.lists(st.integers(1, 700), max_size=40), budget_ladders, st.integers(1, 8))
def test_plan_batches_invariants(tokens, budgets, max_batch):
    plan = plan_batches(tokens, budgets, max_batch)
    seen = [i for b in plan for i in b.items]
    assert sorted(seen) == list(range(len(tokens)))  # every item exactly once
    for b in plan:
        assert b.tokens == sum(tokens[i] for i in b.items)
        assert 1 <= len(b.items) <= max_batch
        if b.budget is None:
            assert len(b.items) == 1 and b.tokens > budgets[-1]
        else:
            assert b.tokens <= b.budget
            assert b.budget == smallest_fitting_budget(budgets, b.tokens)
    # the eager items are exactly those that fit no budget alone
    assert sum(b.eager for b in plan) == sum(t > budgets[-1] for t in tokens)
    # packing order: ascending tokens, stable
    order = [i for b in plan for i in b.items]
    assert order == sorted(range(len(tokens)), key=lambda i: tokens[i])
    # maximal: no closed batch could have taken the next item in packing order
    for b, following in zip(plan, plan[1:]):
        nxt = tokens[following.items[0]]
        assert b.tokens + nxt > budgets[-1] or len(b.items) == max_batch, (b, nxt)


def test_plan_batches_maximality_on_random_exact_fills():
    # Item sizes that often add up to the largest budget exactly.
    rng = random.Random()
    for _ in range(200):
        top = rng.choice([8, 12, 16])
        tokens = [rng.choice([1, 2, 4, top // 2, top]) for _ in range(rng.randint(1, 12))]
        max_batch = rng.randint(1, 6)
        plan = plan_batches(tokens, (top // 4, top), max_batch)
        for b, following in zip(plan, plan[1:]):
            assert b.tokens + tokens[following.items[0]] > top or len(b.items) == max_batch


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=7), budget_ladders.map(lambda b: tuple(x % 50 + 1 for x in b)), st.integers(1, 4))
def test_plan_batches_has_fewest_eager_items_by_brute_force(tokens, budgets, max_batch):
    budgets = tuple(sorted(set(budgets)))
    plan = plan_batches(tokens, budgets, max_batch)
    assert sum(b.eager for b in plan) == _brute_force_min_eager(tokens, budgets, max_batch)


def test_padding_stats_sums_plan():
    plan = plan_batches([200, 10, 20, 900, 40], (64, 128, 256), max_batch_size=8)
    s = padding_stats(plan)
    assert s.real_tokens == 1170
    assert s.computed_tokens == 128 + 256 + 900
    assert s.padding_tokens == 58 + 56
    assert s.batches == 3 and s.graph_batches == 2 and s.eager_batches == 1
    assert s.waste == pytest.approx(114 / 1284)
    assert padding_stats(iter(plan)) == s and padding_stats([]).waste == 0.0


@pytest.mark.parametrize("batches, words", [
    ([1, 2], ["batches[0]", "EncoderBatch", "plan_batches"]),
    (5, ["batches", "EncoderBatch", "plan_batches"]),
    ({1: 2}, ["batches", "EncoderBatch"]),
])
def test_padding_stats_refuses_what_is_not_a_plan(batches, words):
    # [1, 2] used to fail inside with "'int' object has no attribute 'tokens'".
    with pytest.raises(ArgumentTypeError) as err:
        padding_stats(batches)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


# ---------------------------------------------------------------- load_balance
def test_load_balance_issue_example_exactly():
    order, counts, loads = load_balance([1000, 100, 200, 50], 2)
    assert (list(order), list(counts), list(loads)) == ([0, 2, 1, 3], [1, 3], [1000, 350])


def test_load_balance_ties_go_to_lowest_rank_and_stable_order():
    lb = load_balance([5, 5, 5, 5], 3)
    assert lb.rank_items(0) == (0, 3)
    assert lb.rank_items(1) == (1,)
    assert lb.rank_items(2) == (2,)
    assert lb.counts == (2, 1, 1) and lb.loads == (10, 5, 5)


def test_load_balance_more_ranks_than_items():
    lb = load_balance([7], 4)
    assert lb.order == (0,) and lb.counts == (1, 0, 0, 0) and lb.loads == (7, 0, 0, 0)


@pytest.mark.parametrize("sizes,ranks,exc", [
    ([1, -1], 2, ArgumentError), ([1], 0, ArgumentError), ([1.0], 2, ArgumentTypeError),
    ({1: 2}, 2, ArgumentTypeError), (3, 2, ArgumentTypeError),
])
def test_load_balance_rejects_bad_input(sizes, ranks, exc):
    with pytest.raises(exc):
        load_balance(sizes, ranks)


def test_load_balance_accepts_numpy_and_checks_ranks():
    lb = load_balance(np.array([1000, 100, 200, 50]), np.int64(2))
    assert lb == load_balance([1000, 100, 200, 50], 2)
    with pytest.raises(ArgumentError, match="rank must be an int in \\[0, 1\\]"):
        lb.rank_items(2)
    with pytest.raises(ArgumentTypeError, match="rank"):
        lb.rank_items(1.0)
    assert lb.rank_items(np.int64(1)) == (2, 1, 3)


def reference_lpt(sizes, ranks):
    # Largest first (stable), each to the least loaded rank, lowest index on ties.
    per_rank, loads = [[] for _ in range(ranks)], [0] * ranks
    for i in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
        r = min(range(ranks), key=lambda q: (loads[q], q))
        per_rank[r].append(i)
        loads[r] += sizes[i]
    return per_rank, loads


@given(st.lists(st.integers(0, 1000), max_size=50), st.integers(1, 8))
def test_load_balance_invariants(sizes, ranks):
    lb = load_balance(sizes, ranks)
    assert sorted(lb.order) == list(range(len(sizes)))
    assert sum(lb.counts) == len(sizes) and len(lb.counts) == ranks
    for r in range(ranks):
        assert lb.loads[r] == sum(sizes[i] for i in lb.rank_items(r))
        # largest first within each rank
        s = [sizes[i] for i in lb.rank_items(r)]
        assert s == sorted(s, reverse=True)
    # greedy (LPT) bound: the max load is at most the mean load plus the largest item
    if sizes:
        assert max(lb.loads) <= sum(sizes) / ranks + max(sizes)
    per_rank, loads = reference_lpt(sizes, ranks)
    assert [lb.rank_items(r) for r in range(ranks)] == [tuple(p) for p in per_rank]
    assert lb.loads == tuple(loads)


# ---------------------------------------------------------------- suggest_budgets
def _brute_force_best_padding(hist, max_graphs, top):
    sizes = sorted(set(hist) | {top})
    others = [s for s in sizes if s != top]
    best = None
    for k in range(0, max_graphs):
        for combo in itertools.combinations(others, k):
            p = expected_padding(hist, tuple(sorted(combo)) + (top,))
            best = p if best is None else min(best, p)
    return best


def test_suggest_budgets_example():
    hist = {10: 100, 12: 1, 100: 50, 1000: 1}
    # (10, 100, 1000) pads one 12 to 100 (88); (12, 100, 1000) would pad a hundred 10s (200)
    assert suggest_budgets(hist, 3) == (10, 100, 1000)
    assert suggest_budgets(hist, 1) == (1000,)
    # more graphs than sizes: each size gets its own budget, no padding
    assert suggest_budgets(hist, 10) == (10, 12, 100, 1000)
    assert expected_padding(hist, suggest_budgets(hist, 10)) == 0


def test_suggest_budgets_accepts_token_list_and_max_budget():
    # 40 runs eagerly; (9, 32) pads 2 * 6 = 12 tokens, (3, 32) would pad 23
    assert suggest_budgets([3, 3, 9, 40], 2, max_budget=32) == (9, 32)
    assert suggest_budgets({3: 2, 9: 1, 40: 1}, 2, max_budget=32) == (9, 32)
    assert suggest_budgets([], 3, max_budget=64) == (64,)
    assert suggest_budgets({np.int64(5): np.int64(2), 9: 1}, np.int32(1)) == (9,)


def test_expected_padding_reads_a_mapping_as_counts():
    assert expected_padding({5: 2, 7: 1}, (8,)) == 3 + 3 + 1
    assert expected_padding([5, 5, 7, 100], (8,)) == 7  # 100 runs eagerly: no padding
    with pytest.raises(ArgumentError, match="pass \\(8, 16\\)"):
        expected_padding([5], (16, 8))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(1, 200), st.integers(1, 20), min_size=1, max_size=7), st.integers(1, 4))
def test_suggest_budgets_is_optimal_by_brute_force(hist, max_graphs):
    got = suggest_budgets(hist, max_graphs)
    top = max(hist)
    assert len(got) <= max_graphs and got[-1] == top and list(got) == sorted(set(got))
    assert expected_padding(hist, got) == _brute_force_best_padding(hist, max_graphs, top)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 512), min_size=1, max_size=60), st.integers(2, 6))
def test_suggested_workload_budgets_never_pad_more_than_powers_of_two(tokens, max_graphs):
    max_budget = 512
    pow2 = generate_budgets(512 >> (max_graphs - 1), 512)
    mine = suggest_budgets_for_workload(tokens, max_budget, 8, max_graphs)
    assert mine[-1] == max_budget and len(mine) <= max_graphs
    waste_mine = padding_stats(plan_batches(tokens, mine, 8)).padding_tokens
    waste_pow2 = padding_stats(plan_batches(tokens, pow2, 8)).padding_tokens
    assert waste_mine <= waste_pow2


@pytest.mark.parametrize("args, kwargs, exc, word", [
    (({}, 2), {}, ArgumentError, "token_histogram has no size"),
    (({4: 1}, 0), {}, ArgumentError, "max_graphs"),
    (({4: -1}, 2), {}, ArgumentError, "token_histogram count for 4"),
    (({4: 1.5}, 2), {}, ArgumentTypeError, "token_histogram count for 4"),
    ((5, 2), {}, ArgumentTypeError, "mapping {key: count}"),
    (({4: 1}, 2), dict(max_budget=0), ArgumentError, "max_budget"),
])
def test_suggest_budgets_rejects_bad_input(args, kwargs, exc, word):
    with pytest.raises(exc) as err:
        suggest_budgets(*args, **kwargs)
    assert word in str(err.value)


def test_workload_budgets_check_their_arguments_first():
    with pytest.raises(ArgumentError, match="max_graphs"):
        suggest_budgets_for_workload([4, 5], 64, 8, 0)
    with pytest.raises(ArgumentTypeError, match="max_budget"):
        suggest_budgets_for_workload([4, 5], 64.0, 8, 2)
    assert suggest_budgets_for_workload(np.array([4, 5]), np.int64(64), np.int64(8), np.int64(2)) == (9, 64)


def test_planning_imports_no_cupy():
    code = (
        "import sys; import cgraph.encoder, cgraph.core.budgets, cgraph.core.encoder_config, "
        "cgraph.core.sharding; assert 'cupy' not in sys.modules, 'cupy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
