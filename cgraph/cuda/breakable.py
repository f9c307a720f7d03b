"""Breakable graphs: one capture split into graph segments by eager breaks.

Inside `with BreakableCapture() as cap:` everything launched on the capture stream is
recorded into the current segment. `cap.add_eager(fn, ...)` (or calling a function
decorated with `@eager_break`) ends that segment, runs fn eagerly, records it, and starts
a new segment. `cap.replay()` then runs: segment graph 1, break 1, segment graph 2, ...
on the current stream. This is how PIECEWISE mode works here: attention is a break, the
rest is captured, and no compiler splits the model. :func:`capture_breakable` is the
breakable twin of :func:`cgraph.capture` (warm-up, capture, keep the function alive).

Contract for breaks: a break writes into arrays the caller provides (static buffers),
because segments captured after it read the addresses it wrote at capture time. A break
that returns an array it allocated is an error during capture unless the decorator names
the static argument to copy the result into (`@eager_break(copy_into="out")`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import attrs

from cgraph.core.checks import check_int
from cgraph.core.errors import (ArgumentError, ArgumentTypeError, CaptureError, GraphClosedError,
                                NestedCaptureError, StateError)
from cgraph.core.tree import array_leaves
from cgraph.cuda import callbacks
from cgraph.cuda import state as _state
from cgraph.cuda.device import require_device
from cgraph.cuda.graph import node_count
from cgraph.cuda.pool import GraphPool
from cgraph.cuda.runner import Runner
from cgraph.cuda.session import CaptureSession, check_capture_stream


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
        _state.check_idle(name)  # before a pool exists: closing one would synchronize inside a capture
        if pool is not None and not isinstance(pool, GraphPool):
            raise ArgumentTypeError(f"pool must be a GraphPool or None, got {type(pool).__name__}")
        if stream is not None:
            check_capture_stream(stream)
        self._owns_pool = pool is None
        self._pool = GraphPool() if pool is None else pool
        self._stream = stream
        self.name = name
        self.outputs: Any = None
        self.capture_seconds = 0.0
        self._segments: list[Segment] = []
        self._steps: tuple[Callable[[], Any], ...] = ()
        self._pending: list[Callable[[], Any]] = []
        self._keep: list[Any] = []
        self._graphs: list[Any] = []
        self._session: CaptureSession | None = None
        self._recorded = False
        self._closed = False
        self._pool.track(self)

    # --- recording ----------------------------------------------------------------------
    def __enter__(self) -> "BreakableCapture":
        session = self._open()
        try:
            session.begin()
        except BaseException:
            self._abandon()
            raise
        return self

    def _open(self) -> CaptureSession:
        if self._closed:
            raise GraphClosedError(f"BreakableCapture {self.name!r} was closed; create a new one")
        if self._recorded or self._session is not None:
            raise StateError(
                f"BreakableCapture {self.name!r} has already recorded; create a new one to capture again"
            )
        session = CaptureSession(self.name, self._pool, stream=self._stream, kind="breakable", owner=self)
        session.__enter__()
        self._session = session
        return session

    def _end_segment(self) -> None:
        session = self._session
        graph = session.end()
        nodes = node_count(graph)
        if nodes == 0:
            return  # nothing was launched since the last break: keep no graph
        graph.upload(session.stream)
        self._graphs.append(graph)
        self._segments.append(Segment("graph", f"{self.name}:segment{len(self._graphs)}", nodes))
        self._pending.append(graph.launch)

    def add_eager(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """End the current segment, run fn(*args, **kwargs) eagerly, record it, start a new segment.

        Returns fn's capture-time result. Replays call fn again with the same arguments
        and ignore its result, so fn must write into the arrays it is given.
        """
        session = self._session
        if session is None or _state.active() is not session.state:
            raise StateError(
                f"add_eager called outside `with` of BreakableCapture {self.name!r} "
                "(or from another thread); call it inside the capture block"
            )
        if not callable(fn):
            raise ArgumentTypeError(f"add_eager needs a callable, got {type(fn).__name__} {fn!r}")
        _state.refuse_in_conditional("an eager break")
        self._end_segment()
        label = getattr(fn, "__qualname__", repr(fn))
        tracker = _Tracker(self._cp.get_default_memory_pool().malloc)
        session.state.in_break = True
        try:
            # Breaks allocate as they will at replay (outside the graph pool); tracked so a
            # returned new array is caught now rather than read stale on every replay.
            with self._cp.cuda.using_allocator(tracker):
                result = fn(*args, **kwargs)
        finally:
            session.state.in_break = False
        for path, arr in array_leaves(result):
            if tracker.owns(arr.data.ptr):
                raise ArgumentError(
                    f"eager break {label!r} returned a new array (result{path}, shape {arr.shape}) "
                    "during capture; its address changes on every replay, so later segments would "
                    "read stale memory. Write into a caller-provided output, or decorate with "
                    "@eager_break(copy_into='<name of the static output argument>')"
                )
        self._segments.append(Segment("eager", label))
        self._keep.append((fn, args, kwargs))
        self._pending.append(functools.partial(fn, *args, **kwargs))
        session.begin()
        return result

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if exc_type is None:
                self._end_segment()
        except BaseException:
            self._abandon()
            raise
        if exc_type is not None:
            self._abandon()
            return False
        session, self._session = self._session, None
        session.__exit__(None, None, None)
        self.capture_seconds = session.capture_seconds
        self._steps = tuple(self._pending)
        self._keep.extend(session.keepalive)
        self._pending = []
        self._recorded = True
        return False

    def _abandon(self) -> None:
        """End the session of a recording that failed and drop what it recorded."""
        self._discard()
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(None, None, None)

    def _discard(self) -> None:
        self._graphs.clear()
        self._segments.clear()
        self._pending.clear()
        self._keep.clear()

    # --- replay and introspection -------------------------------------------------------
    def replay(self) -> Any:
        """Run every segment graph and break in order on the current stream; return `outputs`."""
        if not self._recorded:
            if self._closed:
                raise GraphClosedError(f"BreakableCapture {self.name!r} was closed; record a new one")
            raise StateError(f"BreakableCapture {self.name!r} has nothing to replay: record it "
                             "with `with cap:` first")
        if callbacks.failures:
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

    @property
    def closed(self) -> bool:
        return self._closed

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


def capture_breakable(fn: Callable[..., Any], *args: Any, pool: GraphPool | None = None,
                      stream: Any = None, warmup: int = 1, name: str | None = None,
                      **kwargs: Any) -> BreakableCapture:
    """capture()'s contract for a function with eager breaks: a recorded BreakableCapture.

    fn runs `warmup` times eagerly on the capture stream and pool (breaks run inline),
    then once under capture, split at its breaks; its return value becomes `outputs`,
    and the capture keeps fn and its arguments alive. A failure raises CaptureError
    naming the phase; nothing is left capturing.
    """
    if not callable(fn):
        raise ArgumentTypeError(f"capture_breakable needs a callable, got {type(fn).__name__} {fn!r}")
    warmup = check_int(warmup, "warmup", 0, hint="use 0 to skip warm-up")
    name = name or getattr(fn, "__qualname__", None) or repr(fn)
    cap = BreakableCapture(stream=stream, pool=pool, name=name)
    phase = "warm-up"
    try:
        session = cap._open()
        session.warm_up(fn, args, kwargs, warmup)
        phase = "capture"
        session.begin()
        try:
            outputs = fn(*args, **kwargs)
        except BaseException as exc:
            cap.__exit__(type(exc), exc, exc.__traceback__)
            raise
        cap.__exit__(None, None, None)
    except Exception as exc:
        cap._abandon()
        cap.close()
        if isinstance(exc, NestedCaptureError):
            raise
        raise CaptureError(
            f"capturing breakable graph {name!r} failed during {phase}: {type(exc).__name__}: "
            f"{exc}. The stream is no longer capturing and nothing was kept."
        ) from exc
    cap.outputs = outputs
    cap._keep.append((fn, args, kwargs))
    return cap


def eager_break(fn: Callable[..., Any] | None = None, *, copy_into: str | None = None) -> Any:
    """Mark a function as an eager break.

    Outside any capture it just runs. Inside a BreakableCapture it becomes a break (see
    BreakableCapture.add_eager). Inside a plain capture (FULL) it is captured like any
    other op, so one model runs FULL or PIECEWISE unchanged. Called from inside another
    break, or during a warm-up run, it runs inline.

    copy_into: the name of an argument holding a static output; the function's returned
    array is copied into it on every call (capture and replay), and that argument is
    returned instead.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise ArgumentTypeError(f"eager_break decorates a callable, got {type(f).__name__} {f!r}")
        body = f
        if copy_into is not None:
            signature = inspect.signature(f)
            if copy_into not in signature.parameters:
                raise ArgumentError(
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
            if state is None or state.kind != "breakable" or not state.recording or state.in_break:
                return body(*args, **kwargs)
            return state.owner.add_eager(body, *args, **kwargs)

        wrapper.__wrapped_break__ = f  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate


class BreakableRunner(Runner):
    """GraphRunner's contract, capturing one BreakableCapture per descriptor.

    The usual runtime mode is PIECEWISE (breaks at attention); FULL is accepted too, with
    the breaks then recorded as eager steps. `eager=True` runs everything eagerly through
    the same buffers, to bisect a graph bug.
    """

    capture_function = staticmethod(capture_breakable)
