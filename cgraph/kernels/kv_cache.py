"""Paged KV-cache write: copy each token's k/v rows into its slot of the paged caches."""

from __future__ import annotations

from typing import Any

from cgraph.kernels.launch import I32, I64, VECTOR_BYTES, launch, tag, threads_for, vector_width
from cgraph.kernels.spec import FLOATS, INT32, ROWS, Arr, Spec

_RESHAPE_AND_CACHE = Spec("reshape_and_cache",
                          Arr("k_cache", ("NB", "BS", "Hkv", "D"), FLOATS),
                          Arr("v_cache", ("NB", "BS", "Hkv", "D"), like="k_cache"),
                          Arr("slot_mapping", ("T",), INT32),
                          Arr("k", ("T", "Hkv", "D"), like="k_cache", layout=ROWS),
                          Arr("v", ("T", "Hkv", "D"), like="k_cache", layout=ROWS))


def reshape_and_cache(k: Any, v: Any, k_cache: Any, v_cache: Any, slot_mapping: Any, *, stream: Any = None) -> None:
    """Write k, v [T, Hkv, D] into paged caches [num_blocks, block_size, Hkv, D] at slot_mapping[t].

    slot = block * block_size + offset; a slot < 0 (padding) or past the cache is skipped.
    k/v rows may be strided (views of a fused qkv buffer); the caches are C-contiguous. The
    16-byte vector kernel runs when k, v (base and row stride) and both caches are 16-byte
    aligned and a row (Hkv*D) is a whole number of vectors; otherwise the scalar kernel.
    """
    b = _RESHAPE_AND_CACHE.bind(k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping, k=k, v=v)
    b.on_device()
    t, nb, bs = b.dims["T"], b.dims["NB"], b.dims["BS"]
    row = b.dims["Hkv"] * b.dims["D"]
    if t == 0 or row == 0:
        return None
    dt = b.dtypes["k_cache"]
    vec = vector_width(dt)
    v_ = vec if row % vec == 0 and b.aligned(VECTOR_BYTES, "k", "v", "k_cache", "v_cache") else 1
    launch("cache", f"reshape_and_cache_{tag(dt)}_v{v_}", (t,), threads_for(row // v_),
           (k, v, k_cache, v_cache, slot_mapping, I32(row), I64(b.row_strides["k"]), I64(b.row_strides["v"]),
            I64(nb * bs)), stream)
    return None
