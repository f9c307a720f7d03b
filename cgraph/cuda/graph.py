"""capture(): run a function once under CUDA stream capture and keep the graph, JAX-style.

The result is a CapturedGraph: an inspectable artifact (node count, DOT text, pool bytes,
capture time, the static outputs) that can be replayed any number of times. Replays read
the same input arrays and write the same output arrays the capture used: to run on new
data, copy it into those arrays (see StaticBuffers) and replay.

Safety rules the implementation enforces:
- every allocation made during warm-up and capture comes from a GraphPool, which nothing
  but graphs ever allocates from, and the graph keeps that pool alive;
- the graph keeps references to the function (and so its closure), its arguments and its
  outputs, so nothing it reads or writes is freed while it can run;
- the capture is ended on every path: after an exception no stream is left capturing,
  nothing is registered, and the exception is re-raised as CaptureError naming the graph.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from cgraph.cuda import state as _state, callbacks
from cgraph.cuda.device import require_device
from cgraph.core.tree import array_leaves
from cgraph.core.errors import CaptureError, GraphClosedError
from cgraph.cuda.pool import GraphPool


def _end_quietly(stream: Any) -> None:
    """End a capture that failed, if it is still open; the graph, if any, is discarded."""
    runtime = require_device().cuda.runtime
    try:
        if runtime.streamIsCapturing(stream.ptr) == runtime.streamCaptureStatusNone:
            return
    except RuntimeError:
        pass  # CuPy raises for an invalidated capture, which still has to be ended
    try:
        stream.end_capture()
    except Exception:  # noqa: BLE001 - an invalidated capture raises here, and still ends
        pass


def graph_node_count(graph: Any) -> int:
    """Number of nodes in a cupy.cuda.graph.Graph (from its DOT text; no extra dependency)."""
    dot = graph.debug_dot_str()
    return len(set(re.findall(r'"graph_\d+_node_\d+"', dot)))


def _validate_capture_stream(stream: Any) -> None:
    if stream.ptr == 0:
        raise ValueError(
            "cannot capture on the legacy default stream (stream.ptr == 0); pass "
            "cupy.cuda.Stream(non_blocking=True) or leave stream=None to use the pool's stream"
        )


def capture(
    fn: Callable[..., Any],
    *args: Any,
    stream: Any = None,
    pool: GraphPool | None = None,
    warmup: int = 1,
    name: str | None = None,
    **kwargs: Any,
) -> "CapturedGraph":
    """Capture fn(*args, **kwargs) into a CUDA graph and return the CapturedGraph.

    1. fn runs `warmup` times eagerly (compiles kernels, grows the pool), on the capture
       stream with the pool's allocator; those results are discarded.
    2. fn runs once more under stream capture; its return value becomes `outputs`.
    3. The graph is instantiated and uploaded. The caller's current stream waits for the
       capture stream, and the capture stream first waits for the caller's stream.

    pool: the GraphPool to allocate from (default: a new pool owned by this graph).
    stream: the capture stream (default: the pool's stream; never the legacy stream).
    fn must not synchronize, copy to or from the host, or call cuBLAS: such calls raise
    and are reported as CaptureError.
    """
    if not callable(fn):
        raise TypeError(f"capture needs a callable, got {type(fn).__name__} {fn!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}; use 0 to skip warm-up")
    if pool is not None:
        if not isinstance(pool, GraphPool):
            raise TypeError(f"pool must be a GraphPool or None, got {type(pool).__name__}")
        pool._check_open()
    cp = require_device()
    if stream is not None:
        _validate_capture_stream(stream)
    name = name or getattr(fn, "__qualname__", None) or repr(fn)
    state = _state.ActiveCapture(kind="full", name=name)
    _state.enter(state)
    owns_pool = pool is None
    phase = "warm-up"
    try:
        if pool is None:
            pool = GraphPool()
        if stream is None:
            stream = pool.stream
        callbacks.check_callbacks()
        caller = cp.cuda.get_current_stream()
        stream.wait_event(caller.record())
        with stream, pool.allocating():
            for _ in range(warmup):
                fn(*args, **kwargs)
            phase = "capture"
            started = time.perf_counter()
            stream.begin_capture()
            try:
                outputs = fn(*args, **kwargs)
            except BaseException:
                _end_quietly(stream)
                raise
            graph = stream.end_capture()
            graph.upload(stream)
            seconds = time.perf_counter() - started
        caller.wait_event(stream.record())
    except Exception as exc:
        if owns_pool and pool is not None:
            pool.close()
        raise CaptureError(
            f"capturing graph {name!r} failed during {phase}: {type(exc).__name__}: {exc}. "
            "The stream is no longer capturing and no graph was kept. Inside a capture, avoid "
            "synchronize, .get()/asnumpy, host-to-device copies and cuBLAS (use cgraph.kernels.gemm)."
        ) from exc
    finally:
        _state.leave()
    return CapturedGraph(
        name=name,
        graph=graph,
        outputs=outputs,
        pool=pool,
        owns_pool=owns_pool,
        keepalive=(fn, args, kwargs, tuple(state.keepalive)),
        capture_seconds=seconds,
    )


class CapturedGraph:
    """A captured, instantiated CUDA graph plus everything it must keep alive.

    `outputs` is what the function returned at capture; replays rewrite those arrays in
    place. Outputs are valid until the next replay of any graph that shares the pool:
    copy what you keep. `replay()` launches on the current stream (or the given one).
    """

    __slots__ = (
        "name", "outputs", "capture_seconds", "input_addresses",
        "_graph", "_pool", "_owns_pool", "_keepalive", "_nodes", "__weakref__",
    )

    def __init__(self, *, name: str, graph: Any, outputs: Any, pool: GraphPool, owns_pool: bool,
                 keepalive: tuple, capture_seconds: float) -> None:
        self.name = name
        self.outputs = outputs
        self.capture_seconds = capture_seconds
        fn, args, kwargs, _ = keepalive
        self.input_addresses = tuple(
            (path, arr.data.ptr) for path, arr in array_leaves((args, kwargs))
        )
        self._graph = graph
        self._pool = pool
        self._owns_pool = owns_pool
        self._keepalive = keepalive
        self._nodes: int | None = None
        pool._register(self)

    def replay(self, stream: Any = None) -> Any:
        """Launch the graph on `stream` (default: the current stream) and return `outputs`."""
        graph = self._graph
        if graph is None:
            raise GraphClosedError(f"graph {self.name!r} was closed; capture it again to replay")
        if callbacks._pending:
            callbacks.check_callbacks()
        graph.launch(stream)
        return self.outputs

    __call__ = replay

    @property
    def closed(self) -> bool:
        return self._graph is None

    @property
    def pool(self) -> GraphPool:
        return self._pool

    @property
    def num_nodes(self) -> int:
        """Nodes in the graph (kernels, memsets, copies, host nodes)."""
        if self._nodes is None:
            self._nodes = graph_node_count(self._live())
        return self._nodes

    @property
    def pool_bytes(self) -> int:
        """Bytes held by this graph's pool (shared with other graphs in the same pool)."""
        return self._pool.total_bytes()

    def dot(self) -> str:
        """The graph as Graphviz DOT text (CUDA's own debug dump)."""
        return self._live().debug_dot_str()

    def upload(self, stream: Any = None) -> None:
        """Pre-load the executable graph on the device so the first replay is not slower."""
        graph = self._live()
        graph.upload(stream if stream is not None else require_device().cuda.get_current_stream())

    @property
    def exec_handle(self) -> int:
        """The raw cudaGraphExec_t handle (for cuda.bindings interop)."""
        return int(self._live().graphExec)

    def _live(self) -> Any:
        if self._graph is None:
            raise GraphClosedError(f"graph {self.name!r} was closed; capture it again")
        return self._graph

    def close(self) -> None:
        """Release the graph, its outputs and kept references (its pool too if it owns it)."""
        if self._graph is None:
            return
        # A replay may still be in flight: wait before anything it touches can be freed.
        require_device().cuda.Device().synchronize()
        self._graph = None
        self.outputs = None
        self._keepalive = ()
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> "CapturedGraph":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._graph is None:
            return f"CapturedGraph({self.name!r}, closed)"
        return (
            f"CapturedGraph({self.name!r}, nodes={self.num_nodes}, "
            f"pool={self.pool_bytes / 2**20:.1f} MiB, capture={self.capture_seconds * 1e3:.2f} ms)"
        )
