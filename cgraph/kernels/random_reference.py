"""NumPy references of the random kernels (kernels/random.cu, the sampler in kernels/sampling.cu).

Pure (NumPy only) and bit-exact: the device computes the same integers and floats.

- :func:`philox4x32`: the Philox4x32-10 block function (Salmon et al., SC'11), vectorized.
- :func:`stream_words` / :func:`stream_uniform`: a Generator's stream at an offset: value i
  is word i % 4 of counter block (offset + i // 4), counter [block lo, block hi, 0, 0],
  key = the 64-bit seed; uniforms are (word >> 8) * 2^-24.
- :func:`sample_row`: the sampling kernel's pick for one row given its 64 random bits,
  and :func:`kept_tokens`, the set it may pick from (see kernels/sampling.cu for the rules).
- :func:`row_bits` / :func:`generator_bits`: those 64 bits, for the engine's per-row draws
  (key = request seed, counter = [position, 0, 0, "SAMP"]) and a Generator's sample().
"""

from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)
#: counter word 3 of the engine's per-position draws ("SAMP").
SAMPLE_TAG = 0x53414D50
#: weight scale: a token at the row's largest logit weighs 2^40.
WEIGHT_BITS = 40
# log2(e) and the coefficients of 2^f (highest power first), float32, as in kernels/sampling.cu
_LOG2E = np.float32(float.fromhex("0x1.715476p+0"))
_POLY = tuple(np.float32(float.fromhex(h)) for h in (
    "0x1.62c022p-20", "0x1.ffcbfcp-17", "0x1.430912p-13", "0x1.5d87fep-10", "0x1.3b2ab6p-7",
    "0x1.c6b08ep-5", "0x1.ebfbep-3", "0x1.62e43p-1", "0x1.0p+0"))


def philox4x32(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of counters [N, 4] (uint32) under key (k0, k1): [N, 4] uint32."""
    c = [np.asarray(counter, np.uint64).reshape(-1, 4)[:, j].copy() for j in range(4)]
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
        p0, p1 = _M0 * c[0], _M1 * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & _MASK,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & _MASK]
    return np.stack(c, axis=1).astype(np.uint32)


def _split(value: int) -> tuple[int, int]:
    return int(value) & 0xFFFFFFFF, (int(value) >> 32) & 0xFFFFFFFF


def _blocks(first: int, count: int) -> np.ndarray:
    b = (np.arange(count, dtype=np.uint64) + np.uint64(first & (2**64 - 1)))  # wraps like the device
    return np.stack([b & _MASK, b >> np.uint64(32), np.zeros_like(b), np.zeros_like(b)], axis=1)


def stream_words(seed: int, offset: int, n: int) -> np.ndarray:
    """The n uint32 words a Generator(seed) at `offset` (counter blocks) draws."""
    blocks = -(-int(n) // 4)
    return philox4x32(_blocks(offset, blocks), _split(seed)).reshape(-1)[:n]


def stream_uniform(seed: int, offset: int, n: int) -> np.ndarray:
    """The n float32 uniforms in [0, 1) a Generator(seed) at `offset` draws."""
    return ((stream_words(seed, offset, n) >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24))


def row_bits(seeds: np.ndarray, positions: np.ndarray) -> list[int]:
    """The 64 random bits of each engine row: key = seed, counter [position, 0, 0, SAMPLE_TAG]."""
    out = []
    for seed, pos in zip(np.asarray(seeds).tolist(), np.asarray(positions).tolist()):
        w = philox4x32(np.array([[int(pos) & 0xFFFFFFFF, 0, 0, SAMPLE_TAG]], np.uint64), _split(seed))[0]
        out.append(int(w[0]) | (int(w[1]) << 32))
    return out


def generator_bits(seed: int, offset: int, rows: int) -> list[int]:
    """The 64 random bits of each row of Generator(seed).sample at `offset`: block offset + row."""
    w = philox4x32(_blocks(offset, rows), _split(seed))
    return [int(a) | (int(b) << 32) for a, b in zip(w[:, 0], w[:, 1])]


def exp_weight(x: np.ndarray) -> np.ndarray:
    """trunc(e^x * 2^40) as uint64 for float32 x <= 0, computed as the kernel does (0 below 2^-30)."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        y = x * _LOG2E
        ok = y >= np.float32(-30.0)
        y = np.where(ok, y, np.float32(0.0)).astype(np.float32)
        n = np.floor(y).astype(np.float32)
        f = (y - n).astype(np.float32)
        p = _POLY[0]
        for c in _POLY[1:]:
            p = (p * f).astype(np.float32) + c
            p = p.astype(np.float32)
        scaled = np.ldexp(p, (n.astype(np.int32) + WEIGHT_BITS)).astype(np.float32)
    return np.where(ok, scaled.astype(np.uint64), np.uint64(0))


def ordered_key(v: np.ndarray) -> np.ndarray:
    """float32 -> uint32 keys in the floats' order (the kernel's top-k key)."""
    b = np.asarray(v, np.float32).view(np.uint32)
    return np.where(b & np.uint32(0x80000000), ~b, b | np.uint32(0x80000000)).astype(np.uint64)


def _threshold(keys: np.ndarray, weights: np.ndarray, target: int) -> int:
    """The largest t with sum(weights[keys >= t]) >= target (radix_threshold of the kernel)."""
    keep = weights > 0
    k, w = keys[keep], weights[keep]
    order = np.argsort(-k.astype(np.float64), kind="stable") if k.size else k
    k, w = k[order], w[order]
    cum = np.cumsum(w, dtype=np.uint64)  # < 2^63: at most 2^22 tokens of weight <= 2^41
    return int(k[int(np.argmax(cum >= np.uint64(target)))])


def kept_tokens(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """(weights, kept) of one row: each token's integer weight and whether the sampler may
    pick it (kept tokens have weight > 0). temperature must be > 0."""
    x = np.asarray(logits, np.float32).reshape(-1)
    valid = ~np.isnan(x)
    m = np.float32(x[valid].max()) if valid.any() else np.float32(-np.inf)
    inv_t = np.float32(1.0) / np.float32(temperature)
    keys = ordered_key(x)
    kth = 0
    if 0 < top_k < int(valid.sum()):
        kth = _threshold(keys, valid.astype(np.uint64), int(top_k))
    with np.errstate(invalid="ignore"):
        w = exp_weight(((x - m).astype(np.float32) * inv_t).astype(np.float32))
    w = np.where(valid & (keys >= kth), w, np.uint64(0))
    mass = int(w.sum(dtype=np.uint64))
    tq = 0
    if np.float32(top_p) < np.float32(1.0) and mass > 0:
        target = int(np.ceil(np.float64(np.float32(top_p)) * np.float64(mass)))
        target = max(1, min(target, mass))
        tq = _threshold(w, w, target)
    kept = (w >= tq) & (w > 0)
    return np.where(kept, w, np.uint64(0)), kept


def sample_row(logits: np.ndarray, temperature: float, top_k: int, top_p: float, bits: int) -> int:
    """The token the sampling kernel picks for one row, given its 64 random bits."""
    x = np.asarray(logits, np.float32).reshape(-1)
    if not temperature > 0:
        return _argmax(x)
    w, _ = kept_tokens(x, temperature, top_k, top_p)
    cum = np.cumsum(w, dtype=np.uint64)
    mass = int(cum[-1]) if cum.size else 0
    if mass == 0:
        return _argmax(x)
    r = (mass * (int(bits) & (2**64 - 1))) >> 64  # floor(mass * u), u = bits / 2^64
    return int(np.argmax(cum > np.uint64(r)))


def _argmax(x: np.ndarray) -> int:
    """The argmax kernel's pick: first largest, NaN ignored, 0 when every entry is NaN."""
    valid = ~np.isnan(x)
    if not valid.any():
        return 0
    return int(np.argmax(np.where(valid, x, -np.inf))) if np.nanmax(x) > -np.inf else int(np.argmax(valid))
