"""Synthetic workloads and their batch plan (pure; no CuPy).

The batch shapes a workload produces do not depend on the sampled token values, so the
scheduler can be run on the host alone to list every step's (num_tokens, uniform
decode) pair: the input of `cgraph.core.dispatch` and of `cgraph.padding_report`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cgraph.core.checks import check_int
from cgraph.core.config import MAX_CAPTURE_SIZE, GraphConfig, default_capture_sizes
from cgraph.engine.blocks import BLOCK_SIZE, BlockAllocator, num_blocks_for
from cgraph.engine.scheduler import Request, Scheduler
from cgraph.core.modes import GraphMode


def demo_max_seq_len(max_prompt: int, new_tokens: int) -> int:
    """The demo model's max sequence length: a power of two >= 1024 that fits every request."""
    max_prompt = check_int(max_prompt, "max_prompt", 1, hint="a prompt has at least 1 token")
    new_tokens = check_int(new_tokens, "new_tokens", 1, hint="each request generates at least 1 token")
    return 1 << max(10, (max_prompt + new_tokens - 1).bit_length())


def serving_config(mode: GraphMode | str, *, max_num_seqs: int, max_num_batched_tokens: int) -> GraphConfig:
    """The GraphConfig the demo serves with: graph modes capture every default size up to
    the token budget (not only up to 512; never above MAX_CAPTURE_SIZE), so mixed prefill
    batches hit graphs too."""
    mode = GraphMode.parse(mode)
    top = min(check_int(max_num_batched_tokens, "max_num_batched_tokens", 1), MAX_CAPTURE_SIZE)
    sizes = None if mode is GraphMode.NONE else default_capture_sizes(top)
    return GraphConfig(mode, capture_sizes=sizes, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_num_batched_tokens)


def synthetic_requests(num_requests: int, *, max_prompt: int, new_tokens: int, vocab_size: int,
                       seed: int = 0, min_prompt: int = 1) -> list[Request]:
    """Requests with prompt lengths uniform in [min_prompt, max_prompt] and random token ids."""
    num_requests = check_int(num_requests, "num_requests", 1)
    min_prompt = check_int(min_prompt, "min_prompt", 1, hint="a prompt has at least 1 token")
    max_prompt = check_int(max_prompt, "max_prompt", min_prompt, hint="pass min_prompt <= max_prompt")
    new_tokens = check_int(new_tokens, "new_tokens", 1, hint="each request generates at least 1 token")
    vocab_size = check_int(vocab_size, "vocab_size", 1)
    rng = np.random.default_rng(seed)
    lens = rng.integers(min_prompt, max_prompt + 1, size=num_requests)
    return [Request(i, rng.integers(0, vocab_size, size=int(n)), max_new_tokens=new_tokens)
            for i, n in enumerate(lens)]


def plan_batches(requests: Sequence[Request], *, max_num_seqs: int, max_num_batched_tokens: int,
                 num_kv_blocks: int | None = None, max_seq_len: int = 1024) -> list[tuple[int, bool]]:
    """(num_tokens, uniform_decode) of every step the engine's scheduler would run.

    Stop tokens depend on the sampled values, so the plan is the longest one: every
    request runs for its max_new_tokens.

    num_kv_blocks defaults to the engine's: max_num_seqs sequences of max_seq_len tokens.
    """
    max_num_seqs = check_int(max_num_seqs, "max_num_seqs", 1)
    max_seq_len = check_int(max_seq_len, "max_seq_len", 1)
    if num_kv_blocks is not None:
        num_kv_blocks = check_int(num_kv_blocks, "num_kv_blocks", 1, hint="or None for the engine's")
    blocks = num_kv_blocks or max_num_seqs * num_blocks_for(max_seq_len, BLOCK_SIZE)
    sched = Scheduler(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                      allocator=BlockAllocator(blocks, BLOCK_SIZE))
    for r in requests:
        sched.add(r)
    plan = []
    while (batch := sched.schedule()) is not None:
        plan.append((batch.num_tokens, batch.uniform_decode))
        sched.update(batch)  # no values recorded: no stop token ends a request early
    return plan
