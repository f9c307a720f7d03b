"""Host-side set-up helpers for the launchers (not for use inside a captured region)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cgraph.core.errors import ArgumentError
from cgraph.cuda.device import cupy
import cgraph.kernels.reference as reference
from cgraph.kernels.spec import require_int


def make_cos_sin_cache(max_pos: int, head_size: int, base: float = 10000.0) -> Any:
    """CuPy float32 [max_pos, head_size] = [cos | sin] for neox rotary (rotary_embedding)."""
    require_int("max_pos", max_pos, 1)
    if require_int("head_size", head_size, 2) % 2:
        raise ArgumentError(f"head_size must be a positive even int, got {head_size!r}")
    return cupy().asarray(reference.cos_sin_cache(int(max_pos), int(head_size), base))


def unfold_patches(image: Any, patch: int) -> Any:
    """[C, H, W] image (NumPy or CuPy) -> [(H/p)*(W/p), C*p*p] rows of patches, C-contiguous.

    Patches in row-major order over the patch grid; features ordered (channel, y, x), which
    matches a Conv2d weight [H, C, p, p] reshaped to [H, C*p*p] (patch_embed's weight).
    """
    shape = list(getattr(image, "shape", ()))
    if len(shape) != 3:
        raise ArgumentError(f"image must be [C, H, W], got shape {shape}")
    c, h, w = image.shape
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1 or h % patch or w % patch:
        raise ArgumentError(f"patch={patch!r} must be a positive int dividing H={h} and W={w}")
    xp = cupy() if hasattr(image, "__cuda_array_interface__") else np
    # move raw bit patterns: a pure permutation, so any dtype (bfloat16 too) works
    bits = xp.ascontiguousarray(image).view(f"uint{8 * np.dtype(image.dtype).itemsize}")
    x = bits.reshape(c, h // patch, patch, w // patch, patch).transpose(1, 3, 0, 2, 4)
    x = xp.ascontiguousarray(x.reshape((h // patch) * (w // patch), c * patch * patch))
    return x.view(image.dtype)
