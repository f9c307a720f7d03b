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


_ROTARY_CACHE = Spec("rotary_and_cache",
                     Arr("positions", ("T",), INT32),
                     Arr("q", ("T", "..."), FLOATS, layout=ROWS),
                     Arr("k", ("T", "Hkv", "D"), like="q", layout=ROWS),
                     Arr("v", ("T", "Hkv", "D"), like="q", layout=ROWS),
                     Arr("cos_sin_cache", ("P", "D"), ("float32",),
                         hint="make it with make_cos_sin_cache(max_pos, head_size)"),
                     Arr("k_cache", ("NB", "BS", "Hkv", "D"), like="q"),
                     Arr("v_cache", ("NB", "BS", "Hkv", "D"), like="q"),
                     Arr("slot_mapping", ("T",), INT32))


def rotary_and_cache(positions: Any, q: Any, k: Any, v: Any, cos_sin_cache: Any, k_cache: Any, v_cache: Any,
                     slot_mapping: Any, *, stream: Any = None) -> None:
    """:func:`rotary_embedding` of q and k, fused with :func:`cgraph.kernels.reshape_and_cache`
    of the rotated k and of v: one launch, the same bits as the two in turn.

    q [T, Hq*D] (or [T, Hq, D]), k and v [T, Hkv, D] with strided rows allowed (views of a
    fused qkv buffer); caches [num_blocks, block_size, Hkv, D], C-contiguous. q and k are
    rotated in place (a position outside the cos/sin table leaves them as they are); row t's
    k and v go to slot slot_mapping[t] (a slot < 0 or past the cache is skipped).
    """
    b = _ROTARY_CACHE.bind(positions=positions, q=q, k=k, v=v, cos_sin_cache=cos_sin_cache, k_cache=k_cache,
                           v_cache=v_cache, slot_mapping=slot_mapping)
    d, hkv = b.dims["D"], b.dims["Hkv"]
    if d % 2:
        raise ArgumentError(f"head size D={d} must be even for rotary embedding")
    width = math.prod(q.shape[1:])
    if width % d:
        raise ArgumentError(f"q row width {width} (shape {list(q.shape)}) is not a multiple of the head size {d}")
    b.on_device()
    t = b.dims["T"]
    if t == 0:
        return None
    dt = b.dtypes["q"]
    vec = vector_width(dt)
    aligned = b.aligned(VECTOR_BYTES, "q", "k", "v", "k_cache", "v_cache")
    v_ = vec if (d // 2) % vec == 0 and aligned else 1
    nq = width // d
    threads = threads_for((nq + hkv) * (d // 2 // v_))
    launch("rotary", f"rotary_cache_{tag(dt)}_v{v_}", (t,), threads,
           (positions, q, k, v, cos_sin_cache, k_cache, v_cache, slot_mapping, I32(nq), I32(hkv), I32(d),
            I64(b.row_strides["q"]), I64(b.row_strides["k"]), I64(b.row_strides["v"]), I32(b.dims["P"]),
            I64(b.dims["NB"] * b.dims["BS"])), stream)
    return None
