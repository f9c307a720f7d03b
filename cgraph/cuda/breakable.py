"""Breakable graphs: one capture split into graph segments by eager breaks.

Inside `with BreakableCapture() as cap:` everything launched on the capture stream is
recorded into the current segment. `cap.add_eager(fn, ...)` (or calling a function
decorated with `@eager_break`) ends that segment, runs fn eagerly, records it, and starts
a new segment. `cap.replay()` then runs: segment graph 1, break 1, segment graph 2, ...
on the current stream. This is how PIECEWISE mode works here: attention is a break, the
rest is captured, and no compiler splits the model.

Contract for breaks: a break writes into arrays the caller provides (static buffers),
because segments captured after it read the addresses it wrote at capture time. A break
that returns an array it allocated is an error during capture unless the decorator names
the static argument to copy the result into (`@eager_break(copy_into="out")`).
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any, Callable

import attrs

from cgraph.cuda import state as _state, callbacks
from cgraph.cuda.device import require_device
from cgraph.core.tree import array_leaves
from cgraph.cuda.graph import _end_quietly, _validate_capture_stream, graph_node_count
from cgraph.core.errors import CaptureError, GraphClosedError
from cgraph.cuda.pool import GraphPool
from cgraph.cuda.runner import _Runner


@attrs.frozen
class Segment:
    """One recorded step: kind "graph" (with its node count) or "eager" (a break)."""

    kind: str
    name: str
    nodes: int = 0


class _Tracker:
    """Allocator wrapper recording what a break allocates, to spot breaks returning new arrays."""

    def __init__(self, malloc: Callable[[int], Any]) -> None:
        self._malloc = malloc
        self.spans: list[tuple[int, int]] = []

    def __call__(self, size: int) -> Any:
        mem = self._malloc(size)
        self.spans.append((mem.ptr, size))
        return mem

    def owns(self, ptr: int) -> bool:
        return any(start <= ptr < start + size for start, size in self.spans)


class BreakableCapture:
    """Context manager recording graph segments and eager breaks; `replay()` runs them in order.

    One active capture per thread; nesting raises NestedCaptureError. An exception inside
    the block ends the capture, discards every segment, clears the thread's state and
    propagates. Empty segments (a break first, two breaks in a row) record no graph. All
    segments allocate from one GraphPool (default: a new one this capture owns).
    A BreakableCapture records once; replay it any number of times.
    """

    def __init__(self, stream: Any = None, pool: GraphPool | None = None, name: str = "breakable") -> None:
        self._cp = require_device()
        if pool is not None and not isinstance(pool, GraphPool):
            raise TypeError(f"pool must be a GraphPool or None, got {type(pool).__name__}")
        self._owns_pool = pool is None
        self._pool = GraphPool() if pool is None else pool
        self._stream = self._pool.stream if stream is None else stream
        _validate_capture_stream(self._stream)
        self.name = name
        self.outputs: Any = None
        self.capture_seconds = 0.0
        self._segments: list[Segment] = []
        self._steps: tuple[Callable[[], Any], ...] = ()
        self._pending: list[Callable[[], Any]] = []
        self._keep: list[Any] = []
        self._graphs: list[Any] = []
        self._state: _state.ActiveCapture | None = None
        self._exits: list[Any] = []
        self._recorded = False
        self._closed = False
        self._pool._register(self)

    # --- recording ----------------------------------------------------------------------
    def __enter__(self) -> "BreakableCapture":
        if self._recorded or self._state is not None:
            raise RuntimeError(
                f"BreakableCapture {self.name!r} has already recorded; create a new one to capture again"
            )
        if self._closed:
            raise GraphClosedError(f"BreakableCapture {self.name!r} was closed")
        state = _state.ActiveCapture(kind="breakable", name=self.name, owner=self)
        _state.enter(state)
        self._state = state
        try:
            caller = self._cp.cuda.get_current_stream()
            self._caller = caller
            self._stream.wait_event(caller.record())
            for ctx in (self._stream, self._pool.allocating()):
                ctx.__enter__()
                self._exits.append(ctx)
            self._started = time.perf_counter()
            self._begin()
        except BaseException:
            self._unwind()
            raise
        return self

    def _begin(self) -> None:
        self._stream.begin_capture()

    def _end_segment(self) -> None:
        graph = self._stream.end_capture()
        nodes = graph_node_count(graph)
        if nodes == 0:
            return  # nothing was launched since the last break: keep no graph
        graph.upload(self._stream)
        self._graphs.append(graph)
        self._segments.append(Segment("graph", f"{self.name}:segment{len(self._graphs)}", nodes))
        self._pending.append(graph.launch)

    def add_eager(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """End the current segment, run fn(*args, **kwargs) eagerly, record it, start a new segment.

        Returns fn's capture-time result. Replays call fn again with the same arguments
        and ignore its result, so fn must write into the arrays it is given.
        """
        state = _state.active()
        if state is None or state.owner is not self:
            raise RuntimeError(
                f"add_eager called outside `with` of BreakableCapture {self.name!r} "
                "(or from another thread); call it inside the capture block"
            )
        if not callable(fn):
            raise TypeError(f"add_eager needs a callable, got {type(fn).__name__} {fn!r}")
        self._end_segment()
        label = getattr(fn, "__qualname__", repr(fn))
        tracker = _Tracker(self._cp.get_default_memory_pool().malloc)
        state.in_break = True
        try:
            # Breaks allocate as they will at replay (outside the graph pool); tracked so a
            # returned new array is caught now rather than read stale on every replay.
            with self._cp.cuda.using_allocator(tracker):
                result = fn(*args, **kwargs)
        finally:
            state.in_break = False
        for path, arr in array_leaves(result):
            if tracker.owns(arr.data.ptr):
                raise ValueError(
                    f"eager break {label!r} returned a new array (result{path}, shape {arr.shape}) "
                    "during capture; its address changes on every replay, so later segments would "
                    "read stale memory. Write into a caller-provided output, or decorate with "
                    "@eager_break(copy_into='<name of the static output argument>')"
                )
        self._segments.append(Segment("eager", label))
        self._keep.append((fn, args, kwargs))
        self._pending.append(functools.partial(fn, *args, **kwargs))
        self._begin()
        return result

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if exc_type is None:
                self._end_segment()
            else:
                _end_quietly(self._stream)
        except BaseException:
            self._discard()
            self._unwind()
            raise
        if exc_type is not None:
            self._discard()
            self._unwind()
            return False
        self.capture_seconds = time.perf_counter() - self._started
        self._steps = tuple(self._pending)
        self._keep.extend(self._state.keepalive)
        self._pending = []
        self._recorded = True
        self._unwind()
        return False

    def _discard(self) -> None:
        self._graphs.clear()
        self._segments.clear()
        self._pending.clear()
        self._keep.clear()

    def _unwind(self) -> None:
        while self._exits:
            self._exits.pop().__exit__(None, None, None)
        if self._state is not None and _state.active() is self._state:
            _state.leave()
        self._state = None
        caller = getattr(self, "_caller", None)
        if caller is not None:
            caller.wait_event(self._stream.record())

    # --- replay and introspection -------------------------------------------------------
    def replay(self) -> Any:
        """Run every segment graph and break in order on the current stream; return `outputs`."""
        if not self._recorded:
            raise RuntimeError(
                f"BreakableCapture {self.name!r} has nothing to replay: "
                + ("it was closed" if self._closed else "record it with `with cap:` first")
            )
        if callbacks._pending:
            callbacks.check_callbacks()
        for step in self._steps:
            step()
        return self.outputs

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The recorded steps as data, in replay order."""
        return tuple(self._segments)

    @property
    def num_graphs(self) -> int:
        return sum(1 for s in self._segments if s.kind == "graph")

    @property
    def num_breaks(self) -> int:
        return sum(1 for s in self._segments if s.kind == "eager")

    @property
    def num_nodes(self) -> int:
        return sum(s.nodes for s in self._segments)

    @property
    def pool(self) -> GraphPool:
        return self._pool

    def close(self) -> None:
        """Drop the graphs and everything kept for replays (and the pool, if owned)."""
        if self._closed:
            return
        self._closed = True
        self._cp.cuda.Device().synchronize()
        self._recorded = False
        self._steps = ()
        self.outputs = None
        self._discard()
        if self._owns_pool:
            self._pool.close()

    def __repr__(self) -> str:
        return f"BreakableCapture(graphs={self.num_graphs}, eager_breaks={self.num_breaks})"


def eager_break(fn: Callable[..., Any] | None = None, *, copy_into: str | None = None) -> Any:
    """Mark a function as an eager break.

    Outside any capture it just runs. Inside a BreakableCapture it becomes a break (see
    BreakableCapture.add_eager). Inside a plain capture (FULL) it is captured like any
    other op, so one model runs FULL or PIECEWISE unchanged. Called from inside another
    break it runs inline: nested decorated ops make one break, not two.

    copy_into: the name of an argument holding a static output; the function's returned
    array is copied into it on every call (capture and replay), and that argument is
    returned instead.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise TypeError(f"eager_break decorates a callable, got {type(f).__name__} {f!r}")
        body = f
        if copy_into is not None:
            signature = inspect.signature(f)
            if copy_into not in signature.parameters:
                raise ValueError(
                    f"copy_into={copy_into!r} is not a parameter of {f.__qualname__}{signature}; "
                    "name the argument that holds the static output"
                )

            def body(*args: Any, **kwargs: Any) -> Any:
                target = signature.bind(*args, **kwargs).arguments[copy_into]
                result = f(*args, **kwargs)
                if result is not target:
                    require_device().copyto(target, result)
                return target

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state = _state.active()
            if state is None or state.kind != "breakable" or state.in_break:
                return body(*args, **kwargs)
            return state.owner.add_eager(body, *args, **kwargs)

        wrapper.__wrapped_break__ = f  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate


class BreakableRunner(_Runner):
    """GraphRunner's contract, capturing one BreakableCapture per descriptor.

    The usual runtime mode is PIECEWISE (breaks at attention); FULL is accepted too, with
    the breaks then recorded as eager steps. `eager=True` runs everything eagerly through
    the same buffers, to bisect a graph bug.
    """

    def _capture_entry(self, descriptor: Any, args: tuple, kwargs: dict) -> BreakableCapture:
        name = f"{self.name}[{self.mode.name} {descriptor}]"
        phase = "warm-up"
        try:
            with self.pool.allocating():
                for _ in range(self.warmup):
                    self.fn(*args, **kwargs)
            phase = "capture"
            cap = BreakableCapture(pool=self.pool, name=name)
            with cap:
                outputs = self.fn(*args, **kwargs)
        except Exception as exc:
            raise CaptureError(
                f"capturing breakable graph {name!r} failed during {phase}: "
                f"{type(exc).__name__}: {exc}. The stream is no longer capturing and nothing was kept."
            ) from exc
        cap.outputs = outputs
        cap._keep.append((self.fn, args, kwargs))
        return cap
