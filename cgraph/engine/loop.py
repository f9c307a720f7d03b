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
from typing import TYPE_CHECKING, Any, Hashable

import attrs
import numpy as np

from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.modes import GraphMode
from cgraph.cuda.device import require_device
from cgraph.engine.blocks import BLOCK_SIZE, BlockAllocator
from cgraph.engine.metadata import MetadataLayout, build_metadata
from cgraph.engine.scheduler import Request, ScheduledBatch, Scheduler
from cgraph.engine.stats import StepRecord, summarize

if TYPE_CHECKING:  # pragma: no cover
    from cgraph.engine.engine import Engine

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
    """Pinned staging for one step in flight: its metadata, its tokens, its four events
    (first operation, forward start, forward end, last operation)."""

    staging: np.ndarray
    tokens: np.ndarray
    start: Any
    forward_start: Any
    forward_end: Any
    end: Any

    @classmethod
    def allocate(cls, layout: MetadataLayout, max_seqs: int) -> "StepSlot":
        cp = require_device()
        import cupyx  # noqa: PLC0415 - GPU layer

        return cls(cupyx.empty_pinned((layout.size,), dtype=np.int32),
                   cupyx.empty_pinned((max_seqs,), dtype=np.int32), *(cp.cuda.Event() for _ in range(4)))



@attrs.define(eq=False)
class InFlight:
    """A step enqueued and not yet resolved."""

    batch: ScheduledBatch
    slot: StepSlot
    mode: GraphMode
    descriptor: BatchDescriptor
    padded: int
    key: tuple | None  # (request ids, padded rows) of a uniform decode step, else None


def enqueue_step(engine: "Engine", batch: ScheduledBatch, slot: StepSlot, *, eager: bool = False,
                 previous: tuple | None = None) -> InFlight:
    """Queue one step on the current stream; returns without waiting for the GPU.

    The slot must be free (its previous step resolved): its staging buffer is rewritten.
    `previous` is the key of the step enqueued just before on this engine: when both are
    uniform decode steps of the same requests in the same rows, the step's metadata is
    advanced on the device (kernels.advance_decode) instead of built and copied in.
    """
    import cgraph.kernels as K  # noqa: PLC0415 - GPU layer

    stream = require_device().cuda.get_current_stream()
    mode, desc, seq_rows, qlen = engine.prepare(batch, eager=eager)
    padded = desc.num_tokens
    key = (tuple(s.request_id for s in batch.seqs), padded) if batch.uniform_decode else None
    if key is not None and key == previous:
        inputs, _ = engine.views_for(padded, seq_rows)
        slot.start.record(stream)
        K.advance_decode(inputs.positions, inputs.seq_lens, inputs.slot_mapping, inputs.token_source,
                         inputs.block_tables, inputs.num_seqs, block_size=BLOCK_SIZE, stream=stream)
    else:
        meta = build_metadata(batch, num_tokens=padded, num_seqs=seq_rows, max_blocks=engine.max_blocks)
        used = engine.layout.pack(meta, slot.staging)
        slot.start.record(stream)
        engine.buffers["meta"][:used].set(slot.staging[:used], stream=stream)
    slot.forward_start.record(stream)
    engine.launch(mode, desc, seq_rows, qlen)
    slot.forward_end.record(stream)
    n = len(batch.seqs)
    engine.buffers["next_tokens"][:n].get(stream=stream, out=slot.tokens[:n], blocking=False)
    slot.end.record(stream)
    return InFlight(batch, slot, mode, desc, padded, key)


def resolve_step(step: InFlight, origin: Any) -> tuple[list[int], float, float, float]:
    """Wait for a step; return (its tokens, its forward's GPU seconds, its start and end in
    ms after `origin`, an event recorded before the first step; NaN without one)."""
    step.slot.end.synchronize()
    cp = require_device()
    gpu = cp.cuda.get_elapsed_time(step.slot.forward_start, step.slot.forward_end) / 1e3
    if origin is None:
        start = end = math.nan
    else:
        start = cp.cuda.get_elapsed_time(origin, step.slot.start)
        end = cp.cuda.get_elapsed_time(origin, step.slot.end)
    return step.slot.tokens[: len(step.batch.seqs)].tolist(), gpu, start, end


def generate(engine: "Engine", requests: list[Request], *, overlap: bool) -> GenerationResult:
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
        sched.record(step.batch, tokens)
        done.append((step, host, gpu, start, end))

    started = time.perf_counter()
    index = 0
    previous: tuple | None = None  # the device metadata buffer's state is unknown at the start
    while True:
        t0 = time.perf_counter()
        batch = sched.schedule()
        if batch is None:
            break
        slot = slots[index % len(slots)]
        waited = 0.0
        if len(pending) == len(slots):  # the slot's previous step must be resolved before reuse
            w0 = time.perf_counter()
            resolve_oldest()
            waited = time.perf_counter() - w0
        # the overlapped loop advances decode metadata on the device; the synchronous one
        # builds every step's metadata on the host, as a step-at-a-time loop does
        step = enqueue_step(engine, batch, slot, previous=previous if overlap else None)
        previous = step.key
        sched.update(batch)
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
        records.append(StepRecord(step.mode.value, step.batch.uniform_decode, step.batch.num_tokens,
                                  step.padded, len(step.batch.seqs), host, gpu, gap, period))
        prev_end = end
    outputs = {r.request_id: sched.finished[r.request_id] for r in requests}
    generated = sum(len(v) for v in outputs.values())
    return GenerationResult(outputs, tuple(records), summarize(records, generated, wall))
