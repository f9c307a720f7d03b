"""Mixed-resolution image workloads for benchmarks and checks (pure; NumPy only).

A workload is a tuple of output grids (rows, cols) in merged tokens: an image of that grid
has shape [C, rows * 2 * patch, cols * 2 * patch] and rows * cols output tokens.
"""

from __future__ import annotations

import math

import numpy as np

from cgraph.core.errors import ArgumentError


def mixed_grids(n: int, min_tokens: int, max_tokens: int, *, seed: int = 0,
                max_side: int | None = None) -> tuple[tuple[int, int], ...]:
    """`n` output grids with token counts spread log-uniformly over [min_tokens, max_tokens].

    Aspect ratios vary between about 1:2 and 2:1; each side is capped at `max_side`
    (default: max_tokens). Sizes are rounded, so counts land near, not on, the target.
    """
    if n < 0 or min_tokens < 1 or max_tokens < min_tokens:
        raise ArgumentError(
            f"need n >= 0 and 1 <= min_tokens <= max_tokens, got n={n}, "
            f"min_tokens={min_tokens}, max_tokens={max_tokens}"
        )
    rng = np.random.default_rng(seed)
    cap = max_side or max_tokens
    grids = []
    for _ in range(n):
        target = math.exp(rng.uniform(math.log(min_tokens), math.log(max_tokens)))
        aspect = math.exp(rng.uniform(-math.log(2), math.log(2)))
        rows = int(min(cap, max(1, round(math.sqrt(target * aspect)))))
        cols = int(min(cap, max(1, round(target / rows))))
        while rows * cols > max_tokens:  # rounding may overshoot the cap
            if cols >= rows:
                cols -= 1
            else:
                rows -= 1
        while rows * cols < min_tokens:
            if cols < cap:
                cols += 1
            else:
                rows += 1
        grids.append((rows, cols))
    return tuple(grids)


def grid_tokens(grids: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Output tokens of each grid."""
    return tuple(r * c for r, c in grids)


def make_images(grids, channels: int, patch: int, *, seed: int = 0, dtype: str = "float16"):
    """Random host images (NumPy) [channels, rows*2*patch, cols*2*patch] for the grids."""
    rng = np.random.default_rng(seed)
    step = 2 * patch
    return [rng.standard_normal((channels, r * step, c * step)).astype(dtype) for r, c in grids]
