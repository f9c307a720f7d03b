"""capture(): run a function once under CUDA stream capture and keep the graph, JAX-style.

The result is a CapturedGraph: an inspectable artifact (node count, DOT text, pool bytes,
capture time, the static outputs) that can be replayed any number of times. Replays read
the same input arrays and write the same output arrays the capture used: to run on new
data, copy it into those arrays (see StaticBuffers) and replay, or point the graph at
other arrays with :meth:`CapturedGraph.rebind`.

Safety rules the implementation enforces:
- every allocation made during warm-up and capture comes from a GraphPool, which nothing
  but graphs ever allocates from, and the graph keeps that pool alive;
- the graph keeps references to the function (and so its closure), its arguments and its
  outputs, so nothing it reads or writes is freed while it can run;
- the capture runs in a CaptureSession, so it is ended on every path: after an exception
  no stream is left capturing, nothing is registered, and the exception is re-raised as
  CaptureError naming the graph.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from cgraph.core.checks import check_int
from cgraph.core.errors import ArgumentTypeError, CaptureError, GraphClosedError, NestedCaptureError
from cgraph.core.tree import argument_addresses
from cgraph.cuda import callbacks
from cgraph.cuda import state as _state
from cgraph.cuda.device import require_device
from cgraph.cuda.driver import edge_kinds, exec_update
from cgraph.cuda.pool import GraphPool
from cgraph.cuda.session import CaptureSession, check_capture_stream

_CAPTURE_HINT = ("Inside a capture, avoid synchronize, .get()/asnumpy, host-to-device copies and "
                 "cuBLAS (use cgraph.matmul).")


def node_count(graph: Any) -> int:
    """Number of nodes in a cupy.cuda.graph.Graph (from its DOT text; no extra dependency)."""
    dot = graph.debug_dot_str()
    return len(set(re.findall(r'"graph_\d+_node_\d+"', dot)))


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
    3. The graph is instantiated and uploaded. The capture stream first waits for the
       caller's current stream, and the caller's stream then waits for the capture.

    pool: the GraphPool to allocate from (default: a new pool owned by this graph).
    stream: the capture stream (default: the pool's stream; never the legacy stream).
    fn must not synchronize, copy to or from the host, or call cuBLAS: such calls raise
    and are reported as CaptureError.
    """
    if not callable(fn):
        raise ArgumentTypeError(f"capture needs a callable, got {type(fn).__name__} {fn!r}")
    warmup = check_int(warmup, "warmup", 0, hint="use 0 to skip warm-up")
    if pool is not None:
        if not isinstance(pool, GraphPool):
            raise ArgumentTypeError(f"pool must be a GraphPool or None, got {type(pool).__name__}")
        pool.ensure_open()
    if stream is not None:
        check_capture_stream(stream)
    name = name or getattr(fn, "__qualname__", None) or repr(fn)
    _state.check_idle(name)  # before a pool exists: closing one would synchronize inside a capture
    owns_pool = pool is None
    if pool is None:
        pool = GraphPool()
    phase = "warm-up"
    try:
        with CaptureSession(name, pool, stream=stream) as session:
            session.warm_up(fn, args, kwargs, warmup)
            phase = "capture"
            session.begin()
            outputs = fn(*args, **kwargs)
            graph = session.end()
            graph.upload(session.stream)
    except Exception as exc:
        if owns_pool:
            pool.close()
        if isinstance(exc, NestedCaptureError):
            raise  # a misuse of the caller's, not a failure of this capture
        raise CaptureError(
            f"capturing graph {name!r} failed during {phase}: {type(exc).__name__}: {exc}. "
            f"The stream is no longer capturing and no graph was kept. {_CAPTURE_HINT}"
        ) from exc
    return CapturedGraph(graph=graph, name=name, fn=fn, args=args, kwargs=kwargs, outputs=outputs,
                         keepalive=session.keepalive, pool=pool, owns_pool=owns_pool,
                         capture_seconds=session.capture_seconds)


class CapturedGraph:
    """A captured, instantiated CUDA graph plus everything it must keep alive.

    `outputs` is what the function returned at capture; replays rewrite those arrays in
    place. Outputs are valid until the next replay of any graph that shares the pool:
    copy what you keep. `replay()` launches on the current stream (or the given one).
    `input_addresses` lists (path, device address) of every array argument.
    """

    __slots__ = ("name", "outputs", "capture_seconds", "input_addresses", "_graph", "_pool",
                 "_owns_pool", "_call", "_keepalive", "_nodes", "__weakref__")

    def __init__(self, *, graph: Any, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict,
                 outputs: Any, keepalive: tuple, pool: GraphPool, owns_pool: bool,
                 capture_seconds: float) -> None:
        self._graph = graph
        self._pool = pool
        self._owns_pool = owns_pool
        self._nodes: int | None = None
        self.name = name
        self.capture_seconds = capture_seconds
        self._bind(fn, args, kwargs, outputs, keepalive)
        pool.track(self)

    def _bind(self, fn: Callable[..., Any], args: tuple, kwargs: dict, outputs: Any,
              keepalive: tuple) -> None:
        self._call = (fn, args, kwargs)
        self._keepalive = keepalive
        self.outputs = outputs
        self.input_addresses = argument_addresses(args, kwargs)

    def replay(self, stream: Any = None) -> Any:
        """Launch the graph on `stream` (default: the current stream) and return `outputs`."""
        graph = self._graph
        if graph is None:
            raise GraphClosedError(f"graph {self.name!r} was closed; capture it again to replay")
        if callbacks.failures:
            callbacks.check_callbacks()
        graph.launch(stream)
        return self.outputs

    __call__ = replay

    def rebind(self, *args: Any, **kwargs: Any) -> float:
        """Point the graph at new arguments (same shapes and dtypes); return the seconds it took.

        The function is captured again on the new arguments into a plain CUDA graph (never
        instantiated), and cudaGraphExecUpdate copies its node parameters (kernel
        arguments, copy addresses) into this executable graph. The new arguments must
        make the function launch the same kernels in the same order. On success the graph
        keeps the new arguments and outputs alive instead of the old ones. If the function
        fails, nothing changes and CaptureError says why; if CUDA refuses the update (a
        different topology), the graph is closed and CaptureError says so: nothing is
        left half-updated. Needs the `cuda-bindings` package.
        """
        exec_handle = self.exec_handle  # raises GraphClosedError if closed
        fn = self._call[0]
        runtime = require_device().cuda.runtime
        started = time.perf_counter()
        try:
            with CaptureSession(f"rebind {self.name}", self._pool) as session:
                session.begin()
                outputs = fn(*args, **kwargs)
                template = session.end_template()
            try:
                refused = exec_update(exec_handle, template)
            finally:
                runtime.graphDestroy(template)
        except Exception as exc:
            raise CaptureError(
                f"rebind of graph {self.name!r} failed: {type(exc).__name__}: {exc}; the graph "
                "still points at its old arguments"
            ) from exc
        if refused is not None:
            self.close()
            raise CaptureError(
                f"CUDA refused to update graph {self.name!r} ({refused}): the new arguments "
                "changed which kernels run; the graph was closed, capture it again"
            )
        self._bind(fn, args, kwargs, outputs, session.keepalive)
        return time.perf_counter() - started

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
            self._nodes = node_count(self._live())
        return self._nodes

    @property
    def pool_bytes(self) -> int:
        """Bytes held by this graph's pool (shared with other graphs in the same pool)."""
        return self._pool.total_bytes()

    def dot(self) -> str:
        """The graph as Graphviz DOT text (CUDA's own debug dump), ending with a comment
        that counts its programmatic (PDL) edges, which the dump does not mark."""
        graph = self._live()
        text = graph.debug_dot_str()
        programmatic, edges = self.programmatic_edges()
        return f"{text.rstrip()}\n// cgraph: {programmatic} of {edges} top-level edges are programmatic (PDL)\n"

    def programmatic_edges(self) -> tuple[int, int]:
        """(programmatic dependent launch edges, all edges) of the graph's top level."""
        return edge_kinds(int(self._live().graph))

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
        self._call = None
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
