"""The engine: scheduler -> metadata -> static buffers -> dispatch -> runner -> greedy tokens.

One step:
1. the scheduler forms a batch (uniform decode, or mixed prefill + decode);
2. `cgraph.core.dispatch` maps (num_tokens, uniform) to a runtime mode and a descriptor; the
   descriptor's num_tokens is the padded size (NONE: the real size);
3. the batch's metadata is built on the host, padded to that size and packed into one
   pinned int32 vector, then copied to the static metadata buffer in one transfer;
4. FULL steps replay the GraphRunner's graph, PIECEWISE steps the BreakableRunner's
   segments (attention runs eagerly between them), NONE steps call the forward directly;
5. the greedy token of each sequence comes back to the host and feeds the scheduler.

Every mode runs the same `LlamaModel.forward` on the same static buffers, so a graph
replay computes exactly what the eager call computes.
"""

from __future__ import annotations

import time
from typing import Any, Hashable, Iterable

import attrs

from cgraph.cuda.device import require_device
from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import build_dispatch_table, dispatch
from cgraph.engine.blocks import BLOCK_SIZE, BlockAllocator, num_blocks_for
from cgraph.engine.metadata import BatchMetadata, MetadataLayout, build_metadata
from cgraph.engine.scheduler import Request, ScheduledBatch, Scheduler
from cgraph.engine.stats import StepRecord, summarize
from cgraph.models.llama import ForwardInputs, LlamaModel, workspace_specs, workspace_views
from cgraph.core.modes import GraphMode
from cgraph.core.errors import ArgumentError, ArgumentTypeError


@attrs.frozen
class GenerationResult:
    """Generated token ids per request, the step records, and the run's summary."""

    outputs: dict[Hashable, tuple[int, ...]]
    steps: tuple[StepRecord, ...]
    summary: dict[str, float]


class Engine:
    """Serves one LlamaModel under one GraphConfig (its mode, capture sizes and limits).

    num_kv_blocks: KV cache blocks (default: enough for max_num_seqs sequences of
    max_seq_len tokens). Call `capture()` once before `generate()` for graph modes;
    a step whose graph was never captured raises (CaptureNotAllowedError).
    """

    def __init__(self, model: LlamaModel, graph_config: GraphConfig, *,
                 num_kv_blocks: int | None = None, debug: bool | None = None) -> None:
        cp = require_device()
        import cupyx  # noqa: PLC0415 - GPU layer, imported at use

        if not isinstance(graph_config, GraphConfig):
            raise ArgumentTypeError(f"graph_config must be a GraphConfig, got {type(graph_config).__name__}")
        from cgraph.cuda.breakable import BreakableRunner
        from cgraph.cuda.buffers import StaticBuffers
        from cgraph.cuda.pool import GraphPool
        from cgraph.cuda.runner import GraphRunner

        self._cp = cp
        self.model = model
        self.config = graph_config
        self.table = build_dispatch_table(graph_config)
        mcfg = model.cfg
        self.max_tokens = max(graph_config.max_num_batched_tokens, graph_config.max_capture_size)
        self.max_seqs = graph_config.max_num_seqs
        self.max_blocks = num_blocks_for(mcfg.max_seq_len, BLOCK_SIZE)
        blocks = num_kv_blocks or self.max_seqs * self.max_blocks
        self.layout = MetadataLayout(self.max_tokens, self.max_seqs, self.max_blocks)
        self.buffers = StaticBuffers({"meta": ((self.layout.size,), "int32"),
                                      **workspace_specs(mcfg, self.max_tokens, self.max_seqs)},
                                     debug=debug)
        self._staging = cupyx.empty_pinned((self.layout.size,), dtype="int32")
        self.kv_cache = model.make_kv_cache(blocks, BLOCK_SIZE)
        self.num_kv_blocks = blocks
        self._views: dict[tuple[int, int], tuple[ForwardInputs, Any]] = {}
        self._inert_metadata()
        self.pool = GraphPool()  # FULL graphs and PIECEWISE segments never run at once: one pool
        self.full = (GraphRunner(self._step, GraphMode.FULL, pool=self.pool, debug=debug, name="llama")
                     if self.table.keys(GraphMode.FULL) else None)
        self.piecewise = (BreakableRunner(self._step, GraphMode.PIECEWISE, pool=self.pool,
                                          debug=debug, name="llama")
                          if self.table.keys(GraphMode.PIECEWISE) else None)
        self.capture_seconds = 0.0

    # --- sizes and static views ---------------------------------------------------------
    def num_seq_rows(self, num_tokens: int) -> int:
        """Sequence rows of a step computing num_tokens rows (a sequence has >= 1 token)."""
        return min(num_tokens, self.max_seqs)

    @staticmethod
    def max_query_len(descriptor: BatchDescriptor, uniform_decode: bool) -> int:
        """Attention path of a step: 1 (decode: token i is sequence i) or an upper bound."""
        return 1 if uniform_decode else descriptor.num_tokens

    def _views_for(self, num_tokens: int, num_seqs: int) -> tuple[ForwardInputs, Any]:
        key = (num_tokens, num_seqs)
        views = self._views.get(key)
        if views is None:
            meta = self.buffers["meta"]
            inputs = ForwardInputs(**{name: meta[sl].reshape(shape) for name, (sl, shape)
                                      in self.layout.slices(num_tokens, num_seqs).items()})
            views = self._views[key] = (inputs, workspace_views(self.buffers, self.model.cfg, num_tokens, num_seqs))
        return views

    def _inert_metadata(self) -> None:
        """Fill the metadata buffer with an all-padding batch (num_seqs 0: nothing is written)."""
        empty = ScheduledBatch((), 0)
        meta = build_metadata(empty, num_tokens=self.max_tokens, num_seqs=self.max_seqs,
                              max_blocks=self.max_blocks)
        self._copy_in(meta)

    def _copy_in(self, meta: BatchMetadata) -> None:
        used = self.layout.pack(meta, self._staging)
        self.buffers["meta"][:used].set(self._staging[:used], stream=self._cp.cuda.get_current_stream())

    def _step(self, num_tokens: int, num_seqs: int, max_query_len: int) -> Any:
        """The function every runner wraps: one forward over the static views of one size."""
        inputs, ws = self._views_for(num_tokens, num_seqs)
        return self.model.forward(inputs, ws, self.kv_cache, max_query_len=max_query_len)

    # --- capture --------------------------------------------------------------------------
    def _capture_args(self, desc: BatchDescriptor) -> tuple[int, int, int]:
        return (desc.num_tokens, self.num_seq_rows(desc.num_tokens),
                self.max_query_len(desc, desc.uniform))

    def capture(self, *, progress: bool = True) -> list[Any]:
        """Capture every graph the config's dispatch table names (largest first, progress bar)."""
        from cgraph.cuda.tables import capture_all

        self._inert_metadata()
        reports = []
        started = time.perf_counter()
        for runner in (self.full, self.piecewise):
            if runner is not None:
                reports.append(capture_all(runner, self.table, self._capture_args, progress=progress))
        self._cp.cuda.get_current_stream().synchronize()
        self.capture_seconds = time.perf_counter() - started
        return reports

    @property
    def pool_bytes(self) -> int:
        return self.pool.total_bytes()

    # --- serving --------------------------------------------------------------------------
    def step(self, batch: ScheduledBatch, *, eager: bool = False) -> tuple[list[int], StepRecord]:
        """Run one scheduled batch; return each sequence's greedy token and the step record.

        eager=True runs the same padded step without any graph (the reference a graph replay
        must match bit for bit); the KV cache receives the same values either way.
        """
        t0 = time.perf_counter()
        uniform = batch.uniform_decode
        n_tok = batch.num_tokens
        mode, desc = dispatch(self.table, n_tok, uniform_decode=uniform)
        padded = desc.num_tokens
        seq_rows = self.num_seq_rows(padded)
        qlen = self.max_query_len(desc, desc.uniform if mode is not GraphMode.NONE else uniform)
        if eager:
            mode = GraphMode.NONE  # same padded size and attention path, no graph
        self._copy_in(build_metadata(batch, num_tokens=padded, num_seqs=seq_rows,
                                     max_blocks=self.max_blocks))
        if mode is GraphMode.FULL:
            out = self.full.run(mode, desc, padded, seq_rows, qlen)
        elif mode is GraphMode.PIECEWISE:
            out = self.piecewise.run(mode, desc, padded, seq_rows, qlen)
        else:
            out = self._step(padded, seq_rows, qlen)
        tokens = out[:len(batch.seqs)].get().tolist()
        record = StepRecord(mode.value, uniform, n_tok, padded, len(batch.seqs),
                            time.perf_counter() - t0)
        return tokens, record

    def generate(self, requests: Iterable[Request]) -> GenerationResult:
        """Serve every request to completion; greedy tokens per request id."""
        requests = list(requests)
        mcfg = self.model.cfg
        for r in requests:
            if r.kv_tokens > mcfg.max_seq_len:
                raise ArgumentError(f"request {r.request_id!r}: prompt {len(r.prompt)} + "
                                 f"{r.max_new_tokens} new tokens exceeds max_seq_len={mcfg.max_seq_len}")
            if max(r.prompt) >= mcfg.vocab_size:
                raise ArgumentError(f"request {r.request_id!r}: token id {max(r.prompt)} is outside the "
                                 f"vocabulary of {mcfg.vocab_size}")
        sched = Scheduler(max_num_seqs=self.max_seqs,
                          max_num_batched_tokens=self.config.max_num_batched_tokens,
                          allocator=BlockAllocator(self.num_kv_blocks, BLOCK_SIZE))
        for r in requests:
            sched.add(r)
        records = []
        while (batch := sched.schedule()) is not None:
            tokens, record = self.step(batch)
            sched.update(batch, tokens)
            records.append(record)
        outputs = {r.request_id: sched.finished[r.request_id] for r in requests}
        generated = sum(len(v) for v in outputs.values())
        return GenerationResult(outputs, tuple(records), summarize(records, generated))

    def close(self) -> None:
        """Release every graph and the graph pool. Idempotent."""
        for runner in (self.full, self.piecewise):
            if runner is not None:
                runner.close()
        self.pool.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
