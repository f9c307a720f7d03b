"""padding_report: per-mode and per-graph usage, checked against independent tallies."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cgraph import BatchDescriptor as BD, GraphConfig, GraphMode, build_dispatch_table, padding_report
from cgraph.bench._plain_dispatch import PlainDispatcher
from cgraph.core.buckets import TokenUsage
from cgraph.core.errors import ArgumentError, ArgumentTypeError, NotFoundError

F, P, N = GraphMode.FULL, GraphMode.PIECEWISE, GraphMode.NONE


def test_small_report_by_hand():
    t = build_dispatch_table(GraphConfig("full_and_piecewise", capture_sizes=[1, 2, 4, 8], max_num_seqs=8))
    report = padding_report(t, [3, (3, True), (5, True), (8, False), 9, BD(1, uniform=True)])
    # 3 -> P4; (3,u) -> F4u; (5,u) -> F8u; 8 -> P8; 9 -> NONE; (1,u) -> F1u
    assert (report[F].batches, report[F].real_tokens, report[F].computed_tokens) == (3, 9, 13)
    assert (report[P].batches, report[P].real_tokens, report[P].computed_tokens) == (2, 11, 12)
    assert report[N].batches == 1 and report[N].real_tokens == report[N].computed_tokens == 9
    assert report.batches == 6 and report.graph_batches == 5
    assert report.hit_rate == pytest.approx(5 / 6)
    assert report.real_tokens == 29 and report.computed_tokens == 34
    assert report.waste == pytest.approx(5 / 34)
    assert report[F].padding_tokens == 4 and report[F].waste == pytest.approx(4 / 13)
    assert [(g.mode, g.descriptor.num_tokens, g.batches) for g in report.graphs] == [
        (P, 8, 1), (F, 8, 1), (P, 4, 1), (F, 4, 1), (F, 1, 1)]
    assert report["full"] == report[F]
    # the report, each mode and each graph are all TokenUsage values
    assert all(isinstance(u, TokenUsage) for u in (report, *report.modes, *report.graphs))
    # the names notebooks/_sources/02_dispatch.py still reads
    assert (report.padded_tokens, report.waste_ratio) == (report.computed_tokens, report.waste)
    assert report[F].waste_ratio == report[F].waste


def random_workload(rng, cfg, count):
    batches = []
    for _ in range(count):
        lora = rng.randint(0, cfg.max_loras)
        batches.append(BD(rng.randint(1, cfg.max_capture_size + 60), None, rng.random() < 0.6,
                          lora > 0, lora))
    return batches


@pytest.mark.parametrize("disable_full", [False, True])
@pytest.mark.parametrize("mode", ["full_and_piecewise", "full", "full_decode_only"])
def test_random_workload_matches_a_tally_of_the_plain_dispatcher(mode, disable_full):
    rng = random.Random()
    cfg = GraphConfig(mode, max_num_seqs=64, max_loras=3)
    t, plain = build_dispatch_table(cfg), PlainDispatcher(cfg)
    batches = random_workload(rng, cfg, 400)
    report = padding_report(t, batches, disable_full=disable_full)
    per_mode = {m: [0, 0, 0] for m in (F, P, N)}
    per_graph = {}
    for b in batches:
        hit = plain.dispatch(b.num_tokens, b.uniform, b.has_lora, disable_full, b.num_active_loras)
        for tally in [per_mode[hit[0]]] + ([per_graph.setdefault(hit, [0, 0, 0])] if hit[0] is not N else []):
            tally[0] += 1
            tally[1] += b.num_tokens
            tally[2] += hit[1].num_tokens
    for mode_, (count, real, computed) in per_mode.items():
        usage = report[mode_]
        assert (usage.batches, usage.real_tokens, usage.computed_tokens) == (count, real, computed)
    got = {(g.mode, g.descriptor): [g.batches, g.real_tokens, g.computed_tokens] for g in report.graphs}
    assert got == per_graph
    assert len(report.graphs) == len(per_graph)
    sizes = [g.descriptor.num_tokens for g in report.graphs]
    assert sizes == sorted(sizes, reverse=True)
    if disable_full:
        assert report[F].batches == 0


def test_a_mapping_is_batch_counts():
    t = build_dispatch_table(GraphConfig("full", capture_sizes=[4, 1024]))
    report = padding_report(t, {3: 100, 700: 2})
    assert report.batches == 102
    assert report.real_tokens == 3 * 100 + 700 * 2 and report.computed_tokens == 4 * 100 + 1024 * 2
    assert report == padding_report(t, [3] * 100 + [700] * 2)


def test_mapping_keys_take_every_batch_form_and_equal_the_expanded_list():
    rng = random.Random()
    cfg = GraphConfig("full_and_piecewise", max_num_seqs=32, max_loras=2)
    t = build_dispatch_table(cfg)
    forms = [rng.randint(1, 80), (rng.randint(1, 80), True), BD(rng.randint(1, 80), None, True, True, 2)]
    counts = {form: rng.randint(0, 5) for form in forms}
    expanded = [form for form, c in counts.items() for _ in range(c)]
    assert padding_report(t, counts) == padding_report(t, expanded)
    assert padding_report(t, Counter(expanded)) == padding_report(t, expanded)
    huge = padding_report(t, {5: 10**30})
    assert huge.batches == 10**30 and huge.computed_tokens == 8 * 10**30


def test_empty_workload():
    report = padding_report(build_dispatch_table(GraphConfig("full")), [])
    assert report.batches == 0 and report.hit_rate == 0.0 and report.waste == 0.0
    assert padding_report(build_dispatch_table(GraphConfig("full")), {4: 0}).batches == 0


@pytest.mark.parametrize("batches, exc, words", [
    ([4, 0], ArgumentError, ["batch num_tokens"]),
    ([4, True], ArgumentTypeError, ["bool"]),
    ([4, (4, 1)], ArgumentTypeError, ["batch uniform"]),
    ([4, (4, True, False)], ArgumentError, ["(num_tokens, uniform)"]),
    ([4, "4"], ArgumentTypeError, ["BatchDescriptor"]),
    (5, ArgumentTypeError, ["batches", "mapping {key: count}", "iterable", "[3, (5, True)]"]),
    ("45", ArgumentTypeError, ["batches", "mapping"]),
    (BD(4), ArgumentTypeError, ["one BatchDescriptor", "[descriptor]"]),
    ({4: 1.5}, ArgumentTypeError, ["batches count for 4", "int"]),
    ({4: -1}, ArgumentError, ["batches count for 4", ">= 0"]),
    ({(4, 1): 2}, ArgumentTypeError, ["batch uniform"]),
])
def test_bad_batches(batches, exc, words):
    t = build_dispatch_table(GraphConfig("full"))
    with pytest.raises(exc) as err:
        padding_report(t, batches)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_report_needs_a_table_and_runtime_modes():
    with pytest.raises(ArgumentTypeError, match="DispatchTable"):
        padding_report(GraphConfig("full"), [1])
    with pytest.raises(ArgumentTypeError, match="disable_full"):
        padding_report(build_dispatch_table(GraphConfig("full")), [1], disable_full=1)
    report = padding_report(build_dispatch_table(GraphConfig("full")), [1])
    with pytest.raises(NotFoundError, match="FULL, PIECEWISE or NONE"):
        report["full_and_piecewise"]
