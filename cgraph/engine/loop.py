"""The generation loop: host work of step N+1 overlapped with the GPU running step N.

A step is *enqueued* (metadata packed into a pinned staging buffer and copied in, or, for
a decode step of the same requests as the step before, advanced on the device; the
forward launched, the sampled tokens copied back into pinned memory, two events around
it) and later *resolved* (its end event waited for, its tokens recorded in the
scheduler). Scheduling depends only on counts and every decode's input token is fed on
the device (cgraph.engine.scheduler, LlamaModel.forward), so the overlapped loop never
waits for a step before enqueuing the next: it resolves a step only when its slot of the
ring comes round again (the ring bounds how far the host runs ahead) and at the end. The
synchronous loop resolves each step right after enqueuing it.

Times, from four events a step: its GPU time is the forward's (events right before and
after the forward launch: a graph replay is one launch, so nothing the host does shows
in it); its period is the device time from the previous step's end to its own end (what
a step costs in a steady stream); its gap is the device idle time from the previous
step's end to its own first operation; host time is the host's own work (scheduling,
metadata, launches), without its waits for the GPU.
"""

from __future__ import annotations

import math
import time
from typing import Any, Hashable

import attrs
import numpy as np

from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.modes import GraphMode
from cgraph.cuda.device import require_device
from cgraph.engine.blocks import BLOCK_SIZE, BlockAllocator
from cgraph.engine.metadata import MetadataLayout, build_metadata
from cgraph.engine.multistep import loop_params_size, pack_loop_params
from cgraph.engine.scheduler import Request, ScheduledBatch, Scheduler
from cgraph.engine.stats import StepRecord, summarize

#: steps in flight at most: the host resolves step N before it enqueues step N + RING
RING = 4


@attrs.frozen
class GenerationResult:
    """Generated token ids per request, the step records, and the run's summary."""

    outputs: dict[Hashable, tuple[int, ...]]
    steps: tuple[StepRecord, ...]
    summary: dict[str, float]


@attrs.define(eq=False)
class StepSlot:
    """Pinned staging for one launch in flight: its metadata, its tokens (steps x rows), the
    parameters of a multi-step launch (its step limit and stop ids), and its four events
    (first operation, forward start, forward end, last operation)."""

    staging: np.ndarray
    tokens: np.ndarray
    loop_params: np.ndarray
    start: Any
    forward_start: Any
    forward_end: Any
    end: Any

    @classmethod
    def allocate(cls, layout: MetadataLayout, max_seqs: int, steps: int = 1) -> "StepSlot":
        cp = require_device()
        import cupyx  # noqa: PLC0415 - GPU layer

        return cls(cupyx.empty_pinned((layout.size,), dtype=np.int32),
                   cupyx.empty_pinned((steps * max_seqs,), dtype=np.int32),
                   cupyx.empty_pinned((loop_params_size(max_seqs),), dtype=np.int32),
                   *(cp.cuda.Event() for _ in range(4)))


@attrs.define(eq=False)
class InFlight:
    """A launch enqueued and not yet resolved: one step, or several decode steps of the
    same sequences (a multi-step launch)."""

    batches: list[ScheduledBatch]
    slot: StepSlot
    mode: GraphMode
    descriptor: BatchDescriptor
    padded: int
    seq_rows: int
    row_stride: int  # elements between the rows of consecutive steps in slot.tokens
    key: tuple | None  # what the device metadata buffer holds after it (see enqueue_step)

    @property
    def batch(self) -> ScheduledBatch:
        return self.batches[0]


def enqueue_step(engine: Any, batches: ScheduledBatch | list[ScheduledBatch], slot: StepSlot, *,
                 eager: bool = False, previous: tuple | None = None) -> InFlight:
    """Queue one launch on the current stream; returns without waiting for the GPU.

    `batches` is one batch, or consecutive uniform decode batches of the same requests
    (one multi-step launch; the engine must have a decode loop). The slot must be free
    (its previous launch resolved): its staging buffers are rewritten.

    `previous` is the key the launch enqueued just before left: ("step", ids, rows) after
    a uniform decode step (the buffer holds that step's metadata: a decode step of the same
    requests in the same rows advances it on the device, kernels.advance_decode, instead of
    building and copying it), ("ready", ids, rows) after a multi-step launch (the buffer
    already holds the next step's metadata), None otherwise.
    """
    import cgraph.kernels as K  # noqa: PLC0415 - GPU layer

    batches = [batches] if isinstance(batches, ScheduledBatch) else list(batches)
    batch, steps = batches[0], len(batches)
    stream = require_device().cuda.get_current_stream()
    mode, desc, seq_rows, qlen = engine.prepare(batch, eager=eager)
    padded = desc.num_tokens
    ids = tuple([s.request_id for s in batch.seqs])  # a list first: faster than a generator here
    if batch.uniform_decode and previous == ("ready", ids, padded):
        slot.start.record(stream)  # nothing to do: the last launch left this step's metadata
    elif batch.uniform_decode and previous == ("step", ids, padded):
        inputs, _ = engine.views_for(padded, seq_rows)
        slot.start.record(stream)
        # token i is sequence i: only the first seq_rows token rows can be live (a step
        # padded past max_num_seqs keeps its padding rows as the last step left them)
        K.advance_decode(inputs.positions[:seq_rows], inputs.seq_lens, inputs.slot_mapping[:seq_rows],
                         inputs.token_source[:seq_rows], inputs.block_tables, inputs.num_seqs,
                         block_size=BLOCK_SIZE, stream=stream)
    else:
        meta = build_metadata(batch, num_tokens=padded, num_seqs=seq_rows, max_blocks=engine.max_blocks)
        used = engine.layout.pack(meta, slot.staging)
        slot.start.record(stream)
        engine.buffers["meta"][:used].set(slot.staging[:used], stream=stream)
    n = len(batch.seqs)
    if engine.decode_loop is not None and batch.uniform_decode:
        used = pack_loop_params(slot.loop_params, steps, [s.stop_token_ids for s in batch.seqs], seq_rows)
        engine.buffers["loop_params"][:used].set(slot.loop_params[:used], stream=stream)
        slot.forward_start.record(stream)
        engine.launch_decode_loop(mode, desc, seq_rows)
        slot.forward_end.record(stream)
        engine.buffers["history"][: steps * seq_rows].get(stream=stream, out=slot.tokens[: steps * seq_rows],
                                                          blocking=False)
        key: tuple | None = ("ready", ids, padded)
        stride = seq_rows
    else:
        slot.forward_start.record(stream)
        engine.launch(mode, desc, seq_rows, qlen)
        slot.forward_end.record(stream)
        engine.publish(seq_rows, slot.tokens)
        key = ("step", ids, padded) if batch.uniform_decode else None
        stride = n
    slot.end.record(stream)
    return InFlight(batches, slot, mode, desc, padded, seq_rows, stride, key)


def resolve_step(step: InFlight, origin: Any) -> tuple[list[list[int]], float, float, float]:
    """Wait for a launch; return (the tokens of each of its steps, its forward's GPU seconds,
    its start and end in ms after `origin`, an event recorded before the first launch; NaN
    without one)."""
    step.slot.end.synchronize()
    cp = require_device()
    gpu = cp.cuda.get_elapsed_time(step.slot.forward_start, step.slot.forward_end) / 1e3
    if origin is None:
        start = end = math.nan
    else:
        start = cp.cuda.get_elapsed_time(origin, step.slot.start)
        end = cp.cuda.get_elapsed_time(origin, step.slot.end)
    n, rows = len(step.batch.seqs), step.row_stride
    tokens = [step.slot.tokens[i * rows: i * rows + n].tolist() for i in range(len(step.batches))]
    return tokens, gpu, start, end


def _decode_run(sched: Scheduler, batch: ScheduledBatch, steps: int) -> tuple[list[ScheduledBatch], ScheduledBatch | None]:
    """`batch` and the following batches the scheduler forms with the same requests (up to
    `steps` in all), each updated; plus the first batch that differs (scheduled, not yet
    updated) or None. The single-step engine would run exactly these batches."""
    run = [batch]
    sched.update(batch)
    ids = [s.request_id for s in batch.seqs]
    while len(run) < steps:
        nxt = sched.schedule()
        if nxt is None:
            return run, None
        if not nxt.uniform_decode or [s.request_id for s in nxt.seqs] != ids:
            return run, nxt
        run.append(nxt)
        sched.update(nxt)
    return run, None


def generate(engine: Any, requests: list[Request], *, overlap: bool) -> GenerationResult:
    """Serve every request to completion (see the module docstring for the two loops)."""
    cp = require_device()
    sched = Scheduler(max_num_seqs=engine.max_seqs,
                      max_num_batched_tokens=engine.config.max_num_batched_tokens,
                      allocator=BlockAllocator(engine.num_kv_blocks, BLOCK_SIZE))
    for r in requests:
        sched.add(r)
    slots = engine.slots
    origin = cp.cuda.Event()
    origin.record()
    pending: list[tuple[InFlight, float]] = []
    done: list[tuple[InFlight, float, float, float, float]] = []

    def resolve_oldest() -> None:
        step, host = pending.pop(0)
        tokens, gpu, start, end = resolve_step(step, origin)
        for batch, toks in zip(step.batches, tokens):
            sched.record(batch, toks)
        done.append((step, host, gpu, start, end))

    started = time.perf_counter()
    index = 0
    previous: tuple | None = None  # the device metadata buffer's state is unknown at the start
    carried: ScheduledBatch | None = None  # scheduled by a multi-step run, not yet run
    steps = engine.decode_steps_per_launch
    while True:
        t0 = time.perf_counter()
        batch = carried if carried is not None else sched.schedule()
        carried = None
        if batch is None:
            break
        slot = slots[index % len(slots)]
        waited = 0.0
        if len(pending) == len(slots):  # the slot's previous launch must be resolved before reuse
            w0 = time.perf_counter()
            resolve_oldest()
            waited = time.perf_counter() - w0
        if engine.decode_loop is not None and batch.uniform_decode:
            run, carried = _decode_run(sched, batch, steps)
        else:
            run = [batch]
            sched.update(batch)
        # the overlapped loop advances decode metadata on the device; the synchronous one
        # builds every step's metadata on the host, as a step-at-a-time loop does
        step = enqueue_step(engine, run, slot, previous=previous if overlap else None)
        previous = step.key
        pending.append((step, time.perf_counter() - t0 - waited))
        if not overlap:
            resolve_oldest()
            step_done = done[-1]
            done[-1] = (step_done[0], time.perf_counter() - t0, *step_done[2:])
        index += 1
    while pending:
        resolve_oldest()
    wall = time.perf_counter() - started
    records = []
    prev_end = math.nan
    for step, host, gpu, start, end in done:
        known = not math.isnan(prev_end)
        gap = max(0.0, (start - prev_end) / 1e3) if known else math.nan
        period = (end - prev_end) / 1e3 if known else math.nan
        b = step.batch
        records.append(StepRecord(step.mode.value, b.uniform_decode, b.num_tokens, step.padded, len(b.seqs), host,
                                  gpu, gap, period, len(step.batches)))
        prev_end = end
    outputs = {r.request_id: sched.finished[r.request_id] for r in requests}
    generated = sum(len(v) for v in outputs.values())
    return GenerationResult(outputs, tuple(records), summarize(records, generated, wall))
