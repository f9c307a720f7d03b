"""GraphRunner: capture once per batch descriptor, replay after; the CUDAGraphWrapper analogue.

Dispatch (pure, cgraph.core.dispatch) decides a (mode, descriptor) per step; a runner trusts it:

1. A runner has one runtime mode, FULL or PIECEWISE.
2. Each call gets a mode and a descriptor, explicitly (`run(mode, desc, *args)`) or from
   the innermost `batch_context(mode, desc)` (`runner(*args)`).
3. If the mode is NONE or is not the runner's, the wrapped function runs directly. That is
   what lets runners nest: under a FULL step the outer FULL runner captures the whole
   function and inner PIECEWISE runners run inside its capture; under a PIECEWISE step the
   outer runner runs eagerly and each inner runner captures or replays its piece.
4. Otherwise the first call for a descriptor captures (only inside `capture_phase()`; a
   capture anywhere else raises CaptureNotAllowedError) and later calls replay. A first
   call runs the function `warmup` times eagerly, captures it, then replays once so its
   outputs are real: the function should only write its outputs (idempotent), or use
   warmup=0.

The runner keeps no input buffers: callers pass the same static arrays on every call (see
StaticBuffers). Debug mode (debug=True or CGRAPH_DEBUG=1) checks on every replay that the
input arrays are the captured ones and raises InputMismatchError naming the argument.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from typing import Any, Callable, Iterator

import attrs

from cgraph.core.tree import array_leaves
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import DispatchTable, capture_descriptors
from cgraph.core.errors import CaptureNotAllowedError, GraphClosedError, InputMismatchError
from cgraph.core.modes import GraphMode

_batch: contextvars.ContextVar[tuple[GraphMode, BatchDescriptor] | None] = contextvars.ContextVar(
    "cgraph_batch", default=None
)
_capture_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cgraph_capture_allowed", default=False
)


@contextlib.contextmanager
def batch_context(mode: GraphMode, descriptor: BatchDescriptor) -> Iterator[None]:
    """Make (mode, descriptor) the current step's dispatch result for runners called inside."""
    mode = _as_mode(mode)
    if not isinstance(descriptor, BatchDescriptor):
        raise TypeError(
            f"descriptor must be a BatchDescriptor, got {type(descriptor).__name__} {descriptor!r}; "
            "use the second value that cgraph.core.dispatch returns"
        )
    token = _batch.set((mode, descriptor))
    try:
        yield
    finally:
        _batch.reset(token)


def current_batch() -> tuple[GraphMode, BatchDescriptor] | None:
    """The innermost batch_context's (mode, descriptor), or None."""
    return _batch.get()


@contextlib.contextmanager
def capture_phase() -> Iterator[None]:
    """Allow runners to capture new graphs inside this block (and only here)."""
    token = _capture_allowed.set(True)
    try:
        yield
    finally:
        _capture_allowed.reset(token)


def capture_allowed() -> bool:
    return _capture_allowed.get()


def _as_mode(mode: Any) -> GraphMode:
    if isinstance(mode, GraphMode):
        return mode
    if isinstance(mode, str):
        return GraphMode.parse(mode)
    raise TypeError(f"mode must be a GraphMode or its name, got {type(mode).__name__} {mode!r}")


def _debug_default() -> bool:
    return os.environ.get("CGRAPH_DEBUG", "") not in ("", "0")


@attrs.frozen
class GraphStats:
    """One captured graph: its descriptor, capture seconds, node count and pool bytes after it."""

    descriptor: BatchDescriptor
    seconds: float
    nodes: int
    pool_bytes: int


class _Runner:
    """Shared dispatch contract of GraphRunner and BreakableRunner."""

    _allowed_modes: tuple[GraphMode, ...] = (GraphMode.FULL, GraphMode.PIECEWISE)

    def __init__(self, fn: Callable[..., Any], mode: Any, *, pool: Any = None,
                 debug: bool | None = None, eager: bool = False, warmup: int = 1,
                 name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a runner wraps a callable, got {type(fn).__name__} {fn!r}")
        mode = _as_mode(mode)
        if mode not in self._allowed_modes:
            raise ValueError(
                f"{type(self).__name__} runtime mode must be one of "
                f"{[m.name for m in self._allowed_modes]}, got {mode.name}; NONE needs no runner, "
                "call the function directly"
            )
        self.fn = fn
        self.mode = mode
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.debug = _debug_default() if debug is None else bool(debug)
        self.eager = bool(eager)
        self.warmup = warmup
        self._pool = pool
        self._entries: dict[BatchDescriptor, Any] = {}
        self._addresses: dict[BatchDescriptor, tuple] = {}
        self._closed = False

    # --- the hot path -------------------------------------------------------------------
    def run(self, mode: GraphMode, descriptor: BatchDescriptor, *args: Any, **kwargs: Any) -> Any:
        """Capture, replay or pass through, as the module docstring describes."""
        if mode is not self.mode or self.eager:
            return self._call_direct(mode, descriptor, args, kwargs)
        entry = self._entries.get(descriptor)
        if entry is None:
            return self._capture(descriptor, args, kwargs)
        if self.debug:
            self._check_addresses(descriptor, args, kwargs)
        return entry.replay()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Like run(), with mode and descriptor from the innermost batch_context (eager if none)."""
        batch = _batch.get()
        if batch is None:
            return self.fn(*args, **kwargs)
        return self.run(batch[0], batch[1], *args, **kwargs)

    # --- the rest -----------------------------------------------------------------------
    def _call_direct(self, mode: GraphMode, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> Any:
        if self._closed:
            raise GraphClosedError(f"runner {self.name!r} was closed; build a new runner")
        token = _batch.set((mode, descriptor))
        try:
            return self.fn(*args, **kwargs)
        finally:
            _batch.reset(token)

    def _capture(self, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> Any:
        if self._closed:
            raise GraphClosedError(f"runner {self.name!r} was closed; build a new runner")
        if not isinstance(descriptor, BatchDescriptor):
            raise TypeError(
                f"descriptor must be a BatchDescriptor, got {type(descriptor).__name__} {descriptor!r}"
            )
        if not _capture_allowed.get():
            raise CaptureNotAllowedError(
                f"runner {self.name!r} ({self.mode.name}) has no graph for {descriptor} and "
                "capturing is only allowed inside `with cgraph.capture_phase():` (or capture_all); "
                "capture every descriptor up front, or dispatch this batch to NONE"
            )
        token = _batch.set((self.mode, descriptor))
        try:
            entry = self._capture_entry(descriptor, args, kwargs)
        finally:
            _batch.reset(token)
        self._entries[descriptor] = entry
        self._addresses[descriptor] = tuple(
            (path, arr.data.ptr) for path, arr in array_leaves((args, kwargs))
        )
        # Capturing executes nothing: one replay makes this first call's outputs real.
        return entry.replay()

    def _capture_entry(self, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    def _check_addresses(self, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> None:
        expected = self._addresses[descriptor]
        actual = tuple((path, arr.data.ptr) for path, arr in array_leaves((args, kwargs)))
        if len(actual) != len(expected):
            raise InputMismatchError(
                f"runner {self.name!r}, {descriptor}: captured with {len(expected)} input arrays, "
                f"replayed with {len(actual)}; pass the same static buffers on every call"
            )
        for (path, want), (_, got) in zip(expected, actual):
            if want != got:
                raise InputMismatchError(
                    f"runner {self.name!r}, {descriptor}: input args{path} moved: captured at "
                    f"0x{want:x}, now at 0x{got:x}; copy new data into the captured buffer "
                    "(StaticBuffers.fill) instead of passing a new array"
                )

    @property
    def pool(self) -> Any:
        """The GraphPool every graph of this runner allocates from (created on first capture)."""
        if self._pool is None:
            from cgraph.cuda.pool import GraphPool

            self._pool = GraphPool()
        return self._pool

    @property
    def descriptors(self) -> tuple[BatchDescriptor, ...]:
        """The descriptors captured so far, in capture order."""
        return tuple(self._entries)

    def entry(self, descriptor: BatchDescriptor) -> Any:
        """The captured artifact for a descriptor (KeyError naming it if absent)."""
        try:
            return self._entries[descriptor]
        except KeyError:
            raise KeyError(f"runner {self.name!r} has no graph for {descriptor}") from None

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Close every graph of this runner and its pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for entry in self._entries.values():
            entry.close()
        self._entries.clear()
        self._addresses.clear()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, mode={self.mode.name}, graphs={len(self._entries)})"


class GraphRunner(_Runner):
    """Wraps a function: one CapturedGraph per batch descriptor in the runner's mode.

    All graphs share one GraphPool (pass `pool` to share it with other runners whose graphs
    never run at the same time). `eager=True` always runs the function directly, through
    the same buffers, which helps bisect a graph bug.
    """

    def _capture_entry(self, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> Any:
        from cgraph.cuda.graph import capture

        return capture(self.fn, *args, pool=self.pool, warmup=self.warmup,
                       name=f"{self.name}[{self.mode.name} {descriptor}]", **kwargs)


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


def capture_all(runner: _Runner, table: DispatchTable, make_inputs: Callable[[BatchDescriptor], Any],
                *, progress: bool = True) -> CaptureReport:
    """Capture every key of `table` for the runner's mode, largest first, with a progress bar.

    make_inputs(descriptor) returns the positional arguments for that descriptor (a tuple),
    or (args, kwargs). Descriptors already captured are skipped.
    """
    from tqdm.auto import tqdm

    descriptors = capture_descriptors(table).get(runner.mode, ())
    rows = []
    started = time.perf_counter()
    bar = tqdm(descriptors, desc=f"capturing {runner.name} {runner.mode.name}", disable=not progress,
               unit="graph")
    with capture_phase():
        for desc in bar:
            if desc in runner._entries:
                continue
            made = make_inputs(desc)
            if (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], tuple)
                    and isinstance(made[1], dict)):
                args, kwargs = made
            else:
                args, kwargs = (made if isinstance(made, tuple) else (made,)), {}
            t0 = time.perf_counter()
            runner.run(runner.mode, desc, *args, **kwargs)
            entry = runner._entries[desc]
            rows.append(GraphStats(desc, time.perf_counter() - t0, entry.num_nodes,
                                   runner.pool.total_bytes()))
    return CaptureReport(runner.mode, tuple(rows), time.perf_counter() - started,
                         runner.pool.total_bytes())
