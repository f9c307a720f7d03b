"""Encoder graph configuration: user budgets, user batch size, automatic derivation (CPU)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgraph.core.encoder_config import EncoderGraphConfig, resolve_encoder_config


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
    with pytest.raises(ValueError, match=r"max_batch_size \(65\) exceeds the smallest budget \(64\)"):
        resolve_encoder_config(budgets=(64, 128), max_batch_size=65)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(), ValueError, "no budgets given"),
        (dict(min_budget=64), ValueError, "no budgets given"),
        (dict(budgets=(64,), min_budget=64, max_budget=128), ValueError, "not both"),
        (dict(budgets=()), ValueError, "empty"),
        (dict(budgets=(64, 0)), ValueError, "positive"),
        (dict(budgets=(64, 1.5)), TypeError, "int"),
        (dict(budgets="64"), TypeError, "sequence"),
        (dict(budgets=(64,), max_batch_size=0), ValueError, "positive"),
        (dict(min_budget=128, max_budget=64), ValueError, "min_budget"),
        (dict(budgets=(64,), min_item_tokens=0), ValueError, "positive"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        resolve_encoder_config(**kwargs)


def test_config_value_rejects_unsorted_budgets_and_is_frozen_and_hashable():
    with pytest.raises(ValueError, match="ascending"):
        EncoderGraphConfig((128, 64), 4)
    cfg = EncoderGraphConfig((64, 128), 4)
    with pytest.raises(Exception):
        cfg.max_batch_size = 5  # type: ignore[misc]
    assert {cfg: 1}[EncoderGraphConfig([64, 128], 4)] == 1


@given(st.integers(1, 4096), st.integers(0, 8192), st.integers(1, 512))
def test_resolved_config_invariants(lo, extra, min_item):
    cfg = resolve_encoder_config(min_budget=lo, max_budget=lo + extra, min_item_tokens=min_item)
    assert 1 <= cfg.max_batch_size <= cfg.min_budget
    assert cfg.budgets[0] == lo and cfg.budgets[-1] == lo + extra
