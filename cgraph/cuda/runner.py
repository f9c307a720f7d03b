"""GraphRunner: capture once per batch descriptor, replay after; the CUDAGraphWrapper analogue.

Dispatch (pure, cgraph.core.dispatch) decides a (mode, descriptor) per step; a runner trusts it:

1. A runner has one runtime mode, FULL or PIECEWISE.
2. Each call gets a mode and a descriptor, explicitly (`run(mode, desc, *args)`) or from
   the innermost `batch_context(mode, desc)` (`runner(*args)`).
3. If the mode is NONE or is not the runner's, the wrapped function runs directly. That is
   what lets runners nest: under a FULL step the outer FULL runner captures the whole
   function and inner PIECEWISE runners run inside its capture; under a PIECEWISE step the
   outer runner runs eagerly and each inner runner captures or replays its piece.
4. Otherwise a descriptor with a graph replays. One without is captured inside
   `capture_phase()` (capture_all opens one); outside it, a runner with a
   :class:`LazyCapture` policy captures on the descriptor's N-th use, and runs the
   function eagerly until then; without a policy the call raises CaptureNotAllowedError.
   A capture that does not fit the pool's memory limit is refused: the descriptor is
   remembered and runs eagerly from then on, never captured again (counted in `stats`).
5. A capture runs the function `warmup` times eagerly, captures it, then replays once so
   the first call's outputs are real: the function should only write its outputs
   (idempotent), or use warmup=0.

The runner keeps no input buffers: callers pass the same static arrays on every call (see
StaticBuffers). Debug mode (debug=True or CGRAPH_DEBUG=1) checks on every replay that the
input arrays are the captured ones and raises InputMismatchError naming the argument.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import attrs

from cgraph.core.checks import check_int
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.errors import (ArgumentError, ArgumentTypeError, CaptureError, CaptureNotAllowedError,
                                GraphClosedError, InputMismatchError, NotFoundError)
from cgraph.core.modes import GraphMode
from cgraph.core.tree import argument_addresses, describe_argument
from cgraph.cuda.context import as_mode, capture_allowed, current_batch, running
from cgraph.cuda.graph import capture
from cgraph.cuda.interop import as_cupy_args
from cgraph.cuda.pool import GraphPool


def _debug_default() -> bool:
    return os.environ.get("CGRAPH_DEBUG", "") not in ("", "0")


@attrs.frozen
class LazyCapture:
    """Capture during serving: a descriptor is captured on its `after_uses`-th call (and
    runs eagerly before that), within the memory limit of the runner's pool (see
    GraphPool(limit_bytes=...)); a descriptor the limit refuses runs eagerly for good."""

    after_uses: int = attrs.field(default=1, converter=lambda n: check_int(n, "LazyCapture.after_uses", 1))


@attrs.frozen
class RunnerStats:
    """What a runner did beyond replaying: graphs captured, descriptors refused by the pool's
    memory limit, calls that ran eagerly for want of a graph, capture seconds, pool bytes."""

    captures: int
    refusals: int
    eager_fallbacks: int
    capture_seconds: float
    pool_bytes: int


def _is_out_of_memory(exc: BaseException) -> bool:
    from cupy.cuda.memory import OutOfMemoryError  # noqa: PLC0415 - GPU layer

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OutOfMemoryError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class Runner:
    """The dispatch contract of GraphRunner and BreakableRunner (module docstring).

    Subclasses name their capture function (`capture_function(fn, *args, pool, warmup,
    name, **kwargs)` returning an object with replay(), close() and num_nodes).
    """

    capture_function: Callable[..., Any]
    _allowed_modes: tuple[GraphMode, ...] = (GraphMode.FULL, GraphMode.PIECEWISE)

    def __init__(self, fn: Callable[..., Any], mode: Any, *, pool: GraphPool | None = None,
                 debug: bool | None = None, eager: bool = False, warmup: int = 1,
                 name: str | None = None, lazy: LazyCapture | None = None) -> None:
        if not callable(fn):
            raise ArgumentTypeError(f"a runner wraps a callable, got {type(fn).__name__} {fn!r}")
        mode = as_mode(mode)
        if mode not in self._allowed_modes:
            raise ArgumentError(
                f"{type(self).__name__} runtime mode must be one of "
                f"{[m.name for m in self._allowed_modes]}, got {mode.name}; NONE needs no runner, "
                "call the function directly"
            )
        if pool is not None and not isinstance(pool, GraphPool):
            raise ArgumentTypeError(f"pool must be a GraphPool or None, got {type(pool).__name__}")
        if lazy is not None and not isinstance(lazy, LazyCapture):
            raise ArgumentTypeError(f"lazy must be a LazyCapture or None, got {type(lazy).__name__}")
        self.fn = fn
        self.mode = mode
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.debug = _debug_default() if debug is None else bool(debug)
        self.eager = bool(eager)
        self.warmup = check_int(warmup, "warmup", 0, hint="use 0 to skip warm-up")
        self.lazy = lazy
        self._pool = pool
        self._owns_pool = pool is None
        self._entries: dict[BatchDescriptor, Any] = {}
        self._addresses: dict[BatchDescriptor, tuple] = {}
        self._uses: dict[BatchDescriptor, int] = {}
        self._refused: set[BatchDescriptor] = set()
        self._fallbacks = 0
        self._capture_seconds = 0.0
        self._closed = False

    # --- the hot path -------------------------------------------------------------------
    def run(self, mode: GraphMode, descriptor: BatchDescriptor, *args: Any, **kwargs: Any) -> Any:
        """Replay, capture, run eagerly or pass through, as the module docstring describes.

        Top-level torch / JAX GPU arrays among the arguments reach fn as CuPy views of the
        same memory (cgraph.cuda.interop.as_cupy), so their addresses are checked as usual."""
        args, kwargs = as_cupy_args(args, kwargs)
        if mode is not self.mode or self.eager:
            return self._call_direct(mode, descriptor, args, kwargs)
        entry = self._entries.get(descriptor)
        if entry is None:
            return self._miss(descriptor, args, kwargs)
        if self.debug:
            self._check_addresses(descriptor, args, kwargs)
        return entry.replay()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Like run(), with mode and descriptor from the innermost batch_context (eager if none)."""
        batch = current_batch()
        if batch is None:
            args, kwargs = as_cupy_args(args, kwargs)
            return self.fn(*args, **kwargs)
        return self.run(batch[0], batch[1], *args, **kwargs)

    # --- the rest -----------------------------------------------------------------------
    def _call_direct(self, mode: GraphMode, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> Any:
        self._check_open()
        with running(mode, descriptor):
            return self.fn(*args, **kwargs)

    def _miss(self, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> Any:
        """No graph for the descriptor: capture it, run it eagerly, or refuse (rule 4)."""
        self._check_open()
        if not isinstance(descriptor, BatchDescriptor):
            raise ArgumentTypeError(
                f"descriptor must be a BatchDescriptor, got {type(descriptor).__name__} {descriptor!r}"
            )
        if capture_allowed():
            return self.capture(descriptor, *args, **kwargs)
        if self.lazy is None:
            raise CaptureNotAllowedError(
                f"runner {self.name!r} ({self.mode.name}) has no graph for {descriptor} and "
                "capturing is only allowed inside `with cgraph.capture_phase():` (or capture_all); "
                "capture every descriptor up front, give the runner a LazyCapture policy, or "
                "dispatch this batch to NONE"
            )
        uses = self._uses.get(descriptor, 0) + 1
        self._uses[descriptor] = uses
        if descriptor not in self._refused and uses >= self.lazy.after_uses:
            try:
                return self.capture(descriptor, *args, **kwargs)
            except CaptureError as exc:
                if not _is_out_of_memory(exc):
                    raise
                self._refused.add(descriptor)  # the negative cache: never captured again
        self._fallbacks += 1
        return self._call_direct(GraphMode.NONE, descriptor, args, kwargs)

    def capture(self, descriptor: BatchDescriptor, *args: Any, **kwargs: Any) -> Any:
        """Capture the function for `descriptor` on these arguments and return the first
        replay's outputs (capture executes nothing; the replay makes the outputs real)."""
        self._check_open()
        if descriptor in self._entries:
            raise ArgumentError(f"runner {self.name!r} already has a graph for {descriptor}")
        started = time.perf_counter()
        with running(self.mode, descriptor):
            entry = self.capture_function(
                self.fn, *args, pool=self.pool, warmup=self.warmup,
                name=f"{self.name}[{self.mode.name} {descriptor}]", **kwargs)
        self._capture_seconds += time.perf_counter() - started
        self._entries[descriptor] = entry
        self._addresses[descriptor] = argument_addresses(args, kwargs)
        return entry.replay()

    def _check_addresses(self, descriptor: BatchDescriptor, args: tuple, kwargs: dict) -> None:
        expected = self._addresses[descriptor]
        actual = argument_addresses(args, kwargs)
        if len(actual) != len(expected):
            raise InputMismatchError(
                f"runner {self.name!r}, {descriptor}: captured with {len(expected)} input arrays, "
                f"replayed with {len(actual)}; pass the same static buffers on every call"
            )
        for (path, want), (_, got) in zip(expected, actual):
            if want != got:
                raise InputMismatchError(
                    f"runner {self.name!r}, {descriptor}: input {describe_argument(self.fn, path)} "
                    f"moved: captured at 0x{want:x}, now at 0x{got:x}; copy new data into the "
                    "captured buffer (StaticBuffers.fill) instead of passing a new array"
                )

    def _check_open(self) -> None:
        if self._closed:
            raise GraphClosedError(f"runner {self.name!r} was closed; build a new runner")

    @property
    def pool(self) -> GraphPool:
        """The GraphPool every graph of this runner allocates from (created on first capture)."""
        if self._pool is None:
            self._pool = GraphPool()
        return self._pool

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def descriptors(self) -> tuple[BatchDescriptor, ...]:
        """The descriptors captured so far, in capture order."""
        return tuple(self._entries)

    @property
    def refused(self) -> frozenset[BatchDescriptor]:
        """Descriptors the pool's memory limit refused; they run eagerly."""
        return frozenset(self._refused)

    @property
    def stats(self) -> RunnerStats:
        return RunnerStats(len(self._entries), len(self._refused), self._fallbacks,
                           self._capture_seconds, self._pool.total_bytes() if self._pool else 0)

    def __contains__(self, descriptor: object) -> bool:
        """True when the runner has a graph for `descriptor`."""
        return descriptor in self._entries

    def entry(self, descriptor: BatchDescriptor) -> Any:
        """The captured artifact for a descriptor (NotFoundError naming it if absent)."""
        try:
            return self._entries[descriptor]
        except KeyError:
            raise NotFoundError(f"runner {self.name!r} has no graph for {descriptor}") from None

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Close every graph of this runner, and its pool if the runner created it. Idempotent.

        A pool passed in belongs to the caller (other runners may share it) and stays open.
        """
        if self._closed:
            return
        self._closed = True
        for entry in self._entries.values():
            entry.close()
        self._entries.clear()
        self._addresses.clear()
        if self._owns_pool and self._pool is not None:
            self._pool.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, mode={self.mode.name}, graphs={len(self._entries)})"


class GraphRunner(Runner):
    """Wraps a function: one CapturedGraph per batch descriptor in the runner's mode.

    All graphs share one GraphPool (pass `pool` to share it with other runners whose graphs
    never run at the same time). `eager=True` always runs the function directly, through
    the same buffers, which helps bisect a graph bug.
    """

    capture_function = staticmethod(capture)
