"""GraphConfig: default capture sizes, explicit sizes, O(1) padding, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgraph import GraphConfig, GraphMode
from cgraph.core.config import default_capture_sizes


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
    for n in range(1, max(sizes) + 1):
        assert cfg.pad(n) == min(s for s in sizes if s >= n)


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
    (dict(mode="fastest"), ValueError, ["'fastest'", "full_and_piecewise"]),
    (dict(mode=3), TypeError, ["GraphMode or its name"]),
    (dict(mode="full", capture_sizes=[1, 8], max_capture_size=16), ValueError,
     ["max_capture_size=16", "largest is 8"]),
    (dict(mode="full", capture_sizes=[]), ValueError, ["empty"]),
    (dict(mode="full", capture_sizes=[1, 0]), ValueError, ["capture_sizes entry", "got 0"]),
    (dict(mode="full", capture_sizes=[1, True]), TypeError, ["capture_sizes entry", "bool"]),
    (dict(mode="full", capture_sizes=[1, 2.0]), TypeError, ["float"]),
    (dict(mode="full", capture_sizes=8), TypeError, ["iterable"]),
    (dict(mode="full", capture_sizes="1,2"), TypeError, ["iterable"]),
    (dict(mode="full", capture_sizes=[8, 4096], max_num_batched_tokens=2048), ValueError,
     ["[4096]", "max_num_batched_tokens=2048"]),
    (dict(mode="full", max_num_seqs=0), ValueError, ["max_num_seqs", "got 0"]),
    (dict(mode="full", max_num_seqs=True), TypeError, ["max_num_seqs", "bool"]),
    (dict(mode="full", max_num_batched_tokens=-5), ValueError, ["max_num_batched_tokens", "-5"]),
    (dict(mode="full", num_speculative_tokens=-1), ValueError, ["num_speculative_tokens"]),
    (dict(mode="full", num_speculative_tokens=1.5), TypeError, ["num_speculative_tokens", "float"]),
    (dict(mode="full", max_loras=-2), ValueError, ["max_loras", "0 disables LoRA"]),
    (dict(mode="full", max_loras=False), TypeError, ["max_loras", "bool"]),
    (dict(mode="full", specialize_lora=1), TypeError, ["specialize_lora", "bool"]),
    (dict(mode="full", max_capture_size=0), ValueError, ["max_capture_size", "got 0"]),
    (dict(mode="full", max_capture_size=True), TypeError, ["max_capture_size", "bool"]),
])
def test_bad_arguments_raise_clear_errors(kwargs, exc, words):
    with pytest.raises(exc) as err:
        GraphConfig(**kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_default_capture_sizes_helper_checks_its_argument():
    assert default_capture_sizes(3) == (1, 2)
    with pytest.raises(ValueError, match="max_size"):
        default_capture_sizes(0)
