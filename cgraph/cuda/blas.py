"""cgraph.matmul: NumPy's matmul on cuBLASLt (through nvmath-python), eager and inside captures.

CuPy's own ``cupy.matmul`` / ``@`` / ``dot`` call cuBLAS, which CuPy refuses inside a stream
capture (NotImplementedError). :func:`matmul` runs the same product through cuBLASLt's
stateful API, which captures: a *plan* (layouts, the heuristically chosen algorithm) is
made on the host once per operand geometry, and each call enqueues one cuBLASLt matmul on
the current stream, so the same call works eagerly and inside a capture.

Contract:
- ``a[..., M, K] @ b[..., K, N]`` with NumPy's rule for 2-D and 3-D operands (the batch
  axis broadcasts; a 2-D operand is shared by every batch), float16, bfloat16 or float32
  (a and b of one dtype, the result of that dtype, accumulated in float32). Any strides:
  transposed views are read in place, layouts cuBLASLt cannot read (both axes strided,
  negative or zero strides) are copied first. ``out`` (optional) must have the product's
  shape and dtype; it may be any view (a strided or overlapping one is written through a
  temporary). Arrays of torch, JAX or any DLPack producer are viewed without a copy.
- Plans are cached per (device, dtype, shapes, strides, pointer alignment) of the operands
  cuBLASLt sees, and shared by eager calls and captures.
- Planning never happens during a stream capture (it may allocate and synchronize). A
  capture that meets a geometry with no plan raises CaptureError: call cgraph.matmul once
  with the same shapes eagerly first (cgraph.capture's warm-up run, ``warmup >= 1`` and the
  default, does exactly that), or :func:`plan_matmul` ahead of time.
- Memory: the output (when ``out`` is None), any layout copy and cuBLASLt's workspace are
  taken from CuPy's current allocator on every call and the workspace is returned when the
  call ends, so inside a cgraph capture all of it is graph-pool memory the graph owns; no
  plan holds device memory between calls.
- Not thread-safe: one thread uses the plans at a time.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any

import numpy as np

from cgraph.core.errors import ArgumentError, ArgumentTypeError, CaptureError, GPUUnavailableError
from cgraph.core.matmul_shapes import MatmulShape, alignment, blas_readable, check_out, describe, matmul_dtype, matmul_shape
from cgraph.cuda.device import require_device
from cgraph.cuda.interop import as_cupy
from cgraph.cuda.session import is_capturing

_INSTALL = "pip install 'cgraph-cupy[cuda13]' (or '[cuda12]' for a CUDA 12 driver)"
#: geometry -> (plan, algorithm): algorithm None runs the heuristic's first choice
_PLANS: collections.OrderedDict[tuple, tuple[Any, Any]] = collections.OrderedDict()
_PLAN_CAP = 512  # least recently used plans are freed past this many
#: candidate algorithms an autotuning plan asks cuBLASLt's heuristic for
TUNE_CANDIDATES = 16
#: products per timed graph, timed replays per round, and rounds per candidate, when autotuning
_TUNE_REPEAT, _TUNE_REPLAYS, _TUNE_ROUNDS = 8, 4, 3
#: hand cuBLASLt the transposed problem (d.T = b.T @ a.T), so its output is column-major:
#: the orientation CuPy gives cuBLAS for the same C-ordered arrays, so cuBLASLt's heuristic
#: sees the problem cuBLAS solves. cgraph.bench.matmul measures the other order beside it
#: (column graph_col); tests check both orders in every layout.
COLUMN_MAJOR = True


@functools.cache
def _matmul_class() -> Any:
    try:
        import ml_dtypes  # noqa: F401, PLC0415 - registers 'bfloat16' before nvmath maps dtype names
    except ImportError:
        pass
    try:
        from nvmath.linalg.advanced import Matmul  # noqa: PLC0415 - optional, imported on first use
    except ImportError as exc:
        raise GPUUnavailableError(f"cgraph.matmul needs nvmath-python (cuBLASLt bindings), which is not "
                                  f"installed or does not import ({exc}); install it with {_INSTALL}") from exc
    return Matmul


@functools.cache
def _quiet_logger() -> logging.Logger:
    # nvmath times its calls (events, a synchronize) when its logger is at INFO: never
    # inherit that from the root logger, it would break a capture.
    logger = logging.getLogger("cgraph.matmul.nvmath")
    logger.setLevel(logging.WARNING)
    return logger


def _dtype(x: Any) -> str:
    return np.dtype(x.dtype).name


def _require_array(name: str, x: Any) -> None:
    if not all(hasattr(x, attr) for attr in ("shape", "dtype", "strides")):
        raise ArgumentTypeError(f"cgraph.matmul: {name} must be a CuPy array (or a torch/JAX GPU array), "
                                f"got {describe(x)}")


def _check(a: Any, b: Any, out: Any) -> tuple[MatmulShape, str]:
    """Every argument check that needs no GPU; returns the product's shape and dtype."""
    _require_array("a", a)
    _require_array("b", b)
    shape = matmul_shape(a.shape, b.shape)
    dtype = matmul_dtype(_dtype(a), _dtype(b))
    if out is not None:
        _require_array("out", out)
        check_out(out.shape, _dtype(out), shape, dtype)
    for name, x in (("a", a), ("b", b), ("out", out)):
        if x is not None and not hasattr(x, "__cuda_array_interface__"):
            raise ArgumentTypeError(f"cgraph.matmul: {name} must be a CuPy array on the GPU, got {describe(x)}; "
                                    f"move it with cupy.asarray(...) before (and outside) any capture")
    return shape, dtype


def matmul(a: Any, b: Any, *, out: Any = None) -> Any:
    """``a @ b`` as numpy.matmul computes it, on cuBLASLt; capturable (module docstring).

    Returns `out` (written in place) or a new array of the product's shape and dtype.
    Raises ArgumentError / ArgumentTypeError for shapes, dtypes or arrays it does not take,
    CaptureError inside a capture when the geometry was never planned, GPUUnavailableError
    without nvmath-python.
    """
    a, b, out = as_cupy(a), as_cupy(b), as_cupy(out)
    shape, dtype = _check(a, b, out)
    cp = require_device()
    devices = {x.device.id for x in (a, b, out) if x is not None}
    if len(devices) > 1:
        raise ArgumentError(f"cgraph.matmul: the arrays live on devices {sorted(devices)}; move them to one "
                            f"device (cupy.asarray under `with cupy.cuda.Device(i):`)")
    if out is None:
        out = cp.empty(shape.out_shape, dtype=a.dtype)
    if out.size == 0:
        return out
    if shape.k == 0:
        out.fill(0)  # an empty sum, as NumPy gives
        return out
    stream = cp.cuda.get_current_stream()
    target = out
    if not out.flags.c_contiguous or cp.may_share_memory(out, a) or cp.may_share_memory(out, b):
        target = cp.empty(shape.out_shape, dtype=out.dtype)  # cuBLASLt writes a dense, unaliased D
    ae, be, ce = _operands(cp, a, b, target)
    plan, algorithm = _plan(ae, be, ce, stream)
    plan.reset_operands_unchecked(a=ae, b=be, c=ce)
    plan.execute(algorithm=algorithm, release_workspace=True, stream=stream)
    if target is not out:
        out[...] = target
    return out


def plan_matmul(a: Any, b: Any, *, out: Any = None, autotune: bool = False) -> None:
    """Make (and cache) the plan :func:`matmul` needs for these arguments.

    Call it outside a capture for a geometry the capture will meet but warm-up does not run
    (the plan depends on shapes, strides, dtype and pointer alignment, not on the data).
    autotune: keep the fastest of cuBLASLt's first TUNE_CANDIDATES heuristic candidates
    instead of its first choice, each timed as it will run: its products captured into a
    CUDA graph and the replays timed on the GPU (it runs them on these operands, overwriting
    `out`, and synchronizes); this replaces a cached plan of the same geometry, and graphs
    captured before keep the algorithm they captured.
    """
    a, b, out = as_cupy(a), as_cupy(b), as_cupy(out)
    shape, _ = _check(a, b, out)
    cp = require_device()
    if shape.k == 0 or 0 in shape.out_shape:
        return
    target = out if out is not None and out.flags.c_contiguous else cp.empty(shape.out_shape, dtype=a.dtype)
    ae, be, ce = _operands(cp, a, b, target)
    _plan(ae, be, ce, cp.cuda.get_current_stream(), autotune=bool(autotune))


def cached_plans() -> int:
    """How many cuBLASLt plans are cached (for tests and benchmarks)."""
    return len(_PLANS)


def clear_plans() -> None:
    """Free every cached plan (outside any capture); later calls plan again."""
    while _PLANS:
        _PLANS.popitem(last=False)[1][0].free()


def _operands(cp: Any, a: Any, b: Any, out: Any) -> tuple[Any, Any, Any]:
    """The (a, b, d) views cuBLASLt computes ``d = a @ b`` on; `out` is C-contiguous.

    A batch of 1 becomes a 2-D matrix (cuBLASLt broadcasts a 2-D operand over the other's
    batch); a C-contiguous batch times a shared matrix folds into one 2-D product; a layout
    cuBLASLt cannot read is copied.
    """
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if b.ndim == 3 and b.shape[0] == 1:
        b = b[0]
    d = out if max(a.ndim, b.ndim) == 3 else out.reshape(out.shape[-2:])
    a, b = _readable(cp, a), _readable(cp, b)
    if a.ndim == 3 and b.ndim == 2 and a.strides[0] == a.shape[1] * a.strides[1] and a.strides[2] == a.itemsize:
        a = a.reshape(a.shape[0] * a.shape[1], a.shape[2])  # rows of every batch are one matrix
        d = d.reshape(a.shape[0], d.shape[-1])
    if COLUMN_MAJOR:
        # d = a @ b  <=>  d.T = b.T @ a.T: handed over this way, cuBLASLt writes a
        # column-major D (the layout cuBLAS itself uses) instead of a row-major one; with a
        # row-major D the heuristic plan ran 3-12% slower than cuBLAS at M >= 512.
        a, b, d = b.swapaxes(-1, -2), a.swapaxes(-1, -2), d.swapaxes(-1, -2)
    return a, b, d


def _readable(cp: Any, x: Any) -> Any:
    return x if blas_readable(x.shape, x.strides, x.itemsize) else cp.ascontiguousarray(x)


def _plan(a: Any, b: Any, d: Any, stream: Any, autotune: bool = False) -> tuple[Any, Any]:
    key = (a.device.id, _dtype(a), a.shape, a.strides, b.shape, b.strides, d.shape, d.strides,
           alignment(a.data.ptr), alignment(b.data.ptr), alignment(d.data.ptr))
    entry = _PLANS.get(key)
    if entry is not None and not autotune:
        _PLANS.move_to_end(key)
        return entry
    if is_capturing(stream):
        raise CaptureError(
            f"cgraph.matmul has no cuBLASLt plan for {_dtype(a)} a {list(a.shape)} (strides {a.strides}) @ "
            f"b {list(b.shape)} (strides {b.strides}) and cannot make one inside a stream capture (planning "
            f"may allocate and synchronize). Call cgraph.matmul once with the same shapes outside the "
            f"capture first (cgraph.capture's warm-up run, warmup >= 1 and the default, does this) or call "
            f"cgraph.cuda.blas.plan_matmul(a, b, out=out) before capturing")
    matmul_class = _matmul_class()
    plan = matmul_class(a, b, c=d, beta=0.0, options={"inplace": True, "logger": _quiet_logger()}, stream=stream)
    algorithm = None
    try:
        if autotune:
            from nvmath.linalg.advanced import MatmulPlanPreferences  # noqa: PLC0415 - optional dependency

            plan.plan(preferences=MatmulPlanPreferences(limit=TUNE_CANDIDATES), stream=stream)
            algorithm = _fastest(plan, stream)
        else:
            plan.plan(stream=stream)
    except BaseException:
        plan.free()
        raise
    old = _PLANS.pop(key, None)
    if old is not None:
        old[0].free()  # host-side descriptors only: graphs hold their own copies of the launches
    _PLANS[key] = (plan, algorithm)
    while len(_PLANS) > _PLAN_CAP:
        _PLANS.popitem(last=False)[1][0].free()
    return plan, algorithm


def _fastest(plan: Any, stream: Any) -> Any:
    """The candidate algorithm of a planned Matmul with the least GPU time in a graph:
    each candidate's graph is timed in turn, for _TUNE_ROUNDS rounds, and keeps its best
    round (the first rounds also bring the GPU's clocks up; a drift hits every candidate)."""
    from cgraph.cuda.graph import capture  # noqa: PLC0415 - graph imports this layer's neighbours

    cp = require_device()
    graphs = []
    try:
        for algorithm in plan.algorithms:
            def products(alg: Any = algorithm) -> None:
                for _ in range(_TUNE_REPEAT):
                    plan.execute(algorithm=alg, release_workspace=True, stream=cp.cuda.get_current_stream())
            try:
                graphs.append((algorithm, capture(products, name="cgraph.matmul autotune")))
            except CaptureError:
                continue  # a candidate that does not capture is not a candidate
        if not graphs:
            raise CaptureError("cgraph.matmul autotune: none of cuBLASLt's candidate algorithms captured into "
                               "a graph; plan without autotune=True")
        best = [float("inf")] * len(graphs)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        for _ in range(_TUNE_ROUNDS):
            for i, (_, graph) in enumerate(graphs):
                graph.replay(stream)  # uploads on first use; warms the caches
                start.record(stream)
                for _ in range(_TUNE_REPLAYS):
                    graph.replay(stream)
                end.record(stream)
                end.synchronize()
                best[i] = min(best[i], cp.cuda.get_elapsed_time(start, end))
        return graphs[best.index(min(best))][0]
    finally:
        for _, graph in graphs:
            graph.close()
