"""NumPy references for every kernel (float64 math on float32/float64 inputs).

They define the functions the CUDA kernels compute, including the padding conventions.
Inputs are NumPy arrays (bf16/fp16 data converted to float32 by the caller).
"""

from __future__ import annotations

import numpy as np

from cgraph.core.errors import ArgumentError


def embedding(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """out[t] = table[ids[t]]; ids outside [0, V) give zero rows."""
    ids = np.asarray(ids)
    out = np.zeros((ids.shape[0], table.shape[1]), dtype=np.float64)
    ok = (ids >= 0) & (ids < table.shape[0])
    out[ok] = table[ids[ok]]
    return out


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, residual: np.ndarray | None = None,
             round_to=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(out, new_residual). With a residual, z = x + residual (rounded by `round_to`, the
    storage dtype's rounding, as the kernel stores it), out = z / rms(z) * w."""
    x = x.astype(np.float64)
    new_res = None
    if residual is not None:
        z = x + residual.astype(np.float64)
        if round_to is not None:
            z = round_to(z)
        new_res = z
        x = z
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * inv * weight.astype(np.float64), new_res


def cos_sin_cache(max_pos: int, head_size: int, base: float = 10000.0) -> np.ndarray:
    """[max_pos, D] float32 = [cos(p * f_i) | sin(p * f_i)], f_i = base^(-2i/D), i < D/2."""
    if head_size % 2:
        raise ArgumentError(f"head_size must be even for rotary embedding, got {head_size}")
    inv_freq = 1.0 / (base ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size))
    freqs = np.outer(np.arange(max_pos, dtype=np.float64), inv_freq)
    return np.concatenate([np.cos(freqs), np.sin(freqs)], axis=-1).astype(np.float32)


def rotary_embedding(positions: np.ndarray, x: np.ndarray, cache: np.ndarray, head_size: int) -> np.ndarray:
    """Neox rotary on x [T, H*D] (returns a new array); positions outside the cache leave rows as is."""
    t, width = x.shape
    out = x.astype(np.float64).copy()
    xs = out.reshape(t, width // head_size, head_size)
    half = head_size // 2
    ok = (positions >= 0) & (positions < cache.shape[0])
    cs = cache[np.where(ok, positions, 0)].astype(np.float64)
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    x1, x2 = xs[..., :half].copy(), xs[..., half:].copy()
    r1 = x1 * cos - x2 * sin
    r2 = x2 * cos + x1 * sin
    xs[ok, :, :half] = r1[ok]
    xs[ok, :, half:] = r2[ok]
    return out


def silu_and_mul(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    i = x.shape[-1] // 2
    a, b = x[..., :i], x[..., i:]
    return a / (1.0 + np.exp(-a)) * b


def gemm(a: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    out = a.astype(np.float64) @ w.astype(np.float64).T
    if bias is not None:
        out = out + bias.astype(np.float64)
    return out


def reshape_and_cache(k: np.ndarray, v: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                      slot_mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New caches with token t's k/v at slot_mapping[t]; slots < 0 (or past the cache) skipped."""
    kc, vc = k_cache.copy(), v_cache.copy()
    nb, bs = kc.shape[:2]
    for t, slot in enumerate(np.asarray(slot_mapping)):
        if 0 <= slot < nb * bs:
            kc[slot // bs, slot % bs] = k[t]
            vc[slot // bs, slot % bs] = v[t]
    return kc, vc


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """q [Hq, D], k/v [n, Hkv, D] -> [Hq, D] (GQA: query head h uses kv head h // (Hq/Hkv))."""
    hq, hkv = q.shape[0], k.shape[1]
    kk = np.repeat(k, hq // hkv, axis=1).astype(np.float64)
    vv = np.repeat(v, hq // hkv, axis=1).astype(np.float64)
    s = np.einsum("hd,nhd->hn", q.astype(np.float64), kk) * scale
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    return np.einsum("hn,nhd->hd", p, vv)


def paged_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, num_seqs, scale):
    """Causal attention of each query row over its sequence's paged keys (see API.md)."""
    t_rows = q.shape[0]
    out = np.zeros(q.shape, dtype=np.float64)
    bs = k_cache.shape[1]
    qsl = np.asarray(query_start_loc)
    for s in range(int(num_seqs)):
        q_len = qsl[s + 1] - qsl[s]
        for j in range(q_len):
            t = qsl[s] + j
            if t >= t_rows:
                continue
            n = int(seq_lens[s]) - q_len + j + 1
            if n <= 0:
                continue
            keys = np.arange(n)
            blocks = np.asarray(block_tables)[s, keys // bs]
            out[t] = _attend(q[t], k_cache[blocks, keys % bs], v_cache[blocks, keys % bs], scale)
    return out


def varlen_attention(q, k, v, cu_seqlens, causal: bool, scale: float):
    """Attention within each [cu[i], cu[i+1]) segment; rows past cu[-1] are zeros."""
    out = np.zeros(q.shape, dtype=np.float64)
    cu = np.asarray(cu_seqlens)
    for i in range(len(cu) - 1):
        a, b = int(cu[i]), int(cu[i + 1])
        for t in range(a, b):
            end = t + 1 if causal else b
            out[t] = _attend(q[t], k[a:end], v[a:end], scale)
    return out


def feed_tokens(input_ids: np.ndarray, token_source: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """New ids: sampled[source] where 0 <= source < len(sampled), else the old id."""
    ids = np.array(input_ids, copy=True)
    ok = (token_source >= 0) & (token_source < len(sampled))
    ids[ok] = np.asarray(sampled)[token_source[ok]]
    return ids


def advance_decode(positions: np.ndarray, seq_lens: np.ndarray, slot_mapping: np.ndarray,
                   token_source: np.ndarray, block_tables: np.ndarray, num_seqs: int,
                   block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions, seq_lens, slot_mapping, token_source) of the next decode step of the same
    sequences: live rows move one position on; rows past num_seqs are unchanged."""
    pos, lens, slots, source = (np.array(a, copy=True) for a in (positions, seq_lens, slot_mapping, token_source))
    n = min(int(num_seqs), len(pos))
    rows = np.arange(n)
    p = pos[:n] + 1
    b = p // block_size
    inside = b < block_tables.shape[1]
    pos[:n], lens[:n], source[:n] = p, p + 1, rows
    slots[:n] = np.where(inside, block_tables[rows, np.minimum(b, block_tables.shape[1] - 1)] * block_size
                         + p % block_size, -1)
    return pos, lens, slots, source


def decode_loop_step(history: np.ndarray, next_tokens: np.ndarray, positions: np.ndarray, seq_lens: np.ndarray,
                     slot_mapping: np.ndarray, token_source: np.ndarray, block_tables: np.ndarray, num_seqs: int,
                     stop_ids: np.ndarray, done: np.ndarray, count: int, limit: int, block_size: int) -> dict:
    """The state after one iteration of a multi-step decode loop (kernels.decode_loop_step):
    history, sampled, the advanced metadata, done, count and pred."""
    hist = np.array(history, copy=True)
    tok = np.asarray(next_tokens)
    if 0 <= count < hist.shape[0]:
        hist[count] = tok
    pos, lens, slots, source = advance_decode(positions, seq_lens, slot_mapping, token_source, block_tables,
                                              num_seqs, block_size)
    n = min(int(num_seqs), len(tok))
    d = np.array(done, copy=True)
    d[:n] |= (np.asarray(stop_ids)[:n] == tok[:n, None]).any(axis=1).astype(d.dtype)
    running = bool((d[:n] == 0).any())
    return {"history": hist, "sampled": tok.copy(), "positions": pos, "seq_lens": lens, "slot_mapping": slots,
            "token_source": source, "done": d, "count": count + 1, "pred": int(count + 1 < limit and running)}


def argmax(logits: np.ndarray) -> np.ndarray:
    return np.argmax(logits, axis=-1).astype(np.int32)


def unfold_patches(image: np.ndarray, patch: int) -> np.ndarray:
    """[C, H, W] -> [(H/p)*(W/p), C*p*p]: patches in row-major order, features (c, y, x)."""
    c, h, w = image.shape
    x = image.reshape(c, h // patch, patch, w // patch, patch)
    return x.transpose(1, 3, 0, 2, 4).reshape((h // patch) * (w // patch), c * patch * patch)
