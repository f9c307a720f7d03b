"""padding_report: per-mode hits and padding, checked against a hand tally."""

from __future__ import annotations

import random

import pytest

from cgraph import BatchDescriptor as BD, GraphConfig, GraphMode, build_dispatch_table, padding_report
from cgraph.bench._plain_dispatch import PlainDispatcher

F, P, N = GraphMode.FULL, GraphMode.PIECEWISE, GraphMode.NONE


def test_small_report_by_hand():
    t = build_dispatch_table(GraphConfig("full_and_piecewise", capture_sizes=[1, 2, 4, 8], max_num_seqs=8))
    report = padding_report(t, [3, (3, True), (5, True), (8, False), 9, BD(1, uniform=True)])
    # 3 -> P4; (3,u) -> F4u; (5,u) -> F8u; 8 -> P8; 9 -> NONE; (1,u) -> F1u
    assert report[F].batches == 3 and report[F].real_tokens == 9 and report[F].padded_tokens == 13
    assert report[P].batches == 2 and report[P].real_tokens == 11 and report[P].padded_tokens == 12
    assert report[N].batches == 1 and report[N].real_tokens == report[N].padded_tokens == 9
    assert report.batches == 6 and report.graph_batches == 5
    assert report.hit_rate == pytest.approx(5 / 6)
    assert report.real_tokens == 29 and report.padded_tokens == 34
    assert report.waste_ratio == pytest.approx(5 / 34)
    assert report[F].waste_tokens == 4 and report[F].waste_ratio == pytest.approx(4 / 13)
    assert [(g.mode, g.descriptor.num_tokens, g.batches) for g in report.graphs] == [
        (P, 8, 1), (F, 8, 1), (P, 4, 1), (F, 4, 1), (F, 1, 1)]
    assert report["full"] == report[F]


def test_random_workload_matches_a_tally_of_the_plain_dispatcher():
    rng = random.Random()
    cfg = GraphConfig("full_and_piecewise", max_num_seqs=64, max_loras=2)
    t, plain = build_dispatch_table(cfg), PlainDispatcher(cfg)
    batches = []
    for _ in range(400):
        lora = rng.randint(0, 2)
        batches.append(BD(rng.randint(1, 200), None, rng.random() < 0.6, lora > 0, lora))
    no_full = rng.random() < 0.5
    report = padding_report(t, batches, disable_full=no_full)
    tally = {m: [0, 0, 0] for m in (F, P, N)}
    for b in batches:
        mode, desc = plain.dispatch(b.num_tokens, b.uniform, b.has_lora, no_full, b.num_active_loras)
        tally[mode][0] += 1
        tally[mode][1] += b.num_tokens
        tally[mode][2] += desc.num_tokens
    for mode, (count, real, padded) in tally.items():
        usage = report[mode]
        assert (usage.batches, usage.real_tokens, usage.padded_tokens) == (count, real, padded)
    assert sum(g.batches for g in report.graphs) == report.graph_batches
    assert sum(g.padded_tokens for g in report.graphs) == report[F].padded_tokens + report[P].padded_tokens
    assert all(g.descriptor in t.keys(g.mode) for g in report.graphs)


def test_empty_workload():
    report = padding_report(build_dispatch_table(GraphConfig("full")), [])
    assert report.batches == 0 and report.hit_rate == 0.0 and report.waste_ratio == 0.0


@pytest.mark.parametrize("batch, exc, word", [
    (0, ValueError, "batch num_tokens"),
    (True, TypeError, "bool"),
    ((4, 1), TypeError, "batch uniform"),
    ((4, True, False), ValueError, "(num_tokens, uniform)"),
    ("4", TypeError, "BatchDescriptor"),
])
def test_bad_batches(batch, exc, word):
    t = build_dispatch_table(GraphConfig("full"))
    with pytest.raises(exc, match=None) as err:
        padding_report(t, [4, batch])
    assert word in str(err.value)


def test_report_needs_a_table():
    with pytest.raises(TypeError, match="DispatchTable"):
        padding_report(GraphConfig("full"), [1])
