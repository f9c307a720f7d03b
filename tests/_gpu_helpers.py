"""Small helpers shared by the GPU tests: fresh random inputs and poisoned outputs."""

from __future__ import annotations

import numpy as np


def rng() -> np.random.Generator:
    # A fresh seed each run: tests must hold for any input, not one lucky draw.
    return np.random.default_rng()


def rand(cp, shape, dtype="float32", low=0.5, high=1.5):
    """Random device array away from zero (never all zeros)."""
    return cp.asarray(rng().uniform(low, high, size=shape).astype(dtype))


def poison(arr) -> None:
    """Fill an output with NaN (floats) or -1 (ints) so an unwritten element shows."""
    arr.fill(np.nan if arr.dtype.kind == "f" else -1)
