"""Mixed-resolution image workloads for benchmarks and checks (pure; NumPy only).

A workload is a tuple of output grids (rows, cols) in merged tokens: an image of that grid
has shape [C, rows * 2 * patch, cols * 2 * patch] (2x2 merger) and rows * cols output
tokens. A serving workload (:func:`serving_steps`) is a stream of steps, each a tuple of
grids: the new images one server step encodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def make_images(grids: Sequence[tuple[int, int]], channels: int, patch: int, *, seed: int = 0,
                dtype: str = "float16", merge: int = 2) -> list[np.ndarray]:
    """Random host images (NumPy) [channels, rows*merge*patch, cols*merge*patch] for the grids."""
    rng = np.random.default_rng(seed)
    step = merge * patch
    return [rng.standard_normal((channels, r * step, c * step)).astype(dtype) for r, c in grids]


def serving_steps(num_steps: int, *, min_images: int = 1, max_images: int = 8, min_tokens: int = 64,
                  max_tokens: int = 1024, seed: int = 0,
                  max_side: int | None = None) -> tuple[tuple[tuple[int, int], ...], ...]:
    """A stream of `num_steps` server steps, each the output grids of that step's new images.

    Every step encodes the images of the requests that arrived since the last one: a count
    uniform in [min_images, max_images], each image's tokens log-uniform in
    [min_tokens, max_tokens] with aspect ratios between about 1:2 and 2:1 (as
    :func:`mixed_grids`). Deterministic for a seed.
    """
    if num_steps < 0 or not 1 <= min_images <= max_images:
        raise ArgumentError(
            f"need num_steps >= 0 and 1 <= min_images <= max_images, got num_steps={num_steps}, "
            f"min_images={min_images}, max_images={max_images}"
        )
    rng = np.random.default_rng(seed)
    counts = rng.integers(min_images, max_images + 1, size=num_steps)
    grids = mixed_grids(int(counts.sum()), min_tokens, max_tokens, seed=int(rng.integers(1 << 31)),
                        max_side=max_side)
    ends = np.cumsum(counts)
    return tuple(grids[e - c : e] for e, c in zip(ends.tolist(), counts.tolist()))
