"""GEMM launch planning: which kernel, grid and split for out[M, N] = a[M, K] @ w[N, K]^T.

Pure (no CuPy): the tile table mirrors the instantiations in kernels/gemm.cu.
"""

from __future__ import annotations

import math

import attrs

#: tile name -> (BM, BN, BK, warps, stages); must match GEMM_CFGS in kernels/gemm.cu.
TILES: dict[str, tuple[int, int, int, int, int]] = {
    "t16": (16, 64, 64, 4, 4),
    "t32": (32, 64, 64, 4, 4),
    "t64": (64, 64, 64, 4, 4),
    "t128": (128, 128, 32, 8, 4),
    "t256": (128, 256, 32, 8, 3),
}
#: shared memory per multiprocessor usable by blocks on sm_80/sm_90 (bytes).
SMEM_PER_SM = 227 * 1024
SPLITS = (1, 2, 4, 8)
GEMV_ROWS = (1, 2, 4, 8)
#: largest M served by the GEMV-like kernel by default (weights streamed once per launch).
GEMV_MAX_M = 4


def tile_smem_bytes(tile: str) -> int:
    """Dynamic shared memory of a tile kernel: the cp.async pipeline or the fp32 epilogue tile."""
    bm, bn, bk, _, stages = TILES[tile]
    return max(stages * (bm + bn) * (bk + 8) * 2, bm * (bn + 4) * 4)


def resident_ctas(tile: str) -> int:
    """CTAs of a tile kernel that fit on one multiprocessor at once (shared memory bound)."""
    smem = tile_smem_bytes(tile) + 1024  # the runtime reserves 1 KB per block
    warps = TILES[tile][3]
    return max(1, min(SMEM_PER_SM // smem, 64 // warps))


def default_tile(m: int) -> str:
    """Smallest tile height that covers m (weights are read once per M tile)."""
    for tile, limit in (("t16", 16), ("t32", 32), ("t64", 128)):
        if m <= limit:
            return tile
    return "t128"


@attrs.frozen
class GemmPlan:
    """One launch: kernel name suffix (without dtype), grid, block, shared memory, K split."""

    kind: str  # "tile", "gemv" or "fallback"
    kernel: str  # e.g. "t64_s4", "m2", "fallback"
    grid: tuple[int, int, int]
    block: int
    smem: int = 0
    ktiles_per_split: int = 0


def plan_gemm(m: int, n: int, k: int, *, aligned: bool, sm_count: int, cluster: bool,
              tile: str | None = None, split: int | None = None, gemv_max_m: int = GEMV_MAX_M) -> GemmPlan:
    """Choose the kernel for an (m, n, k) GEMM.

    aligned: K % 8 == 0 and a, w 16-byte aligned (needed by the tensor-core and GEMV paths).
    cluster: the device supports thread-block clusters (sm_90+), needed for a K split.
    tile/split force a configuration (benchmarks); split > 1 needs cluster.
    """
    if not aligned:
        return GemmPlan("fallback", "fallback", (math.ceil(n / 16), math.ceil(m / 16), 1), 256)
    if tile is None and m <= gemv_max_m:
        rows = next(r for r in GEMV_ROWS if r >= m)
        return GemmPlan("gemv", f"m{rows}", (math.ceil(n / 8), 1, 1), 256)
    if tile is None:
        tile = default_tile(m)
    if tile not in TILES:
        raise ValueError(f"unknown GEMM tile {tile!r}; expected one of {sorted(TILES)}")
    bm, bn, bk, warps, _ = TILES[tile]
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    ktiles = math.ceil(k / bk)
    if split is None:
        # Split K while the grid still fits on the GPU at once: more CTAs in flight means
        # more weight bytes in flight, which is what skinny (memory-bound) shapes need.
        # Skinny tiles: about 2.7 CTAs per multiprocessor measured best on an H200 (1024..11008
        # wide weights). Large tiles are compute-bound: at most one CTA per multiprocessor.
        split = 1
        if cluster:
            capacity = int(sm_count * (min(2.7, resident_ctas(tile)) if bm <= 64 else 1))
            for s in SPLITS[1:]:
                if tiles * s <= capacity and math.ceil(ktiles / s) >= 2:
                    split = s
    if split not in SPLITS:
        raise ValueError(f"GEMM split must be one of {SPLITS}, got {split}")
    if split > 1 and not cluster:
        raise ValueError("a K split needs thread-block clusters (compute capability 9.0 or newer)")
    return GemmPlan("tile", f"{tile}_s{split}", (math.ceil(n / bn), math.ceil(m / bm), split),
                    warps * 32, tile_smem_bytes(tile), math.ceil(ktiles / split))
