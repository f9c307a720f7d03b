"""Encoder graph configuration: user budgets, user batch size, automatic derivation (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgraph.core.encoder_config import EncoderGraphConfig, resolve_encoder_config
from cgraph.core.errors import ArgumentError, ArgumentTypeError


def test_user_budgets_are_sorted_and_deduplicated():
    cfg = resolve_encoder_config(budgets=[512, 64, 128, 64], max_batch_size=8)
    assert cfg == EncoderGraphConfig((64, 128, 512), 8)
    assert cfg.min_budget == 64 and cfg.max_budget == 512


def test_automatic_budgets_from_range():
    cfg = resolve_encoder_config(min_budget=64, max_budget=800, max_batch_size=16)
    assert cfg.budgets == (64, 128, 256, 512, 800)
    assert cfg.max_batch_size == 16


def test_automatic_batch_size_is_capped_by_smallest_budget():
    cfg = resolve_encoder_config(budgets=(32, 4096))
    assert cfg.max_batch_size == 32
    cfg = resolve_encoder_config(budgets=(256, 1024), min_item_tokens=64)
    assert cfg.max_batch_size == 1024 // 64


def test_automatic_batch_size_is_at_least_one():
    cfg = resolve_encoder_config(budgets=(16, 64), min_item_tokens=1000)
    assert cfg.max_batch_size == 1


def test_batch_size_above_smallest_budget_is_rejected_with_fix():
    with pytest.raises(ArgumentError, match=r"max_batch_size \(65\) exceeds the smallest budget \(64\)"):
        resolve_encoder_config(budgets=(64, 128), max_batch_size=65)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(), ArgumentError, "no budgets given"),
        (dict(min_budget=64), ArgumentError, "no budgets given"),
        (dict(budgets=(64,), min_budget=64, max_budget=128), ArgumentError, "not both"),
        (dict(budgets=()), ArgumentError, "empty"),
        (dict(budgets=(64, 0)), ArgumentError, "budgets entry must be an int >= 1, got 0"),
        (dict(budgets=(64, 1.5)), ArgumentTypeError, "int"),
        (dict(budgets="64"), ArgumentTypeError, "iterable of ints"),
        (dict(budgets={64: 1}), ArgumentTypeError, "mapping"),
        (dict(budgets=(64,), max_batch_size=0), ArgumentError, "max_batch_size must be an int >= 1"),
        (dict(budgets=(64,), max_batch_size=2.0), ArgumentTypeError, "max_batch_size"),
        (dict(min_budget=128, max_budget=64), ArgumentError, "min_budget"),
        (dict(min_budget=64.0, max_budget=128), ArgumentTypeError, "min_budget"),
        (dict(budgets=(64,), min_item_tokens=0), ArgumentError, "min_item_tokens must be an int >= 1"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        resolve_encoder_config(**kwargs)


def test_numpy_integers_are_accepted_everywhere():
    cfg = resolve_encoder_config(budgets=np.array([512, 64]), max_batch_size=np.int64(8),
                                 min_item_tokens=np.int32(2))
    assert cfg == EncoderGraphConfig((64, 512), 8)
    assert all(type(b) is int for b in cfg.budgets) and type(cfg.max_batch_size) is int
    assert resolve_encoder_config(min_budget=np.int64(64), max_budget=np.int64(256)).budgets == (64, 128, 256)
    assert EncoderGraphConfig((np.int64(64),), np.int64(4)) == EncoderGraphConfig((64,), 4)


def test_config_value_rejects_unsorted_budgets_and_is_frozen_and_hashable():
    with pytest.raises(ArgumentError, match=r"ascending.*pass \(64, 128\)"):
        EncoderGraphConfig((128, 64), 4)
    with pytest.raises(ArgumentTypeError, match="EncoderGraphConfig.max_batch_size"):
        EncoderGraphConfig((64, 128), True)
    cfg = EncoderGraphConfig((64, 128), 4)
    with pytest.raises(Exception):
        cfg.max_batch_size = 5  # type: ignore[misc]
    assert {cfg: 1}[EncoderGraphConfig([64, 128], 4)] == 1


@given(st.integers(1, 4096), st.integers(0, 8192), st.integers(1, 512))
def test_resolved_config_invariants(lo, extra, min_item):
    cfg = resolve_encoder_config(min_budget=lo, max_budget=lo + extra, min_item_tokens=min_item)
    assert 1 <= cfg.max_batch_size <= cfg.min_budget
    assert cfg.budgets[0] == lo and cfg.budgets[-1] == lo + extra
