"""The engine: scheduler -> metadata -> static buffers -> dispatch -> runner -> sampled tokens.

One step:
1. the scheduler forms a batch (uniform decode, or mixed prefill + decode);
2. `cgraph.core.dispatch` maps (num_tokens, uniform) to a runtime mode and a descriptor; the
   descriptor's num_tokens is the padded size (NONE: the real size);
3. the batch's metadata is built on the host, padded to that size and packed into a
   pinned int32 vector, then copied to the static metadata buffer in one transfer;
4. FULL steps replay the GraphRunner's graph, PIECEWISE steps the BreakableRunner's
   segments (attention runs eagerly between them), NONE steps call the forward directly;
   the forward first feeds each decode the token its request sampled in the previous
   step, from the device (so the host never waits for a token to go on);
5. each row samples its token in the forward (greedy argmax by default; a request's
   SamplingParams otherwise, drawn at its seed and the token's position, so every mode
   samples what eager does); one kernel keeps the tokens for the next step's feed and
   writes them into pinned host memory, read behind an event.

`generate` overlaps the host with the GPU (cgraph.engine.loop): while step N runs, the
host schedules and enqueues step N+1 and reads tokens only when it needs them. Every
mode runs the same `LlamaModel.forward` on the same static buffers, so a graph replay
computes exactly what the eager call computes.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from cgraph.core.checks import check_int
from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import build_dispatch_table, dispatch
from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.core.fallbacks import REFUSED, FallbackLog, fallback_cause
from cgraph.core.modes import GraphMode
from cgraph.cuda.device import require_device
from cgraph.engine.blocks import BLOCK_SIZE, num_blocks_for
from cgraph.engine.heap import frozen_heap
from cgraph.engine.loop import RING, GenerationResult, StepSlot, enqueue_step, generate, resolve_step
from cgraph.engine.memory import MemoryPlan, kv_block_bytes, plan_kv_cache
from cgraph.engine.metadata import MetadataLayout, build_metadata
from cgraph.engine.multistep import DecodeLoop, loop_buffer_specs
from cgraph.engine.scheduler import Request, ScheduledBatch
from cgraph.engine.stats import StepRecord
from cgraph.models.llama import ForwardInputs, LlamaModel, workspace_specs, workspace_views

__all__ = ["Engine", "GenerationResult"]


class Engine:
    """Serves one LlamaModel under one GraphConfig (its mode, capture sizes and limits).

    KV cache size, one of:
    - num_kv_blocks: that many blocks;
    - memory_budget: a float in (0, 1] is the share of the device's memory the process
      may use (what is in use already counts), an int is the bytes the engine may
      allocate; the KV cache takes what the static buffers and the graphs (measured
      with estimate_graph_memory before anything is captured) leave;
    - neither: enough for max_num_seqs sequences of max_seq_len tokens.
    Graphs: call `capture()` before `generate()`, or pass `lazy=LazyCapture(...)` to
    capture each graph on first use (within the planned pool memory when a
    memory_budget is given). overlap: default loop of `generate` (False: synchronous).
    """

    def __init__(self, model: LlamaModel, graph_config: GraphConfig, *,
                 num_kv_blocks: int | None = None, memory_budget: float | int | None = None,
                 lazy: Any = None, overlap: bool = True, decode_steps_per_launch: int = 1,
                 debug: bool | None = None) -> None:
        cp = require_device()
        from cgraph.cuda.breakable import BreakableRunner  # noqa: PLC0415 - GPU layer
        from cgraph.cuda.buffers import StaticBuffers  # noqa: PLC0415
        from cgraph.cuda.pool import GraphPool  # noqa: PLC0415
        from cgraph.cuda.runner import GraphRunner  # noqa: PLC0415

        if not isinstance(graph_config, GraphConfig):
            raise ArgumentTypeError(f"graph_config must be a GraphConfig, got {type(graph_config).__name__}")
        if num_kv_blocks is not None and memory_budget is not None:
            raise ArgumentError("pass num_kv_blocks or memory_budget, not both: got "
                                f"num_kv_blocks={num_kv_blocks!r}, memory_budget={memory_budget!r}")
        self._cp = cp
        self.model = model
        self.config = graph_config
        self.table = build_dispatch_table(graph_config)
        self.overlap = bool(overlap)
        mcfg = model.cfg
        self.max_tokens = max(graph_config.max_num_batched_tokens, graph_config.max_capture_size)
        self.max_seqs = graph_config.max_num_seqs
        self.max_blocks = num_blocks_for(mcfg.max_seq_len, BLOCK_SIZE)
        self.layout = MetadataLayout(self.max_tokens, self.max_seqs, self.max_blocks)
        self.decode_steps_per_launch = check_int(decode_steps_per_launch, "decode_steps_per_launch", 1,
                                                 hint="1 runs one decode step per launch")
        loop_specs = (loop_buffer_specs(self.decode_steps_per_launch, self.max_seqs)
                      if self.decode_steps_per_launch > 1 else {})
        self.buffers = StaticBuffers({"meta": ((self.layout.size,), "int32"),
                                      **workspace_specs(mcfg, self.max_tokens, self.max_seqs), **loop_specs},
                                     debug=debug)
        self._views: dict[tuple[int, int], tuple[ForwardInputs, Any]] = {}
        # pinned staging for the steps in flight (step() uses the first)
        self.slots = [StepSlot.allocate(self.layout, self.max_seqs, self.decode_steps_per_launch)
                      for _ in range(RING)]
        self.fallbacks = FallbackLog("cgraph.Engine")
        self.pool = GraphPool()  # FULL graphs and PIECEWISE segments never run at once: one pool
        self.full = (GraphRunner(self.run_forward, GraphMode.FULL, pool=self.pool, debug=debug, name="llama",
                                 lazy=lazy) if self.table.keys(GraphMode.FULL) else None)
        self.piecewise = (BreakableRunner(self.run_forward, GraphMode.PIECEWISE, pool=self.pool, debug=debug,
                                          name="llama", lazy=lazy)
                          if self.table.keys(GraphMode.PIECEWISE) else None)
        if self.decode_steps_per_launch > 1 and lazy is not None:
            raise ArgumentError("decode_steps_per_launch > 1 needs its graphs captured up front (Engine.capture); "
                                "a lazy capture would warm the loop up on live state. Pass lazy=None")
        self.decode_loop = (DecodeLoop(self, self.decode_steps_per_launch, debug=debug)
                            if self.decode_steps_per_launch > 1 else None)
        # a probe cache of one sequence's blocks: the forward of a graph-memory estimate
        # needs a cache, and graph memory does not depend on its size
        self.kv_cache = model.make_kv_cache(self.max_blocks, BLOCK_SIZE)
        try:
            self._inert_metadata()
            self.memory: MemoryPlan = self._plan_memory(num_kv_blocks, memory_budget)
            if memory_budget is not None and lazy is not None:
                self.pool.set_limit(max(self.memory.graph_bytes, 1))  # lazy graphs fit the plan
            self.kv_cache = []
            self.kv_cache = model.make_kv_cache(self.memory.kv_blocks, BLOCK_SIZE)
        except BaseException:
            self.close()
            raise
        self.num_kv_blocks = self.memory.kv_blocks
        self.capture_seconds = 0.0

    def _plan_memory(self, num_kv_blocks: int | None, memory_budget: float | int | None) -> MemoryPlan:
        cfg = self.model.cfg
        block_bytes = kv_block_bytes(cfg, BLOCK_SIZE)
        static = self.buffers.nbytes
        if memory_budget is None:
            blocks = self.max_seqs * self.max_blocks if num_kv_blocks is None else check_int(
                num_kv_blocks, "num_kv_blocks", 1, hint="KV cache blocks of 16 tokens")
            return MemoryPlan(blocks, block_bytes, static, 0, None)
        graph = self.estimate_graph_memory()
        cp = self._cp
        if isinstance(memory_budget, float):
            if not 0.0 < memory_budget <= 1.0:
                raise ArgumentError(f"memory_budget={memory_budget}: a share of device memory must be in "
                                    "(0, 1]; pass e.g. 0.9, or an int number of bytes")
            cp.get_default_memory_pool().free_all_blocks()  # cached blocks are reusable, not used
            free, total = cp.cuda.runtime.memGetInfo()
            probe = sum(k.nbytes + v.nbytes for k, v in self.kv_cache)  # freed before the real cache
            # what the process may still take, plus what the engine already holds (its static
            # buffers, counted by the plan, and the probe cache, about to be freed)
            budget = int(memory_budget * total) - (total - free) + static + probe
        else:
            budget = check_int(memory_budget, "memory_budget", 1, hint="bytes, or a float share of the device")
        return plan_kv_cache(budget_bytes=budget, static_bytes=static, graph_bytes=graph,
                             block_bytes=block_bytes, min_blocks=self.max_blocks)

    def estimate_graph_memory(self) -> int:
        """Pool bytes capture() will take, found by capturing only each runner's largest key
        into a scratch pool (cgraph.estimate_graph_memory); nothing is kept."""
        from cgraph.cuda.tables import estimate_graph_memory  # noqa: PLC0415

        steps = (r for r in (self.full, self.piecewise) if r is not None)
        return max((estimate_graph_memory(r, self.table, self.capture_args).pool_bytes for r in steps), default=0)

    # --- sizes and static views ---------------------------------------------------------
    @property
    def runners(self) -> tuple[Any, ...]:
        """Every runner of the engine: FULL and PIECEWISE steps, and the decode loop's."""
        loop = self.decode_loop.runner if self.decode_loop is not None else None
        return tuple(r for r in (self.full, self.piecewise, loop) if r is not None)

    def num_seq_rows(self, num_tokens: int) -> int:
        """Sequence rows of a step computing num_tokens rows (a sequence has >= 1 token)."""
        return min(num_tokens, self.max_seqs)

    @staticmethod
    def max_query_len(descriptor: BatchDescriptor, uniform_decode: bool) -> int:
        """Attention path of a step: 1 (decode: token i is sequence i) or an upper bound."""
        return 1 if uniform_decode else descriptor.num_tokens

    def views_for(self, num_tokens: int, num_seqs: int) -> tuple[ForwardInputs, Any]:
        """The forward inputs and workspace views of one padded size (cached)."""
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
        self.load_metadata(build_metadata(ScheduledBatch((), 0), num_tokens=self.max_tokens,
                                          num_seqs=self.max_seqs, max_blocks=self.max_blocks))

    def load_metadata(self, meta: Any) -> None:
        """Copy a step's metadata (cgraph.engine.build_metadata) into the static buffer and wait."""
        used = self.layout.pack(meta, self.slots[0].staging)
        stream = self._cp.cuda.get_current_stream()
        self.buffers["meta"][:used].set(self.slots[0].staging[:used], stream=stream)
        stream.synchronize()  # the staging buffer is reused next

    def run_forward(self, num_tokens: int, num_seqs: int, max_query_len: int) -> Any:
        """The function every runner wraps: one forward over the static views of one size."""
        inputs, ws = self.views_for(num_tokens, num_seqs)
        return self.model.forward(inputs, ws, self.kv_cache, max_query_len=max_query_len)

    def capture_args(self, desc: BatchDescriptor) -> tuple[int, int, int]:
        """The runner arguments of a graph key: (padded tokens, sequence rows, attention path)."""
        return (desc.num_tokens, self.num_seq_rows(desc.num_tokens),
                self.max_query_len(desc, desc.uniform))

    # --- capture --------------------------------------------------------------------------
    def capture(self, *, progress: bool = True) -> list[Any]:
        """Capture every graph the config's dispatch table names (largest first, progress bar)."""
        from cgraph.cuda.tables import capture_all  # noqa: PLC0415

        self._inert_metadata()
        reports = []
        started = time.perf_counter()
        for runner in (self.full, self.piecewise):
            if runner is not None:
                reports.append(capture_all(runner, self.table, self.capture_args, progress=progress))
        if self.decode_loop is not None:
            self.decode_loop.capture()
        self._cp.cuda.get_current_stream().synchronize()
        self.capture_seconds = time.perf_counter() - started
        return reports

    @property
    def pool_bytes(self) -> int:
        return self.pool.total_bytes()

    def runner_stats(self) -> dict[str, float]:
        """Captures, budget refusals, eager fallbacks and capture seconds over both runners."""
        stats = [r.stats for r in self.runners]
        return {"captures": sum(s.captures for s in stats), "refusals": sum(s.refusals for s in stats),
                "eager_fallbacks": sum(s.eager_fallbacks for s in stats),
                "capture_s": sum(s.capture_seconds for s in stats), "pool_bytes": self.pool_bytes}

    # --- serving --------------------------------------------------------------------------
    def prepare(self, batch: ScheduledBatch, *, eager: bool = False) -> tuple[GraphMode, BatchDescriptor, int, int]:
        """Dispatch a batch: (mode, descriptor, sequence rows, attention path); counts fallbacks.

        eager=True keeps the padded size and attention path but runs without a graph
        (the reference a graph replay must match bit for bit).
        """
        uniform = batch.uniform_decode
        mode, desc = dispatch(self.table, batch.num_tokens, uniform_decode=uniform)
        if mode is GraphMode.NONE:
            cause = fallback_cause(self.config, batch.num_tokens, uniform)
            if cause is not None:
                self.fallbacks.note(cause)
        qlen = self.max_query_len(desc, desc.uniform if mode is not GraphMode.NONE else uniform)
        return (GraphMode.NONE if eager else mode), desc, self.num_seq_rows(desc.num_tokens), qlen

    def launch(self, mode: GraphMode, desc: BatchDescriptor, seq_rows: int, qlen: int) -> None:
        """Run the forward of a prepared step on the current stream (graph or eager); its
        tokens are then in buffers["next_tokens"] (see publish)."""
        padded = desc.num_tokens
        runner = self.full if mode is GraphMode.FULL else self.piecewise if mode is GraphMode.PIECEWISE else None
        if runner is None:
            self.run_forward(padded, seq_rows, qlen)
        else:
            refused_before = len(runner.refused)
            runner.run(mode, desc, padded, seq_rows, qlen)
            if len(runner.refused) > refused_before:
                self.fallbacks.note(REFUSED)

    def publish(self, seq_rows: int, host_tokens: Any) -> None:
        """After a step's forward, in one launch: keep its samples for the next step's token
        feed (LlamaModel.forward reads buffers["sampled"]) and write them into the pinned
        host array `host_tokens`."""
        import cgraph.kernels as K  # noqa: PLC0415 - GPU layer

        K.publish_tokens(self.buffers["next_tokens"][:seq_rows], self.buffers["sampled"][:seq_rows], host_tokens)

    def launch_decode_loop(self, mode: GraphMode, desc: BatchDescriptor, seq_rows: int) -> None:
        """Run the decode loop of a prepared uniform decode batch (see cgraph.engine.multistep);
        it leaves the last step's samples in buffers["sampled"] for the next token feed."""
        self.decode_loop.launch(mode, desc, seq_rows)

    def step(self, batch: ScheduledBatch, *, eager: bool = False) -> tuple[list[int], StepRecord]:
        """Run one scheduled batch and wait for it; return each sequence's sampled token and
        the step record (with its GPU time)."""
        t0 = time.perf_counter()
        inflight = enqueue_step(self, batch, self.slots[0], eager=eager)
        (tokens,), gpu_seconds, _, _ = resolve_step(inflight, None)
        record = StepRecord(inflight.mode.value, batch.uniform_decode, batch.num_tokens, inflight.padded,
                            len(batch.seqs), time.perf_counter() - t0, gpu_seconds)
        return tokens, record

    def generate(self, requests: Iterable[Request], *, overlap: bool | None = None) -> GenerationResult:
        """Serve every request to completion; sampled tokens per request id (max_new_tokens
        of them, or fewer, ending with a stop token, when one of the request's
        stop_token_ids is sampled).

        overlap (default: the engine's): True overlaps host and GPU; False waits for every
        step's tokens before scheduling the next (for debugging and comparison).
        Both loops run with the objects alive at the call frozen from the garbage collector
        (cgraph.engine.heap.frozen_heap), so its full passes do not stall the host loop.
        """
        requests = list(requests)
        mcfg = self.model.cfg
        for r in requests:
            if r.kv_tokens > mcfg.max_seq_len:
                raise ArgumentError(f"request {r.request_id!r}: prompt {len(r.prompt)} + "
                                    f"{r.max_new_tokens} new tokens exceeds max_seq_len={mcfg.max_seq_len}")
            if max(r.prompt) >= mcfg.vocab_size:
                raise ArgumentError(f"request {r.request_id!r}: token id {max(r.prompt)} is outside the "
                                    f"vocabulary of {mcfg.vocab_size}")
            if r.stop_token_ids and max(r.stop_token_ids) >= mcfg.vocab_size:
                raise ArgumentError(f"request {r.request_id!r}: stop token id {max(r.stop_token_ids)} is outside "
                                    f"the vocabulary of {mcfg.vocab_size}, so it could never be sampled; pass "
                                    "ids below vocab_size")
        with frozen_heap():
            result = generate(self, requests, overlap=self.overlap if overlap is None else bool(overlap))
        if self.fallbacks.counts:
            self.fallbacks.report()
        return result

    def close(self) -> None:
        """Release every graph and the graph pool. Idempotent."""
        for runner in self.runners:
            runner.close()
        self.pool.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
