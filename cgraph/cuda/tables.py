"""A runner's whole dispatch table: capture it up front, or know its memory before capturing.

`capture_all(runner, table, make_inputs)` captures every key of the runner's mode,
largest first, so smaller graphs reuse the pool memory the largest one grew.
`estimate_graph_memory(runner, table, make_inputs)` finds the pool bytes that whole table
will take by capturing only its largest key into a scratch pool and releasing it: graphs
captured largest first into one pool reuse that memory, so the largest decides.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import attrs

from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import DispatchTable, capture_descriptors
from cgraph.core.errors import ArgumentTypeError
from cgraph.core.modes import GraphMode
from cgraph.cuda.context import capture_phase, running
from cgraph.cuda.pool import GraphPool
from cgraph.cuda.runner import Runner

MakeInputs = Callable[[BatchDescriptor], Any]


@attrs.frozen
class GraphStats:
    """One captured graph: its descriptor, capture seconds, node count and pool bytes after it."""

    descriptor: BatchDescriptor
    seconds: float
    nodes: int
    pool_bytes: int


@attrs.frozen
class CaptureReport:
    """What capture_all did: one GraphStats per graph, in capture order, and totals."""

    mode: GraphMode
    graphs: tuple[GraphStats, ...]
    total_seconds: float
    pool_bytes: int

    @property
    def largest(self) -> GraphStats | None:
        return max(self.graphs, key=lambda g: g.descriptor.num_tokens, default=None)

    def __str__(self) -> str:
        return (
            f"captured {len(self.graphs)} {self.mode.name} graphs in {self.total_seconds:.2f} s, "
            f"pool {self.pool_bytes / 2**20:.1f} MiB"
        )


@attrs.frozen
class MemoryEstimate:
    """Pool bytes a runner's table will take (the largest graph's), found before capture_all."""

    mode: GraphMode
    largest: BatchDescriptor | None
    pool_bytes: int
    seconds: float


def _split_inputs(made: Any) -> tuple[tuple, dict]:
    # make_inputs returns the positional arguments (a tuple or one value) or (args, kwargs)
    if (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], tuple)
            and isinstance(made[1], dict)):
        return made
    return (made if isinstance(made, tuple) else (made,)), {}


def _check(runner: Any, table: Any, make_inputs: Any, what: str) -> None:
    if not isinstance(runner, Runner):
        raise ArgumentTypeError(f"{what} needs a GraphRunner or BreakableRunner, got {type(runner).__name__}")
    if not isinstance(table, DispatchTable):
        raise ArgumentTypeError(f"{what} needs a DispatchTable, got {type(table).__name__}; "
                                "build one with build_dispatch_table(GraphConfig(...))")
    if not callable(make_inputs):
        raise ArgumentTypeError(f"make_inputs must be callable(descriptor) -> arguments, got "
                                f"{type(make_inputs).__name__}")


def capture_all(runner: Runner, table: DispatchTable, make_inputs: MakeInputs, *,
                progress: bool = True) -> CaptureReport:
    """Capture every key of `table` for the runner's mode, largest first, with a progress bar.

    make_inputs(descriptor) returns the positional arguments for that descriptor (a tuple),
    or (args, kwargs). Descriptors already captured are skipped.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415 - only needed here

    _check(runner, table, make_inputs, "capture_all")
    descriptors = capture_descriptors(table).get(runner.mode, ())
    rows = []
    started = time.perf_counter()
    bar = tqdm(descriptors, desc=f"capturing {runner.name} {runner.mode.name}", disable=not progress,
               unit="graph")
    with capture_phase():
        for desc in bar:
            if desc in runner:
                continue
            args, kwargs = _split_inputs(make_inputs(desc))
            t0 = time.perf_counter()
            runner.capture(desc, *args, **kwargs)
            rows.append(GraphStats(desc, time.perf_counter() - t0, runner.entry(desc).num_nodes,
                                   runner.pool.total_bytes()))
    return CaptureReport(runner.mode, tuple(rows), time.perf_counter() - started,
                         runner.pool.total_bytes())


def estimate_graph_memory(runner: Runner, table: DispatchTable, make_inputs: MakeInputs) -> MemoryEstimate:
    """The pool bytes capture_all(runner, table, make_inputs) will leave in a fresh pool.

    Captures only the runner's largest key (the first capture_all would capture) into a
    scratch pool, reads that pool's size and releases it; the runner itself is unchanged.
    A runner whose mode has no keys in the table needs 0 bytes.
    """
    _check(runner, table, make_inputs, "estimate_graph_memory")
    keys = capture_descriptors(table).get(runner.mode, ())
    if not keys:
        return MemoryEstimate(runner.mode, None, 0, 0.0)
    largest = keys[0]
    args, kwargs = _split_inputs(make_inputs(largest))
    started = time.perf_counter()
    scratch = GraphPool()
    try:
        with running(runner.mode, largest):
            graph = runner.capture_function(runner.fn, *args, pool=scratch, warmup=runner.warmup,
                                                  name=f"{runner.name}[estimate {largest}]", **kwargs)
        graph.close()
        pool_bytes = scratch.total_bytes()
    finally:
        scratch.close()
    return MemoryEstimate(runner.mode, largest, pool_bytes, time.perf_counter() - started)

