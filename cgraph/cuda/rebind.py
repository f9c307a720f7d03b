"""rebind(): point a captured graph at new arrays without instantiating a new graph.

The function is captured again on the new arguments into a plain CUDA graph (no
instantiation), and cudaGraphExecUpdate copies that graph's node parameters (kernel
arguments, copy addresses) into the existing executable graph. That is the cheap way to
serve a new set of buffers with the same kernels. It needs the `cuda-bindings` package
(cuda.bindings.runtime), which the `cuda13`/`cuda12` extras install.
"""

from __future__ import annotations

import time
from typing import Any

from cgraph.cuda import state as _state
from cgraph.cuda.device import GPUUnavailableError, require_device
from cgraph.core.tree import array_leaves
from cgraph.cuda.graph import CapturedGraph
from cgraph.core.errors import CaptureError


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime  # noqa: PLC0415 - optional, GPU-only
    except ImportError as exc:
        raise GPUUnavailableError(
            "rebind needs the cuda-bindings package (cuda.bindings.runtime); install it with "
            "`pip install 'cgraph-cupy[cuda13]'`"
        ) from exc
    return runtime


def rebind(graph: CapturedGraph, *args: Any, **kwargs: Any) -> float:
    """Re-point `graph` at new arguments (same shapes and dtypes); return the seconds it took.

    The new arguments must make the function launch the same kernels in the same order
    (only addresses and scalar values may change). On success the graph keeps the new
    arguments and outputs alive instead of the old ones. If CUDA refuses the update
    (a different topology), the graph is closed and CaptureError says why: nothing is
    left half-updated.
    """
    if not isinstance(graph, CapturedGraph):
        raise TypeError(f"rebind needs a CapturedGraph, got {type(graph).__name__}")
    cudart = _cudart()
    cp = require_device()
    fn = graph._keepalive[0] if graph._keepalive else None
    exec_handle = graph.exec_handle  # raises GraphClosedError if closed
    pool = graph.pool
    stream = pool.stream
    ok = cudart.cudaError_t.cudaSuccess
    relaxed = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed
    started = time.perf_counter()
    state = _state.ActiveCapture(kind="full", name=f"rebind {graph.name}")
    _state.enter(state)
    try:
        caller = cp.cuda.get_current_stream()
        stream.wait_event(caller.record())
        with stream, pool.allocating():
            (err,) = cudart.cudaStreamBeginCapture(stream.ptr, relaxed)
            if err != ok:
                raise CaptureError(f"rebind of {graph.name!r}: cudaStreamBeginCapture failed: {err}")
            try:
                outputs = fn(*args, **kwargs)
            finally:
                err, template = cudart.cudaStreamEndCapture(stream.ptr)
            if err != ok:
                raise CaptureError(f"rebind of {graph.name!r}: capture failed: {err}")
        try:
            result = cudart.cudaGraphExecUpdate(exec_handle, template)
        finally:
            cudart.cudaGraphDestroy(template)
        caller.wait_event(stream.record())
    except CaptureError:
        raise
    except Exception as exc:
        raise CaptureError(
            f"rebind of graph {graph.name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        _state.leave()
    if result[0] != ok:
        graph.close()
        raise CaptureError(
            f"CUDA refused to update graph {graph.name!r} ({result[0]}, {result[1:]}): the new "
            "arguments changed which kernels run; the graph was closed, capture it again"
        )
    graph.outputs = outputs
    graph._keepalive = (fn, args, kwargs, tuple(state.keepalive))
    graph.input_addresses = tuple((p, a.data.ptr) for p, a in array_leaves((args, kwargs)))
    return time.perf_counter() - started
