"""EncoderGraphManager: one captured encoder graph per token budget, greedy packing, eager fallback.

The manager serves any encoder implementing cgraph.encoder.protocol.SupportsEncoderGraphs
(the bundled VisionEncoder does). It is a client of the decoder's machinery: its budgets
are the capture sizes of a FULL GraphConfig, `cgraph.dispatch` maps a batch's budget to
its descriptor, and a GraphRunner captures (capture_all, largest first) and replays
`model.forward` per descriptor.

Workflow:
1. At construction, the static inputs (cu_seqlens, positions, patches) are one device
   region sized for the largest budget (cgraph.encoder.staging.BatchStager), and one graph
   per budget is captured, largest first, on prefix views of it, all into one GraphPool.
2. `execute(images)` prepares the items, plans batches with `plan_batches` (smallest
   first, packed up to the largest budget and `max_batch_size`), and for each batch:
   stages it (one host-to-device copy from a pinned slot, plus one device copy per item
   whose patches are already on the device), replays the budget's graph and copies the
   batch's real output rows, one device copy, into one output array of the call.
   An item larger than the largest budget runs eagerly (a miss).
3. Outputs come back in input order as views of that call's output array (fresh memory:
   later calls never change them). Per item the host does O(1) calls: a check, a NumPy
   copy or a device copy, a slice. `stats` holds cumulative hits, misses and replays;
   with `record_phases=True`, `phases` holds the host seconds of each step and the replays'
   GPU seconds (benchmarks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs

from cgraph.core.budgets import EncoderBatch, plan_batches
from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import build_dispatch_table, dispatch
from cgraph.core.encoder_config import EncoderGraphConfig
from cgraph.core.encoder_layout import batch_offsets
from cgraph.core.errors import ArgumentTypeError, GraphClosedError, NotFoundError
from cgraph.core.modes import GraphMode
from cgraph.cuda.device import require_device
from cgraph.cuda.pool import GraphPool
from cgraph.cuda.runner import GraphRunner
from cgraph.cuda.tables import capture_all, estimate_graph_memory
from cgraph.encoder.protocol import check_encoder, check_item
from cgraph.encoder.staging import BatchStager

_D2D = 3  # cudaMemcpyDeviceToDevice
PHASES = ("prepare", "plan", "stage", "stage_wait", "replay", "outputs", "eager")


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


def _graph_machinery(model: Any, budgets: Sequence[int], max_batch_size: int,
                     pool: GraphPool | None, debug: bool | None) -> tuple:
    """(config, stager, dispatch table, runner) of a manager: its budgets are the capture
    sizes of a FULL GraphConfig, so dispatch pads a batch to its budget's key."""
    layout = check_encoder(model)
    config = EncoderGraphConfig(tuple(budgets), max_batch_size)
    stager = BatchStager(layout, model.dtype, config.max_budget, config.max_batch_size, debug=debug)
    table = build_dispatch_table(GraphConfig(GraphMode.FULL, capture_sizes=config.budgets,
                                             max_num_seqs=config.max_batch_size,
                                             max_num_batched_tokens=config.max_budget))
    runner = GraphRunner(model.forward, GraphMode.FULL, pool=pool, debug=debug, name="encoder")
    return config, stager, table, runner


def forward_inputs(stager: BatchStager, descriptor: BatchDescriptor) -> tuple:
    """The forward's arguments for a budget's key: prefix views of the static region."""
    return stager.forward_inputs(descriptor.num_tokens * stager.layout.rows_per_token)


def estimate_encoder_graph_memory(model: Any, budgets: Sequence[int], max_batch_size: int) -> int:
    """The pool bytes an EncoderGraphManager(model, budgets, max_batch_size) will hold,
    found by capturing only the largest budget into a scratch pool (nothing is kept)."""
    _, stager, table, runner = _graph_machinery(model, budgets, max_batch_size, None, None)
    try:
        return estimate_graph_memory(runner, table, lambda d: forward_inputs(stager, d)).pool_bytes
    finally:
        runner.close()


class EncoderGraphManager:
    """Captures `model.forward` once per token budget and serves mixed-size images with replays."""

    def __init__(
        self,
        model: Any,
        budgets: Sequence[int],
        max_batch_size: int,
        pool: GraphPool | None = None,
        *,
        debug: bool | None = None,
        record_phases: bool = False,
    ) -> None:
        cp = require_device()
        self.model = model
        self._cp = cp
        self._owns_pool = pool is None
        self.pool = GraphPool() if pool is None else pool
        self.config, self.stager, self.table, self.runner = _graph_machinery(
            model, budgets, max_batch_size, self.pool, debug)
        self.layout = self.stager.layout
        self._dtype = model.dtype
        self._keys = {b: dispatch(self.table, b) for b in self.config.budgets}
        self._inputs: dict[BatchDescriptor, tuple] = {}
        self._hits = self._misses = self._graph_tokens = self._padded_tokens = 0
        self._replays = {b: 0 for b in self.config.budgets}
        self.record_phases = bool(record_phases)
        self._phases = dict.fromkeys(PHASES, 0.0)
        self._events: list[tuple[Any, Any]] = []
        try:
            capture_all(self.runner, self.table, self._inputs_for, progress=False)
        except BaseException:
            self.close()
            raise

    def _inputs_for(self, descriptor: BatchDescriptor) -> tuple:
        """model.forward's arguments for a budget: prefix views of the static region."""
        args = self._inputs.get(descriptor)
        if args is None:
            args = self._inputs[descriptor] = forward_inputs(self.stager, descriptor)
        return args

    # ------------------------------------------------------------------ info
    @property
    def budgets(self) -> tuple[int, ...]:
        return self.config.budgets

    @property
    def buffers(self) -> BatchStager:
        """The static inputs (cu_seqlens, positions, patches views of one device region)."""
        return self.stager

    def graph(self, budget: int) -> Any:
        """The CapturedGraph for `budget` (for inspection: num_nodes, dot(), pool_bytes)."""
        if budget not in self._replays:
            raise NotFoundError(f"no graph for budget {budget}; budgets are {self.budgets}")
        return self.runner.entry(self._keys[budget][1])

    @property
    def stats(self) -> EncoderStats:
        return EncoderStats(
            self._hits, self._misses, tuple(sorted(self._replays.items())),
            self._graph_tokens, self._padded_tokens,
        )

    def reset_stats(self) -> None:
        self._hits = self._misses = self._graph_tokens = self._padded_tokens = 0
        self._replays = {b: 0 for b in self.config.budgets}
        self._phases = dict.fromkeys(PHASES, 0.0)
        self._events = []

    @property
    def phases(self) -> dict[str, float]:
        """Cumulative seconds per step since the last reset_stats (record_phases=True):
        host seconds of prepare, plan, stage (without stage_wait: waiting for a pinned slot
        the device has not read yet), replay (launch calls), outputs, eager, and
        replay_gpu, the replays' GPU time from events around each replay (synchronises)."""
        out = dict(self._phases)
        if self._events:
            self._events[-1][1].synchronize()
        out["replay_gpu"] = sum(self._cp.cuda.get_elapsed_time(a, b) for a, b in self._events) / 1e3
        return out

    def plan(self, images: Sequence[Any]) -> tuple[EncoderBatch, ...]:
        """The batches `execute` would run for these images (prepared or raw)."""
        items = [self.model.prepare(im) for im in images]
        return plan_batches([it.tokens for it in items], self.budgets, self.config.max_batch_size)

    # ------------------------------------------------------------------ run
    def execute(self, images: Sequence[Any]) -> list[Any]:
        """Encode images; returns one [tokens, out_dim] array per image, in input order.

        Graph outputs are views of one array this call allocates (never graph memory), and
        eager outputs fresh arrays: later calls do not change them.
        """
        if self.runner.closed:
            raise GraphClosedError("this EncoderGraphManager was closed; create a new one")
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ArgumentTypeError(f"images must be a list of arrays, got {type(images).__name__}")
        rec = self.record_phases
        t0 = time.perf_counter()
        prepare, layout, dtype = self.model.prepare, self.layout, self._dtype
        items = [prepare(im) for im in images]
        rows = [check_item(it, layout, dtype, i, check_bounds=False) for i, it in enumerate(items)]
        t1 = time.perf_counter()
        plan = plan_batches([r // layout.rows_per_token for r in rows], self.budgets, self.config.max_batch_size)
        graph_batches = [b for b in plan if not b.eager]
        outputs: list[Any] = [None] * len(items)
        if rec:
            self._phases["prepare"] += t1 - t0
            self._phases["plan"] += time.perf_counter() - t1
        if graph_batches:
            self._run_graphs(graph_batches, items, rows, outputs)
        t2 = time.perf_counter()
        for batch in plan:
            if batch.eager:
                (i,) = batch.items
                outputs[i] = self.model.encode_batch([items[i]])[0]  # fresh eager memory
                self._misses += 1
        if rec:
            self._phases["eager"] += time.perf_counter() - t2
        return outputs

    def _run_graphs(self, batches: list[EncoderBatch], items: list[Any], rows: list[int],
                    outputs: list[Any]) -> None:
        cp, rec, phases = self._cp, self.record_phases, self._phases
        out_dim = self.layout.out_dim
        result = cp.empty((sum(b.tokens for b in batches), out_dim), self._dtype)
        row_bytes = out_dim * result.itemsize
        stream = cp.cuda.get_current_stream()
        base = 0
        for batch in batches:
            t0 = time.perf_counter()
            waited = self.stager.wait_seconds
            # largest first: attention's work per tile grows with the image, and tiles are
            # scheduled in row order, so the longest tiles start first (no long tail)
            order = batch.items[::-1]
            members = [items[i] for i in order]
            offsets = batch_offsets([rows[i] for i in order], self.layout.rows_per_token,
                                    self.config.max_batch_size)
            mode, desc = self._keys[batch.budget]
            args = self._inputs_for(desc)
            self.stager.stage(members, offsets, args[3])
            t1 = time.perf_counter()
            if rec:
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(stream)
            out = self.runner.run(mode, desc, *args)
            if rec:
                end.record(stream)
                self._events.append((start, end))
            t2 = time.perf_counter()
            if not out.flags.c_contiguous:  # the protocol asks for contiguous rows; be safe
                out = cp.ascontiguousarray(out)
            cp.cuda.runtime.memcpyAsync(result.data.ptr + base * row_bytes, out.data.ptr,
                                        batch.tokens * row_bytes, _D2D, stream.ptr)
            for i, a in zip(order, offsets.token_starts):
                outputs[i] = result[base + a : base + a + items[i].tokens]
            base += batch.tokens
            self._hits += len(members)
            self._replays[batch.budget] += 1
            self._graph_tokens += batch.tokens
            self._padded_tokens += batch.budget
            if rec:
                wait = self.stager.wait_seconds - waited
                phases["stage_wait"] += wait
                phases["stage"] += t1 - t0 - wait
                phases["replay"] += t2 - t1
                phases["outputs"] += time.perf_counter() - t2

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
