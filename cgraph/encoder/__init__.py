"""The vision encoder application: a ViT-like model and its budget-graph manager (GPU),
plus the pure planning it uses, re-exported from cgraph.core.

Pure (from cgraph.core): generate_budgets, smallest_fitting_budget, plan_batches,
EncoderBatch, load_balance, suggest_budgets, EncoderGraphConfig, ShardPlan, ...
GPU, loaded on first use: VisionEncoder, EncoderSpec (model), EncoderGraphManager,
EncoderStats (manager), DataParallelEncoder (data_parallel).
"""

from __future__ import annotations

import importlib
from typing import Any

from cgraph.core.budgets import (
    EncoderBatch,
    LoadBalance,
    PaddingStats,
    expected_padding,
    generate_budgets,
    load_balance,
    padding_stats,
    plan_batches,
    smallest_fitting_budget,
    suggest_budgets,
    suggest_budgets_for_workload,
)
from cgraph.core.encoder_config import EncoderGraphConfig, resolve_encoder_config
from cgraph.core.sharding import ShardPlan, pack_rank_outputs, shard_items, unpack_gathered

_LAZY = {
    "VisionEncoder": "cgraph.encoder.model",
    "EncoderSpec": "cgraph.encoder.model",
    "EncoderGraphManager": "cgraph.encoder.manager",
    "EncoderStats": "cgraph.encoder.manager",
    "DataParallelEncoder": "cgraph.encoder.data_parallel",
}

__all__ = [
    "EncoderBatch", "EncoderGraphConfig", "LoadBalance", "PaddingStats", "ShardPlan",
    "expected_padding", "generate_budgets", "load_balance", "pack_rank_outputs",
    "padding_stats", "plan_batches", "resolve_encoder_config", "shard_items",
    "smallest_fitting_budget", "suggest_budgets", "suggest_budgets_for_workload",
    "unpack_gathered", *_LAZY,
]


def __getattr__(name: str) -> Any:
    # GPU modules load only when asked for, so planning works without CuPy.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cgraph.encoder' has no attribute {name!r}")
