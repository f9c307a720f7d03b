"""Raw CUDA kernels for cgraph models, compiled with NVRTC through CuPy.

Launchers (all capturable into CUDA graphs; see ops.py for each contract):
embedding, rms_norm, rotary_embedding, make_cos_sin_cache, silu_and_mul, gemm,
reshape_and_cache, paged_attention, varlen_attention, argmax, patch_embed, unfold_patches.
NumPy references live in cgraph.kernels.reference; `python -m cgraph.kernels check`
compiles every kernel without a GPU. Importing this package does not import CuPy.
"""

from cgraph.kernels.ops import (
    argmax,
    embedding,
    gemm,
    make_cos_sin_cache,
    paged_attention,
    patch_embed,
    reshape_and_cache,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
    unfold_patches,
    varlen_attention,
)

__all__ = [
    "argmax", "embedding", "gemm", "make_cos_sin_cache", "paged_attention", "patch_embed",
    "reshape_and_cache", "rms_norm", "rotary_embedding", "silu_and_mul", "unfold_patches",
    "varlen_attention",
]
