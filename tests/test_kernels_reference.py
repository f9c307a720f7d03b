"""The NumPy references themselves (CPU): properties, and the attention references against a
naive implementation written independently here (explicit loops over queries and keys,
softmax in float64), which a reference that drops or adds a key cannot pass.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.kernels import reference as ref

RNG = np.random.default_rng()


# ------------------------------------------------------------------ naive attention
def naive_attend(q_row: np.ndarray, keys: list[np.ndarray], values: list[np.ndarray], scale: float) -> np.ndarray:
    """q_row [Hq, D]; keys/values: one [Hkv, D] array per key. Query head h reads KV head
    h // (Hq / Hkv) (GQA). Returns [Hq, D]."""
    hq = q_row.shape[0]
    out = np.zeros(q_row.shape)
    if not keys:
        return out
    group = hq // keys[0].shape[0]
    for h in range(hq):
        kvh = h // group
        scores = [scale * sum(float(q_row[h, i]) * float(key[kvh, i]) for i in range(q_row.shape[1])) for key in keys]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = math.fsum(weights)
        for w, val in zip(weights, values):
            out[h] += (w / total) * val[kvh]
    return out


def naive_varlen(q, k, v, cu, causal: bool, scale: float) -> np.ndarray:
    out = np.zeros(q.shape)
    for seg in range(len(cu) - 1):
        start, end = int(cu[seg]), int(cu[seg + 1])
        for t in range(start, end):
            last = t if causal else end - 1  # the last key this query sees
            idx = list(range(start, last + 1))
            out[t] = naive_attend(q[t], [k[i] for i in idx], [v[i] for i in idx], scale)
    return out


def naive_paged(q, k_cache, v_cache, tables, seq_lens, qsl, num_seqs: int, scale: float) -> np.ndarray:
    out = np.zeros(q.shape)
    bs = k_cache.shape[1]
    for s in range(num_seqs):
        q_len = int(qsl[s + 1] - qsl[s])
        for j in range(q_len):
            t = int(qsl[s]) + j
            pos = int(seq_lens[s]) - q_len + j  # this query's position: it sees keys 0..pos
            keys = [k_cache[tables[s, p // bs], p % bs] for p in range(pos + 1)]
            vals = [v_cache[tables[s, p // bs], p % bs] for p in range(pos + 1)]
            out[t] = naive_attend(q[t], keys, vals, scale)
    return out


def _heads():
    hkv = int(RNG.integers(1, 4))
    return hkv * int(RNG.choice([1, 2, 3])), hkv, int(RNG.integers(1, 9))


def _varlen_case():
    hq, hkv, d = _heads()
    lens = list(RNG.integers(0, 9, size=int(RNG.integers(1, 5)))) + [1]
    RNG.shuffle(lens)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    t = int(cu[-1]) + int(RNG.integers(0, 3))  # padding rows past the last segment
    return (RNG.standard_normal((t, hq, d)), RNG.standard_normal((t, hkv, d)), RNG.standard_normal((t, hkv, d)), cu,
            float(RNG.uniform(0.1, 1.0)))


def _paged_case():
    hq, hkv, d = _heads()
    bs, n_seq = int(RNG.integers(1, 5)), int(RNG.integers(1, 5))
    ctx = RNG.integers(1, 14, size=n_seq)
    q_lens = np.array([int(RNG.integers(0, c + 1)) for c in ctx])
    max_blocks = int(-(-ctx.max() // bs))
    nb = n_seq * max_blocks + 3
    tables = RNG.permutation(nb)[:n_seq * max_blocks].reshape(n_seq, max_blocks).astype(np.int32)
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    t = int(qsl[-1]) + int(RNG.integers(0, 3))
    num_seqs = int(RNG.integers(1, n_seq + 1))  # sequences past num_seqs are padding
    return (RNG.standard_normal((t, hq, d)), RNG.standard_normal((nb, bs, hkv, d)),
            RNG.standard_normal((nb, bs, hkv, d)), tables, ctx.astype(np.int32), qsl, num_seqs,
            float(RNG.uniform(0.1, 1.0)))


@pytest.mark.parametrize("trial", range(12))
@pytest.mark.parametrize("causal", [True, False])
def test_reference_varlen_attention_matches_the_naive_loops(trial, causal):
    q, k, v, cu, scale = _varlen_case()
    want = naive_varlen(q, k, v, cu, causal, scale)
    np.testing.assert_allclose(ref.varlen_attention(q, k, v, cu, causal, scale), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trial", range(12))
def test_reference_paged_attention_matches_the_naive_loops(trial):
    args = _paged_case()
    np.testing.assert_allclose(ref.paged_attention(*args), naive_paged(*args), rtol=1e-10, atol=1e-12)


def _mutant(fn, old: str, new: str):
    """A copy of reference function `fn` with `old` replaced by `new` in its source."""
    src = inspect.getsource(fn)
    assert old in src, f"{fn.__name__} no longer contains {old!r}"
    scope = dict(vars(ref))
    exec(compile(src.replace(old, new), f"<mutant {fn.__name__}>", "exec"), scope)  # noqa: S102 - a test of the test
    return scope[fn.__name__]


@pytest.mark.parametrize("fn, old, new, causal", [
    (ref.varlen_attention, "else b", "else b - 1", False),  # drops the last key of non-causal attention
    (ref.varlen_attention, "t + 1 if causal", "t + 2 if causal", True),  # adds a key past the causal limit
    (ref.paged_attention, "- q_len + j + 1", "- q_len + j", None),  # drops the query's own key
])
def test_the_naive_check_catches_a_reference_with_one_key_wrong(fn, old, new, causal):
    broken = _mutant(fn, old, new)
    caught = 0
    for _ in range(5):  # a random case may lack a segment the mutation changes; five rarely all do
        if causal is None:
            args = _paged_case()
            want, run = naive_paged(*args), lambda a=args: broken(*a)
        else:
            q, k, v, cu, scale = _varlen_case()
            want = naive_varlen(q, k, v, cu, causal, scale)
            run = lambda a=(q, k, v, cu, causal, scale): broken(*a)  # noqa: E731
        try:
            with np.errstate(all="ignore"):
                got = run()
        except ValueError:  # a query left with no key at all: the mutant crashes, also caught
            caught += 1
            continue
        caught += not np.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert caught >= 1, "the naive comparison did not notice a key added or dropped"


# ------------------------------------------------------------------ other references
def test_reference_rotary_is_a_rotation_and_skips_bad_positions():
    t, d = 9, 16
    cache = ref.cos_sin_cache(64, d)
    x = RNG.standard_normal((t, 3 * d))
    pos = RNG.integers(0, 64, size=t).astype(np.int32)
    pos[2] = -1
    y = ref.rotary_embedding(pos, x, cache, d)
    pair_norm = lambda a: np.hypot(a.reshape(t, 3, d)[..., : d // 2], a.reshape(t, 3, d)[..., d // 2:])  # noqa: E731
    np.testing.assert_allclose(pair_norm(y), pair_norm(x), rtol=1e-6)
    np.testing.assert_array_equal(y[2], x[2])
    zero = ref.rotary_embedding(np.zeros(t, np.int32), x, cache, d)
    np.testing.assert_allclose(zero, x, rtol=1e-12)


def test_reference_unfold_patches_matches_explicit_loop():
    c, p = 3, 4
    img = RNG.standard_normal((c, 8, 12))
    got = ref.unfold_patches(img, p)
    rows = [img[:, y * p:(y + 1) * p, x * p:(x + 1) * p].reshape(-1) for y in range(2) for x in range(3)]
    np.testing.assert_array_equal(got, np.stack(rows))
    np.testing.assert_array_equal(K.unfold_patches(img, p), got)


def test_reference_rms_norm_with_residual_returns_sum():
    x, r, w = RNG.standard_normal((3, 10)), RNG.standard_normal((3, 10)), RNG.standard_normal(10)
    out, new_r = ref.rms_norm(x, w, 1e-6, residual=r)
    np.testing.assert_allclose(new_r, x + r)
    z = x + r
    np.testing.assert_allclose(out, z / np.sqrt((z ** 2).mean(-1, keepdims=True) + 1e-6) * w)


def test_reference_embedding_zero_rows_for_out_of_range_ids():
    table = RNG.standard_normal((5, 4))
    out = ref.embedding(np.array([0, 4, -1, 5, 2], np.int32), table)
    np.testing.assert_array_equal(out[[0, 1, 4]], table[[0, 4, 2]])
    assert not out[[2, 3]].any()


def test_reference_feed_tokens_takes_sampled_rows_in_range_only():
    ids = np.array([5, 6, 7, 8, 9], np.int32)
    got = ref.feed_tokens(ids, np.array([-1, 0, 2, 3, 1], np.int32), np.array([40, 41, 42], np.int32))
    np.testing.assert_array_equal(got, [5, 40, 42, 8, 41])
    np.testing.assert_array_equal(ids, [5, 6, 7, 8, 9]), "the input is not modified"
