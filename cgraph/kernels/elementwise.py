"""Row-wise launchers: embedding gather, RMSNorm, SiLU-and-mul, argmax.

Each kernel has a 16-byte vector variant and a scalar one (``_v1``). The vector variant
runs only when every pointer it touches is 16-byte aligned and the row length is a whole
number of vectors (8 fp16/bf16 or 4 fp32 elements); any other element-aligned view runs
the scalar variant, so no layout the checks accept can fault.

Every launcher takes an explicit keyword `out=` (where it has an output), an optional
`stream` (None: CuPy's current stream), returns `out`, and can be captured into a CUDA
graph. Arguments are checked before anything touches the device (cgraph.kernels.spec).
"""

from __future__ import annotations

from typing import Any

from cgraph.kernels.launch import F32, I32, VECTOR_BYTES, launch, tag, threads_for, vector_width
from cgraph.kernels.spec import FLOATS, INT32, Arr, Spec, require_float

_EMBEDDING = Spec("embedding",
                  Arr("ids", ("T",), INT32),
                  Arr("table", ("V", "H"), FLOATS),
                  Arr("out", ("T", "H"), like="table"))
_RMS_NORM = Spec("rms_norm",
                 Arr("x", ("T", "H"), FLOATS),
                 Arr("weight", ("H",), like="x"),
                 Arr("out", ("T", "H"), like="x"),
                 Arr("residual", ("T", "H"), like="x", optional=True))
_SILU_AND_MUL = Spec("silu_and_mul",
                     Arr("x", ("T", "2*I"), FLOATS),
                     Arr("out", ("T", "I"), like="x"))
_ARGMAX = Spec("argmax",
               Arr("logits", ("T", "V"), FLOATS),
               Arr("out", ("T",), INT32),
               at_least={"V": 1})


def embedding(ids: Any, table: Any, *, out: Any, stream: Any = None) -> Any:
    """out[t, :] = table[ids[t], :]; ids outside [0, V) give zero rows (padding).

    ids int32 [T]; table [V, H] and out [T, H] of one float dtype, all C-contiguous.
    """
    b = _EMBEDDING.bind(ids=ids, table=table, out=out).on_device()
    t, vocab, hidden = b.dims["T"], b.dims["V"], b.dims["H"]
    if t == 0 or hidden == 0:
        return out
    dt = b.dtypes["table"]
    vec = vector_width(dt)
    v = vec if hidden % vec == 0 and b.aligned(VECTOR_BYTES, "table", "out") else 1
    threads = threads_for(hidden // v)
    launch("embedding", f"embedding_{tag(dt)}_v{v}", (t, -(-hidden // v // threads)), threads,
           (out, ids, table, I32(vocab), I32(hidden)), stream)
    return out


def rms_norm(x: Any, weight: Any, eps: float, *, out: Any, residual: Any = None, stream: Any = None) -> Any:
    """RMSNorm over the last dim of x [T, H]: out = x / rms(x) * weight.

    With `residual` [T, H]: residual <- x + residual (in place, rounded to the dtype) and
    out = norm(residual) * weight (the fused pre-norm residual add of a decoder layer).
    All C-contiguous, one float dtype.
    """
    b = _RMS_NORM.bind(x=x, weight=weight, out=out, residual=residual)
    eps = require_float("eps", eps, 0.0)
    b.on_device()
    t, hidden = b.dims["T"], b.dims["H"]
    if t == 0:
        return out
    dt = b.dtypes["x"]
    vec = vector_width(dt)
    v = vec if hidden % vec == 0 and b.aligned(VECTOR_BYTES, "x", "weight", "out", "residual") else 1
    # up to four 16-byte chunks per thread stay in registers: small blocks, several rows per SM
    threads = threads_for(-(-hidden // (4 * v)), cap=1024)
    res = residual if residual is not None else x
    launch("norm", f"rms_norm_{tag(dt)}_v{v}", (t,), threads,
           (out, x, res, weight, I32(hidden), F32(eps), I32(residual is not None)), stream)
    return out


def silu_and_mul(x: Any, *, out: Any, stream: Any = None) -> Any:
    """x [T, 2I] -> out [T, I] = silu(x[:, :I]) * x[:, I:]; C-contiguous, one float dtype."""
    b = _SILU_AND_MUL.bind(x=x, out=out).on_device()
    t, i = b.dims["T"], b.dims["I"]
    if t == 0 or i == 0:
        return out
    dt = b.dtypes["x"]
    vec = vector_width(dt)
    v = vec if i % vec == 0 and b.aligned(VECTOR_BYTES, "x", "out") else 1
    threads = threads_for(i // v)
    launch("activation", f"silu_and_mul_{tag(dt)}_v{v}", (t, -(-(i // v) // threads)), threads,
           (out, x, I32(i)), stream)
    return out


def argmax(logits: Any, *, out: Any, stream: Any = None) -> Any:
    """Greedy sampling: out[t] = argmax(logits[t]) (int32; ties -> lowest index; NaN ignored).

    logits [T, V] (V >= 1) of a float dtype, out int32 [T], both C-contiguous.
    """
    b = _ARGMAX.bind(logits=logits, out=out).on_device()
    t, vocab = b.dims["T"], b.dims["V"]
    if t == 0:
        return out
    dt = b.dtypes["logits"]
    vec = vector_width(dt)
    v = vec if vocab % vec == 0 and b.aligned(VECTOR_BYTES, "logits") else 1
    launch("sampling", f"argmax_{tag(dt)}_v{v}", (t,), threads_for(-(-vocab // v), cap=1024),
           (logits, out, I32(vocab)), stream)
    return out
