"""Per-request sampling parameters and their packed form (pure: no CuPy).

A request samples each new token from the softmax of its logits at a temperature,
restricted to the top-k logits and then to the nucleus (top-p) of that distribution;
temperature 0 is greedy (argmax, ties to the lowest id), the default. Every draw is a
function of the request's seed and the position of the token being sampled, nothing else:
not the batch the request runs in, not its row, not the graph mode, so a run is
reproducible from its seeds and equal to the eager one under every mode.

:func:`pack_sampling` writes the parameters of a step's rows as int32 words, SAMPLING_WIDTH
per row (the layout the sampling kernel reads, cgraph.kernels.sampling):
``[temperature (float32 bits), top_p (float32 bits), top_k, seed low 32 bits, seed high 32 bits]``.
All-zero words are a greedy row (padding rows are zero).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import attrs
import numpy as np

from cgraph.core.errors import ArgumentError, ArgumentTypeError

#: int32 words per row in the packed form.
SAMPLING_WIDTH = 5
#: seeds are 64-bit: the Philox key.
MAX_SEED = 2**64 - 1


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"temperature must be a float >= 0, got {value!r} ({type(value).__name__}); "
                                "pass 0.0 for greedy decoding or e.g. 0.8")
    t = float(np.float32(value))
    if not math.isfinite(t) or t < 0.0:
        raise ArgumentError(f"temperature={value!r}: expected a finite float >= 0 (0 is greedy); pass e.g. 0.8")
    if 0.0 < float(value) and t < 1e-30:
        raise ArgumentError(f"temperature={value!r} is too small for float32 (1/temperature overflows); "
                            "pass 0.0 for greedy decoding or a value >= 1e-30")
    return t


def _top_p(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"top_p must be a float in (0, 1], got {value!r} ({type(value).__name__}); "
                                "pass 1.0 to keep the whole distribution")
    p = float(np.float32(value))
    if not 0.0 < p <= 1.0:
        raise ArgumentError(f"top_p={value!r}: expected a float in (0, 1] (the probability mass kept); "
                            "pass 1.0 to turn nucleus sampling off")
    return p


def _int_in(value: Any, name: str, low: int, high: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int in [{low}, {high}], got {value!r} "
                                f"({type(value).__name__}); {hint}")
    v = int(value)
    if not low <= v <= high:
        raise ArgumentError(f"{name}={v}: expected an int in [{low}, {high}]; {hint}")
    return v


def _top_k(value: Any) -> int:
    return _int_in(value, "top_k", 0, 2**31 - 1, "pass 0 to keep every token")


def _seed(value: Any) -> int:
    return _int_in(value, "seed", 0, MAX_SEED, "pass a non-negative 64-bit integer")


@attrs.frozen
class SamplingParams:
    """How a request picks its tokens.

    temperature: 0 is greedy (argmax; top_k and top_p are then ignored); > 0 samples from
    softmax(logits / temperature). top_k: keep only the tokens whose logit is at least the
    k-th largest (ties at that value are all kept); 0 keeps every token. top_p: then keep
    the most probable tokens whose probability mass reaches top_p of what is left (ties at
    the threshold kept); 1.0 keeps every token. seed: the request's random stream (64
    bits); the same seed and prompt give the same tokens, so give distinct requests that
    should differ distinct seeds.
    """

    temperature: float = attrs.field(default=0.0, converter=_temperature)
    top_k: int = attrs.field(default=0, converter=_top_k)
    top_p: float = attrs.field(default=1.0, converter=_top_p)
    seed: int = attrs.field(default=0, converter=_seed)

    @property
    def greedy(self) -> bool:
        """True when tokens are picked by argmax (temperature 0)."""
        return self.temperature == 0.0


#: the default: greedy decoding.
GREEDY = SamplingParams()


def pack_row(params: SamplingParams) -> tuple[int, int, int, int, int]:
    """The SAMPLING_WIDTH int32 words of one row (see the module doc); greedy rows are all zeros."""
    if params.greedy:
        return (0, 0, 0, 0, 0)
    bits = np.array([params.temperature, params.top_p], np.float32).view(np.int32)
    seed = np.array([params.seed & 0xFFFFFFFF, params.seed >> 32], np.uint32).view(np.int32)
    return (int(bits[0]), int(bits[1]), params.top_k, int(seed[0]), int(seed[1]))


def pack_sampling(params: Sequence[SamplingParams], rows: int) -> np.ndarray:
    """int32 [rows, SAMPLING_WIDTH]: row i holds params[i], rows past them are greedy (zeros)."""
    if len(params) > rows:
        raise ArgumentError(f"{len(params)} sampling parameter rows do not fit {rows} rows; pad to at least "
                            "the batch's sequence count")
    out = np.zeros((rows, SAMPLING_WIDTH), np.int32)
    for i, p in enumerate(params):
        if not isinstance(p, SamplingParams):
            raise ArgumentTypeError(f"sampling row {i} is a {type(p).__name__}, expected SamplingParams")
        if not p.greedy:
            out[i] = pack_row(p)
    return out


def unpack_sampling(packed: np.ndarray) -> list[tuple[float, float, int, int]]:
    """(temperature, top_p, top_k, seed) of each packed row (the inverse of pack_sampling)."""
    a = np.ascontiguousarray(packed, dtype=np.int32).reshape(-1, SAMPLING_WIDTH)
    f = a[:, :2].view(np.float32)
    u = a[:, 3:5].view(np.uint32).astype(np.uint64)
    return [(float(f[i, 0]), float(f[i, 1]), int(a[i, 2]), int(u[i, 0]) | (int(u[i, 1]) << 32))
            for i in range(a.shape[0])]
