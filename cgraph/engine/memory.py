"""Sizing the KV cache from a memory budget (pure arithmetic; the engine measures the inputs).

The engine's device memory is its static buffers, its graph pool and its KV cache.
Static buffers are allocated first and known exactly; the graph pool is measured before
anything is captured (cgraph.estimate_graph_memory: graphs captured largest first into one
pool need what the largest alone needs); the KV cache takes the rest, in whole blocks.
"""

from __future__ import annotations

import attrs

from cgraph.core.errors import CapacityError
from cgraph.models.config import LlamaConfig

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


@attrs.frozen
class MemoryPlan:
    """The engine's device memory: KV blocks and their bytes, static and graph bytes, budget."""

    kv_blocks: int
    block_bytes: int
    static_bytes: int
    graph_bytes: int
    budget_bytes: int | None

    @property
    def kv_bytes(self) -> int:
        return self.kv_blocks * self.block_bytes

    @property
    def total_bytes(self) -> int:
        return self.static_bytes + self.graph_bytes + self.kv_bytes


def kv_block_bytes(cfg: LlamaConfig, block_size: int) -> int:
    """Bytes of one KV cache block over every layer: keys and values of block_size tokens."""
    return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * _ITEMSIZE[cfg.dtype]


def plan_kv_cache(*, budget_bytes: int, static_bytes: int, graph_bytes: int, block_bytes: int,
                  min_blocks: int) -> MemoryPlan:
    """The KV blocks that fit `budget_bytes` after the static buffers and the graph pool.

    Raises CapacityError when fewer than `min_blocks` (one sequence of the model's
    max_seq_len) fit, naming what took the memory.
    """
    free = budget_bytes - static_bytes - graph_bytes
    blocks = max(free, 0) // block_bytes
    if blocks < min_blocks:
        raise CapacityError(
            f"a memory budget of {budget_bytes} bytes leaves {max(free, 0)} for the KV cache after "
            f"{static_bytes} bytes of static buffers and {graph_bytes} of graphs; one sequence of "
            f"max_seq_len needs {min_blocks} blocks of {block_bytes} bytes ({min_blocks * block_bytes}); "
            "raise the budget, or lower max_num_batched_tokens / max_num_seqs / max_seq_len"
        )
    return MemoryPlan(int(blocks), block_bytes, static_bytes, graph_bytes, budget_bytes)
