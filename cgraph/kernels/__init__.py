"""Raw CUDA kernels for cgraph models, compiled with NVRTC and loaded through CuPy.

Launchers (all capturable into CUDA graphs; each module states its kernels' contracts):
embedding, rms_norm, silu_and_mul, argmax (cgraph.kernels.elementwise), rotary_embedding and
rotary_and_cache (.rotary), reshape_and_cache (.kv_cache), gemm and patch_embed (.matmul),
paged_attention and varlen_attention (.attention), sample (.sampling: temperature, top-k,
top-p per row) and Generator (.random: Philox with its state on the device), feed_tokens, publish_tokens, advance_decode,
start_decode_loop and decode_loop_step (.tokens), while_loop, cond and set_condition
(.control), and the host helpers make_cos_sin_cache and unfold_patches (.host).
Arguments are validated against one declarative specification per launcher (.spec)
before anything touches the device. Inside a capture on compute capability 9.0+ every
kernel is launched with programmatic dependent launch (.launch; set_programmatic_launch
turns it off).

NumPy references live in cgraph.kernels.reference (random_reference for the random kernels). Compiled cubins are cached on disk
(.cubin_cache); :func:`precompile` fills the cache ahead of time, in parallel, and
`python -m cgraph.kernels check` compiles every kernel without a GPU. Importing this
package does not import CuPy.
"""

from cgraph.kernels.attention import paged_attention, varlen_attention
from cgraph.kernels.cubin_cache import precompile
from cgraph.kernels.elementwise import argmax, embedding, rms_norm, silu_and_mul
from cgraph.kernels.host import make_cos_sin_cache, unfold_patches
from cgraph.kernels.launch import programmatic_launch, set_programmatic_launch
from cgraph.kernels.kv_cache import reshape_and_cache
from cgraph.kernels.matmul import gemm, patch_embed
from cgraph.kernels.random import Generator
from cgraph.kernels.rotary import rotary_and_cache, rotary_embedding
from cgraph.kernels.sampling import sample
from cgraph.kernels.control import cond, set_condition, while_loop
from cgraph.kernels.tokens import advance_decode, decode_loop_step, feed_tokens, publish_tokens, start_decode_loop

__all__ = [
    "Generator", "advance_decode", "argmax", "cond", "decode_loop_step", "embedding", "feed_tokens", "gemm",
    "make_cos_sin_cache", "paged_attention", "patch_embed", "precompile", "programmatic_launch", "publish_tokens",
    "reshape_and_cache", "rms_norm", "rotary_and_cache", "rotary_embedding", "sample", "set_condition", "set_programmatic_launch",
    "silu_and_mul", "start_decode_loop", "unfold_patches", "varlen_attention", "while_loop",
]
