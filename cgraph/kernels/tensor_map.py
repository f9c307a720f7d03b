"""TMA tensor maps (CUtensorMap) for the sm_90a GEMM kernels, encoded on the host.

A tensor map describes a 2-D row-major fp16/bf16 matrix in device memory and the box the
kernel copies per request: ``box_cols`` elements of ``box_rows`` rows, stored in shared
memory with the 128-byte swizzle; reads past the matrix's edge are filled with zeros. It is
built by the driver's ``cuTensorMapEncodeTiled`` (through ctypes: CuPy does not wrap it) and
passed to the kernel by value, so a captured launch keeps the map it was captured with.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

from cgraph.core.errors import ArgumentError, GPUUnavailableError

#: 128 opaque bytes, as the kernel's ``TensorMap`` parameter (passed by value).
TENSOR_MAP_DTYPE = np.dtype([("opaque", np.uint64, (16,))], align=True)
_UINT16 = 1  # CU_TENSOR_MAP_DATA_TYPE_UINT16: the copy moves bits, fp16 and bf16 alike
_SWIZZLE_128B = 3
_L2_PROMOTION_128B = 2
_MAX_BOX = 256


@functools.lru_cache(maxsize=1)
def _encode_tiled() -> Any:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise GPUUnavailableError(f"TMA tensor maps need the CUDA driver (libcuda.so.1): {exc}") from exc
    fn = lib.cuTensorMapEncodeTiled
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
                   ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                   ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
                   ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return fn


def encode_2d(ptr: int, rows: int, cols: int, box_rows: int, box_cols: int = 64, l2: int = _L2_PROMOTION_128B) -> np.void:
    """Tensor map of a C-contiguous [rows, cols] 16-bit matrix at device address `ptr`.

    Needs ptr 16-byte aligned and cols % 8 == 0 (row pitch a multiple of 16 bytes);
    box_cols * 2 must be 128 (one swizzle row) and box_rows <= 256.
    """
    if ptr % 16 or cols % 8 or rows < 1 or cols < 1:
        raise ArgumentError(f"a TMA tensor map needs a 16-byte aligned address and cols % 8 == 0 "
                         f"(got address {ptr:#x}, shape [{rows}, {cols}])")
    if box_cols * 2 != 128 or not 1 <= box_rows <= _MAX_BOX:
        raise ArgumentError(f"box {box_rows}x{box_cols} unsupported: box_cols must be 64 and "
                         f"box_rows in [1, {_MAX_BOX}]")
    # the driver wants a 64-byte aligned CUtensorMap; over-allocate and align
    scratch = np.zeros(32, np.uint64)
    start = (-scratch.ctypes.data % 64) // 8
    view = scratch[start:start + 16]
    gdim = (ctypes.c_uint64 * 2)(cols, rows)
    gstride = (ctypes.c_uint64 * 1)(cols * 2)
    box = (ctypes.c_uint32 * 2)(box_cols, box_rows)
    estride = (ctypes.c_uint32 * 2)(1, 1)
    rc = _encode_tiled()(view.ctypes.data, _UINT16, 2, ctypes.c_void_p(ptr), gdim, gstride, box,
                         estride, 0, _SWIZZLE_128B, l2, 0)
    if rc != 0:
        raise ArgumentError(f"cuTensorMapEncodeTiled failed with CUresult {rc} for a [{rows}, {cols}] "
                           f"matrix at {ptr:#x}, box {box_rows}x{box_cols}")
    out = np.zeros((), TENSOR_MAP_DTYPE)
    out["opaque"] = view
    return out[()]


_CACHE: dict[tuple[int, int, int, int], np.void] = {}
#: cached maps kept before the cache is cleared (bounds its memory).
CACHE_LIMIT = 4096


def cached_tensor_map(ptr: int, rows: int, cols: int, box_rows: int) -> np.void:
    """encode_2d(ptr, rows, cols, box_rows), cached: a pure function of its arguments."""
    key = (ptr, rows, cols, box_rows)
    tmap = _CACHE.get(key)
    if tmap is None:
        if len(_CACHE) >= CACHE_LIMIT:
            _CACHE.clear()
        tmap = _CACHE[key] = encode_2d(ptr, rows, cols, box_rows)
    return tmap
