"""GEMM launch planning: which kernel, grid and split for out[M, N] = a[M, K] @ w[N, K]^T.

Pure (no CuPy): the tile tables mirror the instantiations in kernels/gemm.cu (mma.sync)
and kernels/gemm_sm90.cu (wgmma with TMA, sm_90a).
"""

from __future__ import annotations

import math

import attrs

from cgraph.core.errors import ArgumentError

#: tile name -> (BM, BN, BK, warps, stages); must match GEMM_CFGS in kernels/gemm.cu.
TILES: dict[str, tuple[int, int, int, int, int]] = {
    "t16": (16, 64, 64, 4, 4),
    "t32": (32, 64, 64, 4, 4),
    "t64": (64, 64, 64, 4, 4),
    "t128": (128, 128, 64, 4, 3),
    "t256": (128, 256, 64, 8, 3),
}
#: shared memory per multiprocessor usable by blocks on sm_80/sm_90 (bytes).
SMEM_PER_SM = 227 * 1024
SPLITS = (1, 2, 4, 8)
#: wgmma tile name -> (BM, BN, stages); must match GEMM_TMA_CFGS in kernels/gemm_sm90.cu.
WGMMA_TILES: dict[str, tuple[int, int, int]] = {
    "w128x64s8": (128, 64, 8),
    "w128x128s6": (128, 128, 6),
    "w128x256s4": (128, 256, 4),
}
WGMMA_SPLITS = (1, 2, 4)
#: share of the multiprocessors a K-split wgmma grid may fill (one CTA per SM): past about
#: 3/4 the split's clusters no longer all fit at once and a second wave waits (H200 tuning
#: run of the decode shapes, graph-timed with weights streamed from HBM; README, Known limits)
WGMMA_SPLIT_FILL = 0.75
#: row counts of the CUDA-core GEMV kernels (gemv_<dt>_m1/m2/m4).
GEMV_ROWS = (1, 2, 4)
#: largest M served by the CUDA-core GEMV kernel by default (weights streamed once per launch).
GEMV_MAX_M = 4
#: the streaming tensor-core kernel (gemm_<dt>_stream): rows, N slice per CTA, warps per CTA.
STREAM_MAX_M = 32
STREAM_BN = 16
STREAM_BM = 32
STREAM_WARPS = (2, 4, 8, 16)
#: largest M the streaming kernel serves by default (above it the tiled kernel).
STREAM_DEFAULT_MAX_M = 32


def tile_smem_bytes(tile: str) -> int:
    """Dynamic shared memory of a tile kernel: the cp.async pipeline or the fp32 epilogue tile."""
    bm, bn, bk, _, stages = TILES[tile]
    return max(stages * (bm + bn) * (bk + 8) * 2, bm * (bn + 4) * 4)


def resident_ctas(tile: str) -> int:
    """CTAs of a tile kernel that fit on one multiprocessor at once (shared memory bound)."""
    smem = tile_smem_bytes(tile) + 1024  # the runtime reserves 1 KB per block
    warps = TILES[tile][3]
    return max(1, min(SMEM_PER_SM // smem, 64 // warps))


def default_tile(m: int, n: int, sm_count: int) -> str:
    """Tile for m rows: the smallest height that covers m (weights are read once per M tile);
    for 64 < m <= 128 a 128-row tile when N is wide enough to fill the GPU with it; for large
    outputs the 128x256 tile (H200 tuning run, cgraph.bench.gemm_tune)."""
    for tile, limit in (("t16", 16), ("t32", 32), ("t64", 64)):
        if m <= limit:
            return tile
    if m <= 128:
        return "t128" if n >= 8192 else "t64"
    if math.ceil(m / 128) * math.ceil(n / 128) > 4 * sm_count:
        return "t256"
    return "t128"


def stream_warps(n: int, k: int, sm_count: int) -> int:
    """Warps per CTA of the streaming kernel: as many as keep every CTA resident at once
    (~16 warps per SM fit by registers; a second wave would double the time), and no more
    than there are 128-wide K groups to share."""
    ctas = math.ceil(n / STREAM_BN)
    groups = math.ceil(k / 128)
    best = STREAM_WARPS[0]
    for w in STREAM_WARPS:
        if ctas * w > 16 * sm_count:
            break
        best = w
        if w >= groups:
            break
    return best


def use_stream(m: int, n: int, k: int, sm_count: int) -> bool:
    """Streaming kernel or tiled kernel for m <= STREAM_DEFAULT_MAX_M (H200 tuning run,
    notebooks/results/gemm_tune.json): the streaming kernel wins when its warps, all resident
    at once, hold the whole weight matrix within two 128-wide K groups each; for larger
    weights (11008x4096) the cluster-split tiles are faster."""
    if m > STREAM_DEFAULT_MAX_M:
        return False
    groups = math.ceil(k / 128)
    return math.ceil(groups / stream_warps(n, k, sm_count)) <= 2


def _split_capacity(tile: str, m: int, sm_count: int) -> int:
    """CTAs a K split may fill (H200 tuning): skinny tiles ~2.7 per SM; 128-row tiles 3 per SM
    at m <= 128 (weights dominate) and 2 per SM above (two fit by shared memory)."""
    bm = TILES[tile][0]
    if bm <= 64:
        return int(sm_count * min(2.7, resident_ctas(tile)))
    if tile == "t128":
        return (3 if m <= 128 else 2) * sm_count
    return sm_count


def wgmma_smem_bytes(tile: str) -> int:
    """Dynamic shared memory of a wgmma kernel: pipeline or epilogue tile, plus 1 KB of alignment."""
    bm, bn, stages = WGMMA_TILES[tile]
    return max(stages * (bm + bn) * 128, bm * (bn + 4) * 4) + 1024


def default_wgmma_tile(m: int, n: int, sm_count: int) -> str:
    """wgmma tile (tuning runs on an H100 and an H200, cgraph.bench.kernels): 64 columns while
    128x128 tiles would fill under half the GPU (skinny, memory-bound outputs), 256 columns
    beyond three waves of 128x128 tiles, else 128."""
    tiles = math.ceil(m / 128) * math.ceil(n / 128)
    if 2 * tiles < sm_count:
        return "w128x64s8"
    if tiles > 3 * sm_count:
        return "w128x256s4"
    return "w128x128s6"


@attrs.frozen
class GemmPlan:
    """One launch: kernel name suffix (without dtype), grid, block, shared memory, K split."""

    kind: str  # "wgmma", "tile", "gemv", "stream" or "fallback"
    kernel: str  # e.g. "t64_s4", "m2", "stream", "fallback"
    grid: tuple[int, int, int]
    block: int
    smem: int = 0
    ktiles_per_split: int = 0


def _plan_wgmma(m: int, n: int, k: int, sm_count: int, tile: str | None, split: int | None) -> GemmPlan:
    if tile is None:
        tile = default_wgmma_tile(m, n, sm_count)
    bm, bn, _ = WGMMA_TILES[tile]
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    ktiles = math.ceil(k / 64)
    if split is None:
        # One CTA per multiprocessor fits (the pipelines are deep): split K while the grid
        # stays within WGMMA_SPLIT_FILL of one wave and each CTA keeps at least 4 slices.
        split = 1
        for s in WGMMA_SPLITS[1:]:
            if tiles * s <= WGMMA_SPLIT_FILL * sm_count and math.ceil(ktiles / s) >= 4:
                split = s
    if split not in WGMMA_SPLITS:
        raise ArgumentError(f"wgmma GEMM split must be one of {WGMMA_SPLITS}, got {split}")
    return GemmPlan("wgmma", f"{tile}_s{split}", (math.ceil(n / bn), math.ceil(m / bm), split),
                    2 * bm + 32, wgmma_smem_bytes(tile), math.ceil(ktiles / split))


def plan_gemm(m: int, n: int, k: int, *, aligned: bool, sm_count: int, cluster: bool,
              tile: str | None = None, split: int | None = None, gemv_max_m: int = GEMV_MAX_M,
              streaming: bool | None = None, warps: int | None = None,
              wgmma: bool = False, invariant: bool = False) -> GemmPlan:
    """Choose the kernel for an (m, n, k) GEMM; depends only on its arguments (deterministic).

    aligned: K % 8 == 0 and a, w 16-byte aligned (needed by the tensor-core and GEMV paths).
    cluster: the device supports thread-block clusters (sm_90+), needed for a K split.
    wgmma: the device runs the sm_90a kernels (compute capability 9.0); then every M that
    neither the GEMV nor the streaming kernel serves uses them (those two decide by M <= 4
    and by (N, K) alone, so padding a batch to a capture size never changes a row's kernel).
    tile/split force a configuration (a WGMMA_TILES name needs wgmma), streaming=True/warps
    the streaming kernel (benchmarks and tests); split > 1 needs cluster.
    invariant: a row's arithmetic independent of M (batch invariance): the tiled mma.sync
    kernel at every M, its tile height following M (every tile sums a row's products in
    the same order: 64-wide K tiles, 16-wide steps) and its K split fixed by (N, K)
    (:func:`invariant_split`); slower than the default plan at small and large M.
    """
    if not aligned:  # one thread per output, K in order: invariant as it is
        return GemmPlan("fallback", "fallback", (math.ceil(n / 16), math.ceil(m / 16), 1), 256)
    if invariant:
        if tile is not None or split is not None or streaming or warps is not None:
            raise ArgumentError("a batch-invariant GEMM plan takes no forced tile, split, streaming "
                                "or warps; drop invariant=True to force a configuration")
        return _plan_tile(m, n, k, default_tile(m, n, sm_count), invariant_split(n, k, sm_count, cluster),
                          sm_count, cluster)
    if tile in WGMMA_TILES:
        if not wgmma:
            raise ArgumentError(f"GEMM tile {tile!r} uses wgmma, which needs a compute capability 9.0 "
                             "device (H100/H200); use one of the mma.sync tiles "
                             f"{sorted(TILES)} elsewhere")
        return _plan_wgmma(m, n, k, sm_count, tile, split)
    if tile is None and not streaming and m <= min(gemv_max_m, GEMV_ROWS[-1]):
        rows = next(r for r in GEMV_ROWS if r >= m)
        return GemmPlan("gemv", f"m{rows}", (math.ceil(n / 8), 1, 1), 256)
    if streaming is None:
        streaming = tile is None and use_stream(m, n, k, sm_count)
    if streaming:
        if m > STREAM_MAX_M:
            raise ArgumentError(f"the streaming GEMM kernel serves M <= {STREAM_MAX_M}, got M={m}")
        w = stream_warps(n, k, sm_count) if warps is None else warps
        if w not in STREAM_WARPS:
            raise ArgumentError(f"streaming GEMM warps must be one of {STREAM_WARPS}, got {w}")
        return GemmPlan("stream", "stream", (math.ceil(n / STREAM_BN), 1, 1), 32 * w,
                        w * STREAM_BM * STREAM_BN * 4)
    if tile is None and wgmma:
        return _plan_wgmma(m, n, k, sm_count, None, split)
    if tile is None:
        tile = default_tile(m, n, sm_count)
    return _plan_tile(m, n, k, tile, split, sm_count, cluster)


def invariant_split(n: int, k: int, sm_count: int, cluster: bool) -> int:
    """K split of the batch-invariant plan: the one the default rule gives a single row
    (16-row tile), so it depends on (N, K) and the device, never on M."""
    return _plan_tile(1, n, k, "t16", None, sm_count, cluster).grid[2]


def _plan_tile(m: int, n: int, k: int, tile: str, split: int | None, sm_count: int, cluster: bool) -> GemmPlan:
    if tile not in TILES:
        raise ArgumentError(f"unknown GEMM tile {tile!r}; expected one of {sorted(TILES)} "
                         f"or, on compute capability 9.0, {sorted(WGMMA_TILES)}")
    bm, bn, bk, warps_, _ = TILES[tile]
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    ktiles = math.ceil(k / bk)
    if split is None:
        # Split K while the grid still fits on the GPU at once: more CTAs in flight means
        # more weight bytes in flight, which is what skinny (memory-bound) shapes need.
        split = 1
        if cluster:
            capacity = _split_capacity(tile, m, sm_count)
            min_ktiles = 2 if bm <= 64 else 4
            for s in SPLITS[1:]:
                if tiles * s <= capacity and math.ceil(ktiles / s) >= min_ktiles:
                    split = s
    if split not in SPLITS:
        raise ArgumentError(f"GEMM split must be one of {SPLITS}, got {split}")
    if split > 1 and not cluster:
        raise ArgumentError("a K split needs thread-block clusters (compute capability 9.0 or newer)")
    return GemmPlan("tile", f"{tile}_s{split}", (math.ceil(n / bn), math.ceil(m / bm), split),
                    warps_ * 32, tile_smem_bytes(tile), math.ceil(ktiles / split))
