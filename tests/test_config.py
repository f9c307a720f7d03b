"""GraphConfig: default capture sizes, explicit sizes, O(1) padding, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgraph import GraphConfig, GraphMode, build_dispatch_table, dispatch
from cgraph.core.config import MAX_CAPTURE_SIZE, MAX_KEYS_PER_MODE, MAX_LORAS, default_capture_sizes
from cgraph.core.errors import ArgumentError, ArgumentTypeError


def expected_defaults(top: int) -> list[int]:
    # The rule, written out independently of the implementation.
    out = [s for s in (1, 2, 4) if s <= top]
    out += [s for s in range(8, 256, 8) if s <= top]
    out += [s for s in range(256, top + 1, 16)]
    return out


def test_default_sizes_for_256_seqs_are_51_up_to_512():
    cfg = GraphConfig("full", max_num_seqs=256)
    assert len(cfg.capture_sizes) == 51
    assert cfg.capture_sizes == tuple(expected_defaults(512))
    assert cfg.capture_sizes[:5] == (1, 2, 4, 8, 16)
    assert cfg.capture_sizes[-3:] == (480, 496, 512)
    assert cfg.max_capture_size == 512


@pytest.mark.parametrize("seqs, spec, batched, top", [
    (1, 0, 8192, 2), (3, 0, 8192, 6), (4, 0, 8192, 8), (64, 0, 2048, 128), (100, 0, 8192, 200),
    (64, 1, 8192, 256), (64, 3, 8192, 512), (64, 7, 8192, 512), (256, 0, 300, 300),
    (256, 0, 100, 100), (1000, 0, 8192, 512),
])
def test_default_max_rule(seqs, spec, batched, top):
    cfg = GraphConfig("piecewise", max_num_seqs=seqs, num_speculative_tokens=spec,
                      max_num_batched_tokens=batched)
    assert cfg.capture_sizes == tuple(expected_defaults(top))
    assert cfg.max_capture_size == cfg.capture_sizes[-1] <= top
    assert cfg.uniform_decode_query_len == 1 + spec


def test_max_capture_size_alone_bounds_defaults_and_becomes_last_size():
    cfg = GraphConfig("full", max_capture_size=300)
    assert cfg.capture_sizes == tuple(expected_defaults(300))
    assert cfg.max_capture_size == 288
    assert GraphConfig("full", max_capture_size=1000, max_num_batched_tokens=600).max_capture_size == 592


def test_explicit_sizes_are_deduplicated_and_sorted():
    cfg = GraphConfig(GraphMode.FULL, capture_sizes=[16, 4, np.int64(8), 4, 1])
    assert cfg.capture_sizes == (1, 4, 8, 16) and cfg.max_capture_size == 16
    assert all(type(s) is int for s in cfg.capture_sizes)
    assert GraphConfig("full", capture_sizes=(3,), max_capture_size=3).max_capture_size == 3


def test_configs_are_values():
    a = GraphConfig("full", capture_sizes=expected_defaults(512))
    b = GraphConfig(GraphMode.FULL)
    assert a == b and hash(a) == hash(b)
    assert GraphConfig("full", max_loras=2) != b


@given(st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_pad_is_the_smallest_size_not_below(sizes):
    cfg = GraphConfig("full", capture_sizes=sizes)
    assert len(cfg.pad_table) == max(sizes) + 1
    for n in range(1, max(sizes) + 1):
        assert cfg.pad(n) == cfg.pad_table[n] == min(s for s in sizes if s >= n)


def test_pad_above_max_and_bad_values():
    cfg = GraphConfig("full", capture_sizes=[1, 8])
    assert cfg.pad(np.int32(5)) == 8
    with pytest.raises(ValueError, match=r"num_tokens=9 is above max_capture_size=8"):
        cfg.pad(9)
    with pytest.raises(ValueError, match="num_tokens must be an int >= 1, got 0"):
        cfg.pad(0)
    with pytest.raises(TypeError, match="bool"):
        cfg.pad(True)
    with pytest.raises(TypeError, match="float"):
        cfg.pad(2.5)


def test_mode_names_and_lora_speculation_flags():
    cfg = GraphConfig("Full_And_Piecewise", max_loras=4, num_speculative_tokens=2)
    assert cfg.mode is GraphMode.FULL_AND_PIECEWISE
    assert cfg.has_lora and cfg.has_speculation and cfg.uniform_decode_query_len == 3
    plain = GraphConfig("none")
    assert not plain.has_lora and not plain.has_speculation


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(mode="fastest"), ArgumentError, ["'fastest'", "full_and_piecewise"]),
    (dict(mode=3), ArgumentTypeError, ["GraphMode or its name"]),
    (dict(mode="full", capture_sizes=[1, 8], max_capture_size=16), ArgumentError,
     ["max_capture_size=16", "largest is 8"]),
    (dict(mode="full", capture_sizes=[]), ArgumentError, ["empty"]),
    (dict(mode="full", capture_sizes=[1, 0]), ArgumentError, ["capture_sizes entry", "got 0"]),
    (dict(mode="full", capture_sizes=[1, True]), ArgumentTypeError, ["capture_sizes entry", "bool"]),
    (dict(mode="full", capture_sizes=[1, 2.0]), ArgumentTypeError, ["float"]),
    (dict(mode="full", capture_sizes=8), ArgumentTypeError, ["iterable"]),
    (dict(mode="full", capture_sizes="1,2"), ArgumentTypeError, ["iterable"]),
    (dict(mode="full", capture_sizes=[8, 4096], max_num_batched_tokens=2048), ArgumentError,
     ["[4096]", "max_num_batched_tokens=2048"]),
    (dict(mode="full", max_num_seqs=0), ArgumentError, ["max_num_seqs", "got 0"]),
    (dict(mode="full", max_num_seqs=True), ArgumentTypeError, ["max_num_seqs", "bool"]),
    (dict(mode="full", max_num_batched_tokens=-5), ArgumentError, ["max_num_batched_tokens", "-5"]),
    (dict(mode="full", num_speculative_tokens=-1), ArgumentError, ["num_speculative_tokens"]),
    (dict(mode="full", num_speculative_tokens=1.5), ArgumentTypeError, ["num_speculative_tokens", "float"]),
    (dict(mode="full", max_loras=-2), ArgumentError, ["max_loras", "0 disables LoRA"]),
    (dict(mode="full", max_loras=False), ArgumentTypeError, ["max_loras", "bool"]),
    (dict(mode="full", specialize_lora=1), ArgumentTypeError, ["specialize_lora", "bool"]),
    (dict(mode="full", max_capture_size=0), ArgumentError, ["max_capture_size", "got 0"]),
    (dict(mode="full", max_capture_size=True), ArgumentTypeError, ["max_capture_size", "bool"]),
])
def test_bad_arguments_raise_clear_errors(kwargs, exc, words):
    with pytest.raises(exc) as err:
        GraphConfig(**kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_default_capture_sizes_helper_checks_its_argument():
    assert default_capture_sizes(3) == (1, 2)
    with pytest.raises(ArgumentError, match="max_size"):
        default_capture_sizes(0)
    with pytest.raises(ArgumentError, match="MAX_CAPTURE_SIZE"):
        default_capture_sizes(MAX_CAPTURE_SIZE + 1)


# ---- limits: refused up front, before any table is built (the benchmark times the worst case)

@pytest.mark.parametrize("kwargs, words", [
    # capture_sizes=[10**8] used to build a 10**8-entry pad table (8 s); 10**9 a MemoryError
    (dict(capture_sizes=[10**8], max_num_batched_tokens=10**9), ["capture_sizes entry", "100000000",
                                                                 "MAX_CAPTURE_SIZE=32768"]),
    (dict(capture_sizes=[4, 10**9]), ["capture_sizes entry", "MAX_CAPTURE_SIZE"]),
    (dict(capture_sizes=range(1, 10**12)), ["capture_sizes entry", "32769"]),
    (dict(max_capture_size=10**9, max_num_batched_tokens=10**9), ["max_capture_size", "32768"]),
    # max_loras=10**6 used to run for minutes
    (dict(max_loras=10**6), ["max_loras", "1000000", "MAX_LORAS=64"]),
    (dict(max_loras=MAX_LORAS + 1), ["max_loras", "MAX_LORAS"]),
    (dict(capture_sizes=range(1, 1001), max_loras=64), ["65000 graph keys", "MAX_KEYS_PER_MODE=32768",
                                                         "fewer"]),
])
def test_limits_are_checked_up_front(kwargs, words):
    with pytest.raises(ArgumentError) as err:
        GraphConfig("full_and_piecewise", **kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_configs_at_the_limits_are_accepted():
    top = GraphConfig("full", capture_sizes=[MAX_CAPTURE_SIZE], max_num_batched_tokens=MAX_CAPTURE_SIZE)
    assert top.pad(1) == MAX_CAPTURE_SIZE and len(top.pad_table) == MAX_CAPTURE_SIZE + 1
    assert GraphConfig("full", max_loras=MAX_LORAS).max_loras == MAX_LORAS
    per_mode = MAX_KEYS_PER_MODE // (MAX_LORAS + 1)
    cfg = GraphConfig("full", capture_sizes=range(1, per_mode + 1), max_loras=MAX_LORAS)
    assert len(cfg.capture_sizes) * (MAX_LORAS + 1) <= MAX_KEYS_PER_MODE
    table = build_dispatch_table(cfg)
    assert len(table.full_keys) == per_mode * (MAX_LORAS + 1)  # every size x (64 counts + no LoRA)
    assert dispatch(table, 3, False, True, False, MAX_LORAS)[1].num_active_loras == MAX_LORAS
