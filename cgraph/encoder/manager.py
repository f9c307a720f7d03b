"""EncoderGraphManager: one captured encoder graph per token budget, greedy packing, eager fallback.

The manager is a client of the decoder's machinery: its budgets are the capture sizes of
a FULL GraphConfig, `cgraph.dispatch` maps a batch's token total to its budget's
descriptor, and a GraphRunner captures (capture_all, largest first) and replays
`model.forward` per descriptor.

Workflow:
1. At construction, static buffers (patches, positions, cu_seqlens) are allocated once for
   the largest budget, and one graph per budget is captured, largest first, on prefix
   views of those buffers, all into one shared GraphPool.
2. `execute(images)` unfolds the images, plans batches with `plan_batches` (smallest first,
   packed up to the largest budget and `max_batch_size`), and for each batch:
   copies the packed patches and positions into the buffers (zero-padded up to the budget),
   writes cu_seqlens (unused sequences are empty), replays the budget's graph and copies
   each item's rows out, so later replays cannot overwrite returned outputs.
   An item larger than the largest budget runs eagerly (a miss).
3. Outputs come back in input order. `stats` holds cumulative hits, misses and replays.

Images are CuPy/NumPy arrays [C, H, W] (H, W multiples of 2 * patch) or PreparedImage
values from `model.prepare` (pre-unfolded patches, to keep unfolding out of a hot loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from cgraph.core.budgets import EncoderBatch, plan_batches
from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import build_dispatch_table, dispatch
from cgraph.core.encoder_config import EncoderGraphConfig
from cgraph.core.modes import GraphMode
from cgraph.cuda.buffers import StaticBuffers
from cgraph.cuda.device import require_device
from cgraph.cuda.pool import GraphPool
from cgraph.cuda.runner import GraphRunner
from cgraph.cuda.tables import capture_all, estimate_graph_memory
from cgraph.encoder.model import MERGE_PATCHES, VisionEncoder
from cgraph.core.errors import ArgumentTypeError, GraphClosedError, NotFoundError


@attrs.frozen
class EncoderStats:
    """Cumulative counts: hits/misses in images, replays and eager runs in batches.

    budget_replays: ((budget, replays), ...) ascending by budget.
    """

    hits: int = 0
    misses: int = 0
    budget_replays: tuple[tuple[int, int], ...] = ()
    graph_tokens: int = 0  # real output tokens produced by graphs
    padded_tokens: int = 0  # tokens graphs computed (sum of budgets replayed)

    @property
    def items(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Share of images served by a graph (0.0 before any image)."""
        return self.hits / self.items if self.items else 0.0

    @property
    def replays(self) -> int:
        return sum(n for _, n in self.budget_replays)

    @property
    def padding_waste(self) -> float:
        return 1.0 - self.graph_tokens / self.padded_tokens if self.padded_tokens else 0.0


def forward_inputs(buffers: StaticBuffers, descriptor: BatchDescriptor) -> tuple:
    """VisionEncoder.forward's arguments for a budget's key: prefix views of the buffers."""
    rows = descriptor.num_tokens * MERGE_PATCHES
    return (buffers.view("patches", rows), buffers.view("positions", rows), buffers["cu_seqlens"], rows)


def _graph_machinery(model: VisionEncoder, budgets: Sequence[int], max_batch_size: int,
                     pool: GraphPool | None, debug: bool | None) -> tuple:
    """(config, static buffers, dispatch table, runner) of a manager: its budgets are the
    capture sizes of a FULL GraphConfig, so dispatch pads a batch to its budget's key."""
    if not isinstance(model, VisionEncoder):
        raise ArgumentTypeError(f"model must be a VisionEncoder, got {type(model).__name__}")
    config = EncoderGraphConfig(tuple(budgets), max_batch_size)
    max_patches = config.max_budget * MERGE_PATCHES
    buffers = StaticBuffers({"patches": ((max_patches, model.spec.patch_dim), model.dtype),
                             "positions": ((max_patches,), "int32"),
                             "cu_seqlens": ((config.max_batch_size + 1,), "int32")}, debug=debug)
    table = build_dispatch_table(GraphConfig(GraphMode.FULL, capture_sizes=config.budgets,
                                             max_num_seqs=config.max_batch_size,
                                             max_num_batched_tokens=config.max_budget))
    runner = GraphRunner(model.forward, GraphMode.FULL, pool=pool, debug=debug, name="encoder")
    return config, buffers, table, runner


def estimate_encoder_graph_memory(model: VisionEncoder, budgets: Sequence[int], max_batch_size: int) -> int:
    """The pool bytes an EncoderGraphManager(model, budgets, max_batch_size) will hold,
    found by capturing only the largest budget into a scratch pool (nothing is kept)."""
    _, buffers, table, runner = _graph_machinery(model, budgets, max_batch_size, None, None)
    try:
        return estimate_graph_memory(runner, table, lambda d: forward_inputs(buffers, d)).pool_bytes
    finally:
        runner.close()


class EncoderGraphManager:
    """Captures `model.forward` once per token budget and serves mixed-size images with replays."""

    def __init__(
        self,
        model: VisionEncoder,
        budgets: Sequence[int],
        max_batch_size: int,
        pool: GraphPool | None = None,
        *,
        debug: bool | None = None,
    ) -> None:
        cp = require_device()
        self.model = model
        self._cp = cp
        self._owns_pool = pool is None
        self.pool = GraphPool() if pool is None else pool
        self.config, self.buffers, self.table, self.runner = _graph_machinery(
            model, budgets, max_batch_size, self.pool, debug)
        self._inputs: dict[BatchDescriptor, tuple] = {}
        self._hits = self._misses = self._graph_tokens = self._padded_tokens = 0
        self._replays = {b: 0 for b in self.config.budgets}
        try:
            capture_all(self.runner, self.table, self._inputs_for, progress=False)
        except BaseException:
            self.close()
            raise

    def _inputs_for(self, descriptor: BatchDescriptor) -> tuple:
        """model.forward's arguments for a budget: prefix views of the static buffers."""
        args = self._inputs.get(descriptor)
        if args is None:
            args = self._inputs[descriptor] = forward_inputs(self.buffers, descriptor)
        return args

    # ------------------------------------------------------------------ info
    @property
    def budgets(self) -> tuple[int, ...]:
        return self.config.budgets

    def graph(self, budget: int) -> Any:
        """The CapturedGraph for `budget` (for inspection: num_nodes, dot(), pool_bytes)."""
        if budget not in self._replays:
            raise NotFoundError(f"no graph for budget {budget}; budgets are {self.budgets}")
        return self.runner.entry(dispatch(self.table, budget)[1])

    @property
    def stats(self) -> EncoderStats:
        return EncoderStats(
            self._hits, self._misses, tuple(sorted(self._replays.items())),
            self._graph_tokens, self._padded_tokens,
        )

    def reset_stats(self) -> None:
        self._hits = self._misses = self._graph_tokens = self._padded_tokens = 0
        self._replays = {b: 0 for b in self.config.budgets}

    def plan(self, images: Sequence[Any]) -> tuple[EncoderBatch, ...]:
        """The batches `execute` would run for these images (prepared or [C, H, W])."""
        items = [self.model.prepare(im) for im in images]
        return plan_batches([it.tokens for it in items], self.budgets, self.config.max_batch_size)

    # ------------------------------------------------------------------ run
    def execute(self, images: Sequence[Any]) -> list[Any]:
        """Encode images; returns one [tokens, out_dim] array per image, in input order.

        The arrays are private copies (never graph memory): later calls do not change them.
        """
        if self.runner.closed:
            raise GraphClosedError("this EncoderGraphManager was closed; create a new one")
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ArgumentTypeError(f"images must be a list of arrays, got {type(images).__name__}")
        items = [self.model.prepare(im) for im in images]
        plan = plan_batches([it.tokens for it in items], self.budgets, self.config.max_batch_size)
        outputs: list[Any] = [None] * len(items)
        graph_batches = [b for b in plan if not b.eager]
        metadata = self._upload_metadata(graph_batches, items)
        for batch, (positions, cu_seqlens) in zip(graph_batches, metadata):
            self._run_graph(batch, items, positions, cu_seqlens, outputs)
        for batch in plan:
            if batch.eager:
                (i,) = batch.items
                outputs[i] = self.model.encode(items[i])  # fresh eager memory: no copy needed
                self._misses += 1
        return outputs

    def _upload_metadata(self, batches: list[EncoderBatch], items: list[Any]) -> list[tuple[Any, Any]]:
        """Positions and cu_seqlens of every graph batch in one host-to-device copy.

        One copy per call instead of two per batch: host-to-device copies from pageable
        memory may wait for the stream, which would stall the replays behind them.
        """
        if not batches:
            return []
        width = self.config.max_batch_size + 1
        cu = np.zeros((len(batches), width), np.int32)
        positions = []
        for row, batch in enumerate(batches):
            lens = [items[i].num_patches for i in batch.items]
            np.cumsum(lens, out=cu[row, 1 : len(lens) + 1])
            cu[row, len(lens) + 1 :] = cu[row, len(lens)]  # unused sequences are empty
            positions.extend(items[i].positions for i in batch.items)
        host = np.concatenate([cu.reshape(-1), *positions])
        dev = self._cp.asarray(host)
        cu_dev = dev[: cu.size].reshape(cu.shape)
        out, start = [], cu.size
        for row, batch in enumerate(batches):
            n = int(cu[row, -1])
            out.append((dev[start : start + n], cu_dev[row]))
            start += n
        return out

    def _run_graph(self, batch: EncoderBatch, items: list[Any], positions: Any, cu_seqlens: Any,
                   outputs: list[Any]) -> None:
        cp, bufs = self._cp, self.buffers
        members = [items[i] for i in batch.items]
        rows = batch.budget * MERGE_PATCHES
        patches = members[0].patches if len(members) == 1 else cp.concatenate([m.patches for m in members])
        bufs.fill("patches", patches, rows)
        bufs.fill("positions", positions, rows)
        bufs.fill("cu_seqlens", cu_seqlens)
        mode, desc = dispatch(self.table, batch.tokens)
        out = self.runner.run(mode, desc, *self._inputs_for(desc))
        start = 0
        for i, m in zip(batch.items, members):
            outputs[i] = out[start : start + m.tokens].copy()  # graph memory is reused next replay
            start += m.tokens
        self._hits += len(members)
        self._replays[batch.budget] += 1
        self._graph_tokens += batch.tokens
        self._padded_tokens += batch.budget

    def close(self) -> None:
        """Release the graphs (and the pool when this manager created it). Idempotent."""
        self.runner.close()
        if self._owns_pool and self.pool is not None and not self.pool.closed:
            self.pool.close()

    def __enter__(self) -> "EncoderGraphManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"EncoderGraphManager(budgets={self.budgets}, max_batch_size="
            f"{self.config.max_batch_size}, graphs={len(self.runner)})"
        )
