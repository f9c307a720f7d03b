"""dispatch: vLLM's dispatcher rules, on examples, properties and against a plain reference."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgraph import (BatchDescriptor as BD, GraphConfig, GraphMode, build_dispatch_table,
                    capture_descriptors, dispatch)
from cgraph.bench._plain_dispatch import PlainDispatcher
from cgraph.core.errors import ArgumentError, ArgumentTypeError

N, P, F = GraphMode.NONE, GraphMode.PIECEWISE, GraphMode.FULL
FDO, FAP = GraphMode.FULL_DECODE_ONLY, GraphMode.FULL_AND_PIECEWISE


def table(mode, **kw):
    return build_dispatch_table(GraphConfig(mode, **kw))


# ---- examples the seed's rules imply (default sizes: 1, 2, 4, 8, ..., 512) -------------

@pytest.mark.parametrize("mode, args, expected", [
    # FULL_AND_PIECEWISE: uniform decode -> FULL decode graph, mixed -> PIECEWISE
    (FAP, (1, True), (F, BD(1, 1, True))),
    (FAP, (3, True), (F, BD(4, 4, True))),
    (FAP, (3, False), (P, BD(4))),
    (FAP, (200, True), (F, BD(200, 200, True))),
    (FAP, (256, True), (F, BD(256, 256, True))),
    (FAP, (257, True), (P, BD(272))),  # above q * max_num_seqs: no decode graph
    (FAP, (3, True, False, True), (P, BD(4))),  # disable_full
    (FAP, (512, False), (P, BD(512))),
    (FAP, (513, True), (N, BD(513))),
    # FULL: every batch uses the relaxed FULL graph
    (F, (3, True), (F, BD(4))),
    (F, (100, False), (F, BD(104))),
    (F, (3, True, False, True), (N, BD(3))),
    # PIECEWISE: uniformity does not matter
    (P, (3, True), (P, BD(4))),
    (P, (17, False, False, True), (P, BD(24))),
    # FULL_DECODE_ONLY: mixed batches run eagerly
    (FDO, (3, False), (N, BD(3))),
    (FDO, (3, True), (F, BD(4, 4, True))),
    (FDO, (300, True), (N, BD(300))),
    (FDO, (3, True, False, True), (N, BD(3))),
    # NONE: never a graph
    (N, (3, True), (N, BD(3))),
    (N, (1, False), (N, BD(1))),
])
def test_examples_without_lora(mode, args, expected):
    assert dispatch(table(mode), *args) == expected


def test_key_sets_without_lora():
    sizes = GraphConfig("full").capture_sizes
    decode = [s for s in sizes if s <= 256]
    assert table(FAP).keys(F) == {BD(s, s, True) for s in decode}
    assert table(FAP).keys(P) == {BD(s) for s in sizes}
    assert table(F).keys(F) == {BD(s) for s in sizes} and not table(F).keys(P)
    assert table(P).keys(P) == {BD(s) for s in sizes} and not table(P).keys(F)
    assert table(FDO).keys(F) == {BD(s, s, True) for s in decode} and not table(FDO).keys(P)
    assert not table(N).keys(F) and not table(N).keys("piecewise")
    with pytest.raises(ArgumentError, match="FULL and PIECEWISE"):
        table(FAP).keys(N)


def test_speculative_decoding_keys_and_padding():
    t = table(FAP, max_num_seqs=4, num_speculative_tokens=1)  # q = 2, sizes 1, 2, 4, 8, 16
    assert t.config.capture_sizes == (1, 2, 4, 8, 16)
    assert t.keys(F) == {BD(2, 1, True), BD(4, 2, True), BD(8, 4, True)}
    assert dispatch(t, 4, True) == (F, BD(4, 2, True))
    assert dispatch(t, 6, True) == (F, BD(8, 4, True))
    assert dispatch(t, 10, True) == (P, BD(16))  # 16 > q * max_num_seqs = 8
    assert dispatch(t, 6, False) == (P, BD(8))


def test_uniform_batch_padded_to_a_size_q_does_not_divide_falls_back_to_mixed():
    # q = 3; 4 and 8 are capture sizes no uniform decode batch can fill exactly.
    kw = dict(capture_sizes=[1, 2, 3, 4, 6, 8, 9, 12], max_num_seqs=4, num_speculative_tokens=2)
    t = table(FAP, **kw)
    assert {d.num_tokens for d in t.keys(F)} == {3, 6, 9, 12}
    assert dispatch(t, 4, True) == (P, BD(4))
    assert dispatch(t, 7, True) == (P, BD(8))
    assert dispatch(t, 5, True) == (F, BD(6, 2, True))
    assert dispatch(table(FDO, **kw), 4, True) == (N, BD(4))
    assert dispatch(table(F, **kw), 4, True) == (F, BD(4))


def test_lora_without_speculation_captures_every_adapter_count():
    t = table(FAP, max_loras=2)
    sizes = t.config.capture_sizes
    cases = [(True, 1), (True, 2), (False, 0)]
    assert t.keys(P) == {BD(s, None, False, h, k) for s in sizes for h, k in cases}
    assert t.keys(F) == {BD(s, s, True, h, k) for s in sizes if s <= 256 for h, k in cases}
    assert dispatch(t, 5, True, True, False, 2) == (F, BD(8, 8, True, True, 2))
    assert dispatch(t, 5, True, True, False, 1) == (F, BD(8, 8, True, True, 1))
    assert dispatch(t, 5, False, True, False, 2) == (P, BD(8, None, False, True, 2))
    assert dispatch(t, 5, True) == (F, BD(8, 8, True))
    assert dispatch(t, 5, True, True, False, 3) == (N, BD(5))  # more adapters than slots
    assert dispatch(t, 5, True, True, False, 0) == (N, BD(5))  # LoRA with no count: no graph


def test_lora_without_specialization_has_no_plain_graphs():
    t = table(P, max_loras=2, specialize_lora=False)
    assert all(d.has_lora for d in t.keys(P)) and len(t.keys(P)) == 2 * 51
    assert dispatch(t, 5) == (N, BD(5))
    assert dispatch(t, 5, False, True, False, 1) == (P, BD(8, None, False, True, 1))


def test_lora_with_speculation_uses_max_loras_graphs_only():
    t = table(FAP, max_num_seqs=8, num_speculative_tokens=1, max_loras=3)
    assert {(d.has_lora, d.num_active_loras) for d in t.keys(F) | t.keys(P)} == {(True, 3), (False, 0)}
    for count in (0, 1, 2, 3, 7):
        assert dispatch(t, 4, True, True, False, count) == (F, BD(4, 2, True, True, 3))
        assert dispatch(t, 5, False, True, False, count) == (P, BD(8, None, False, True, 3))
    assert dispatch(t, 4, True) == (F, BD(4, 2, True))
    t2 = table(FAP, max_num_seqs=8, num_speculative_tokens=1, max_loras=3, specialize_lora=False)
    assert dispatch(t2, 4, True) == (N, BD(4))
    assert dispatch(t2, 4, True, True, False, 1) == (F, BD(4, 2, True, True, 3))


@pytest.mark.parametrize("mode", list(GraphMode))
@pytest.mark.parametrize("spec", [0, 1, 3])
@pytest.mark.parametrize("loras, specialize", [(0, True), (2, True), (2, False)])
def test_key_counts_follow_the_rules(mode, spec, loras, specialize):
    cfg = GraphConfig(mode, max_num_seqs=16, num_speculative_tokens=spec, max_loras=loras,
                      specialize_lora=specialize)
    t = build_dispatch_table(cfg)
    q = 1 + spec
    cases = 1 if loras == 0 else (1 if spec else loras) + specialize
    mixed = len(cfg.capture_sizes) * cases if mode.mixed_mode() is not N else 0
    decode = sum(q <= s <= q * 16 and s % q == 0 for s in cfg.capture_sizes) * cases
    decode = decode if mode.separate_routine() else 0
    assert len(t.keys(F)) == (mixed if mode.mixed_mode() is F else 0) + decode
    assert len(t.keys(P)) == (mixed if mode.mixed_mode() is P else 0)
    assert t.keys(F) == PlainDispatcher(cfg).keys[F] and t.keys(P) == PlainDispatcher(cfg).keys[P]


def test_capture_descriptors_are_the_keys_largest_first():
    t = table(FAP, max_loras=2)
    order = capture_descriptors(t)
    assert set(order) == {F, P}
    for mode in (F, P):
        descs = order[mode]
        assert set(descs) == t.keys(mode) and len(descs) == len(t.keys(mode))
        sizes = [d.num_tokens for d in descs]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] == max(d.num_tokens for d in t.keys(mode))
    assert order[F][:3] == (BD(256, 256, True, True, 2), BD(256, 256, True, True, 1), BD(256, 256, True))
    assert capture_descriptors(table(N)) == {F: (), P: ()}
    with pytest.raises(ArgumentTypeError, match="DispatchTable"):
        capture_descriptors(GraphConfig("full"))


# ---- properties over random configs and batches ------------------------------------------

@st.composite
def configs(draw):
    mode = draw(st.sampled_from(list(GraphMode)))
    seqs = draw(st.integers(1, 64))
    spec = draw(st.integers(0, 3))
    batched = draw(st.integers(1, 4096))
    kw = dict(max_num_seqs=seqs, num_speculative_tokens=spec, max_num_batched_tokens=batched,
              max_loras=draw(st.integers(0, 3)), specialize_lora=draw(st.booleans()))
    if draw(st.booleans()):
        kw["capture_sizes"] = draw(st.lists(st.integers(1, batched), min_size=1, max_size=12))
    return GraphConfig(mode, **kw)


@st.composite
def batches(draw, cfg):
    n = draw(st.integers(1, cfg.max_capture_size + 40))
    has_lora = draw(st.booleans())
    return (n, draw(st.booleans()), has_lora, draw(st.booleans()), draw(st.integers(0, 5)))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_answers_are_keys_padded_up_or_none(data):
    cfg = data.draw(configs())
    t = build_dispatch_table(cfg)
    for _ in range(20):
        n, uniform, has_lora, no_full, loras = data.draw(batches(cfg))
        mode, desc = dispatch(t, n, uniform, has_lora, no_full, loras)
        if mode is N:
            assert desc == BD(n)
        else:
            assert desc in t.keys(mode)
            assert desc.num_tokens == cfg.pad(n) >= n
            assert desc.has_lora == has_lora
        if n > cfg.max_capture_size:
            assert (mode, desc) == (N, BD(n))
        if no_full:
            assert mode is not F
        if cfg.mode is N:
            assert mode is N


@settings(max_examples=60, deadline=None)
@given(configs())
def test_padding_is_monotone(cfg):
    t = build_dispatch_table(cfg)
    last = 0
    for n in range(1, cfg.max_capture_size + 1):
        padded = cfg.pad(n)
        assert n <= padded >= last
        last = padded
        mode, desc = dispatch(t, n)
        assert mode is N or desc.num_tokens == padded


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fast_dispatch_agrees_with_plain_reference(data):
    cfg = data.draw(configs())
    t = build_dispatch_table(cfg)
    plain = PlainDispatcher(cfg)
    assert t.keys(F) == plain.keys[F] and t.keys(P) == plain.keys[P]
    for _ in range(30):
        args = data.draw(batches(cfg))
        assert dispatch(t, *args) == plain.dispatch(*args), args


def test_fast_dispatch_agrees_with_plain_reference_exhaustively_on_small_configs():
    rng = random.Random()
    for mode in GraphMode:
        for spec, loras, specialize in [(0, 0, True), (1, 2, True), (2, 2, False), (0, 3, False)]:
            sizes = sorted(rng.sample(range(1, 40), rng.randint(1, 8)))
            cfg = GraphConfig(mode, capture_sizes=sizes, max_num_seqs=rng.randint(1, 12),
                              num_speculative_tokens=spec, max_loras=loras, specialize_lora=specialize)
            t, plain = build_dispatch_table(cfg), PlainDispatcher(cfg)
            for n in range(1, cfg.max_capture_size + 3):
                for uniform in (False, True):
                    for no_full in (False, True):
                        for has_lora, count in [(False, 0), (True, 0), (True, 1), (True, loras), (False, 1)]:
                            args = (n, uniform, has_lora, no_full, count)
                            assert dispatch(t, *args) == plain.dispatch(*args), (cfg, args)


def test_repeated_calls_and_numpy_inputs_give_the_same_answer():
    t = table(FAP, max_loras=4)
    rng = random.Random()
    for _ in range(500):
        args = (rng.randint(1, 700), rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.2,
                rng.randint(0, 6))
        first = dispatch(t, *args)
        assert dispatch(t, *args) is first or dispatch(t, *args) == first
        numpy_args = (np.int64(args[0]), np.bool_(args[1]), np.bool_(args[2]), np.bool_(args[3]),
                      np.int32(args[4]))
        assert dispatch(t, *numpy_args) == first
        kw = dict(uniform_decode=args[1], has_lora=args[2], disable_full=args[3], num_active_loras=args[4])
        assert dispatch(t, args[0], **kw) == first


def test_precomputed_state_stays_bounded():
    cfg = GraphConfig(FAP, max_loras=2, max_num_batched_tokens=1024)
    t = build_dispatch_table(cfg)
    rng = random.Random()
    for _ in range(3000):
        dispatch(t, rng.randint(1, 5000), rng.random() < 0.5, rng.random() < 0.5,
                 rng.random() < 0.5, rng.randint(0, 50))
    assert len(t._rows) <= 8 * (cfg.max_loras + 1)
    assert all(len(row) == cfg.max_capture_size + 1 for row in t._rows.values())
    assert set(t._eager) <= set(range(cfg.max_capture_size + 1, cfg.max_num_batched_tokens + 1))


def test_tables_compare_by_config_and_keys():
    a, b = table(FAP, max_loras=1), table(FAP, max_loras=1)
    dispatch(a, 5, True)
    assert a == b and hash(a) == hash(b)
    assert a != table(FAP)
    assert a.mode is FAP and a.config == GraphConfig(FAP, max_loras=1)


# ---- bad inputs ------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, exc, words", [
    ((0,), {}, ArgumentError, ["num_tokens", ">= 1", "got 0"]),
    ((-4,), {}, ArgumentError, ["num_tokens", "got -4"]),
    ((True,), {}, ArgumentTypeError, ["num_tokens", "True", "bool"]),
    ((4.0,), {}, ArgumentTypeError, ["num_tokens", "float"]),
    (("4",), {}, ArgumentTypeError, ["num_tokens", "str"]),
    ((4,), dict(uniform_decode=1), ArgumentTypeError, ["uniform_decode", "bool", "True or False"]),
    ((4,), dict(has_lora=None), ArgumentTypeError, ["has_lora", "None"]),
    ((4,), dict(disable_full="no"), ArgumentTypeError, ["disable_full", "'no'"]),
    ((4,), dict(num_active_loras=-1), ArgumentError, ["num_active_loras", "got -1"]),
    ((4,), dict(num_active_loras=True), ArgumentTypeError, ["num_active_loras", "bool"]),
    ((4,), dict(num_active_loras=1.0), ArgumentTypeError, ["num_active_loras", "float"]),
])
def test_bad_inputs_raise_even_after_warm_up(args, kwargs, exc, words):
    t = table(FAP, max_loras=2)
    for uniform in (False, True):
        for has_lora, count in [(False, 0), (True, 1)]:
            for no_full in (False, True):
                dispatch(t, 4, uniform, has_lora, no_full, count)  # build every row first
    with pytest.raises(exc) as err:
        dispatch(t, *args, **kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_dispatch_and_build_reject_wrong_objects():
    with pytest.raises(ArgumentTypeError, match="build_dispatch_table"):
        dispatch(GraphConfig("full"), 4)
    with pytest.raises(ArgumentTypeError, match="GraphConfig"):
        build_dispatch_table("full")
