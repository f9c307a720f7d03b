"""The sampling launcher: temperature, top-k and top-p per row, on counter-based randomness.

`sample` picks one token per row of logits from per-row parameters (the packed form of
cgraph.core.sampling: temperature, top_p, top_k, a 64-bit seed) and a per-row position:
row r's random bits are Philox4x32-10 of counter [positions[r], 0, 0, "SAMP"] under key
seed[r], so its token depends on its logits, parameters and position only (not on its row,
the batch or the graph mode). Greedy rows (temperature 0) get the argmax, bit for bit as
cgraph.kernels.argmax. The rules, exactly reproducible (integer weights, integer sums,
thresholds found by radix search; no sort), are stated in kernels/sampling.cu; the NumPy
reference is cgraph.kernels.random_reference.sample_row.
"""

from __future__ import annotations

from typing import Any

from cgraph.core.errors import ArgumentError
from cgraph.core.sampling import SAMPLING_WIDTH
from cgraph.kernels.launch import I32, VECTOR_BYTES, launch, tag, threads_for, vector_width
from cgraph.kernels.spec import FLOATS, INT32, Arr, Spec

#: the largest vocabulary the sampler accepts: integer weights (<= 2^41 each) must sum below 2^63.
MAX_VOCAB = 2**22

_SAMPLE = Spec("sample",
               Arr("logits", ("T", "V"), FLOATS),
               Arr("params", ("T", SAMPLING_WIDTH), INT32,
                   hint="pack it with cgraph.core.sampling.pack_sampling"),
               Arr("positions", ("T",), INT32),
               Arr("out", ("T",), INT32),
               at_least={"V": 1})


def check_vocab(vocab: int, launcher: str) -> None:
    """ArgumentError when a row is too long for the sampler's integer weights."""
    if vocab > MAX_VOCAB:
        raise ArgumentError(f"{launcher}: a row of {vocab} logits exceeds the sampler's limit of {MAX_VOCAB} "
                            "tokens (its integer weights must sum below 2^63); split the vocabulary")


def pick_variant(b: Any, dtype: str, vocab: int) -> tuple[str, int]:
    """(dtype tag + vector suffix, threads) of the sampling kernels for bound logits."""
    vec = vector_width(dtype)
    v = vec if vocab % vec == 0 and b.aligned(VECTOR_BYTES, "logits") else 1
    return f"{tag(dtype)}_v{v}", threads_for(-(-vocab // v), cap=1024)


def sample(logits: Any, params: Any, positions: Any, *, out: Any, stream: Any = None) -> Any:
    """out[r] = the token row r samples (int32), one block per row.

    logits [T, V] (1 <= V <= MAX_VOCAB) of a float dtype; params int32 [T, SAMPLING_WIDTH]
    (cgraph.core.sampling.pack_sampling; all-zero rows are greedy); positions int32 [T]:
    the position of the token each row samples (its counter); out int32 [T]. All
    C-contiguous. Deterministic: the same inputs give the same tokens on every launch.
    """
    b = _SAMPLE.bind(logits=logits, params=params, positions=positions, out=out)
    check_vocab(b.dims["V"], "sample")
    b.on_device()
    t, vocab = b.dims["T"], b.dims["V"]
    if t == 0:
        return out
    variant, threads = pick_variant(b, b.dtypes["logits"], vocab)
    launch("sampling", f"sample_{variant}", (t,), threads, (logits, params, positions, out, I32(vocab)), stream)
    return out
