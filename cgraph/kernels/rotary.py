"""Neox rotary embedding, in place on the q and k rows of a (possibly fused) qkv buffer."""

from __future__ import annotations

import math
from typing import Any

from cgraph.core.errors import ArgumentError
from cgraph.kernels.launch import I32, I64, VECTOR_BYTES, launch, tag, threads_for, vector_width
from cgraph.kernels.spec import FLOATS, INT32, ROWS, Arr, Spec, require_int

_ROTARY = Spec("rotary_embedding",
               Arr("positions", ("T",), INT32),
               Arr("q", ("T", "..."), FLOATS, layout=ROWS),
               Arr("k", ("T", "..."), like="q", layout=ROWS),
               Arr("cos_sin_cache", ("P", "D"), ("float32",),
                   hint="make it with make_cos_sin_cache(max_pos, head_size)"))


def rotary_embedding(positions: Any, q: Any, k: Any, cos_sin_cache: Any, *, head_size: int,
                     stream: Any = None) -> tuple[Any, Any]:
    """Neox rotary embedding, in place on q [T, Hq*D] and k [T, Hk*D] (also [T, H, D]).

    Rows may be strided (views into a fused qkv buffer); inner dims are contiguous.
    cos_sin_cache is float32 [max_pos, D] = [cos | sin] (make_cos_sin_cache). Positions
    outside [0, max_pos) leave the row untouched. The 16-byte vector kernel runs when q and
    k (base and row stride) are 16-byte aligned and D/2 is a whole number of vectors;
    otherwise the scalar kernel. Returns (q, k).
    """
    if require_int("head_size", head_size, 2) % 2:
        raise ArgumentError(f"head_size must be a positive even int, got {head_size!r}")
    b = _ROTARY.bind(known={"D": int(head_size)}, positions=positions, q=q, k=k, cos_sin_cache=cos_sin_cache)
    t = b.dims["T"]
    heads = []
    for name, arr in (("q", q), ("k", k)):
        width = math.prod(arr.shape[1:])
        if width % head_size:
            raise ArgumentError(f"{name} row width {width} (shape {list(arr.shape)}) is not a multiple of "
                                f"head_size {head_size}")
        heads.append(width // head_size)
    b.on_device()
    if t == 0:
        return q, k
    dt = b.dtypes["q"]
    vec = vector_width(dt)
    v = vec if (head_size // 2) % vec == 0 and b.aligned(VECTOR_BYTES, "q", "k") else 1
    nq, nk = heads
    threads = threads_for((nq + nk) * (head_size // 2 // v))
    launch("rotary", f"rotary_{tag(dt)}_v{v}", (t,), threads,
           (positions, q, k, cos_sin_cache, I32(nq), I32(nk), I32(head_size), I64(b.row_strides["q"]),
            I64(b.row_strides["k"]), I32(b.dims["P"])), stream)
    return q, k
