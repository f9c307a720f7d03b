"""Launcher argument checks (no device needed), GEMM planning and the NumPy references.

The launchers validate shapes, dtypes and strides before touching the device, so NumPy
arrays stand in for device arrays here: a bad argument raises ValueError/TypeError naming
it; a good one gets as far as the device check, which rejects host memory with TypeError.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.kernels import reference as ref
from cgraph.kernels.gemm_plan import (STREAM_BM, STREAM_BN, STREAM_MAX_M, STREAM_WARPS, TILES, WGMMA_SPLITS,
                                      WGMMA_TILES, plan_gemm, tile_smem_bytes, wgmma_smem_bytes)
from cgraph.kernels.tensor_map import encode_2d

RNG = np.random.default_rng()


def h(shape, dtype=np.float16):
    return RNG.standard_normal(shape).astype(dtype)


def i32(shape):
    return RNG.integers(0, 10, size=shape).astype(np.int32)


def reaches_device(fn):
    """A call whose arguments are valid fails only at the host-memory check."""
    with pytest.raises(TypeError, match="CuPy array on the GPU"):
        fn()


# ------------------------------------------------------------------ launcher argument checks
def test_valid_arguments_reach_the_device_check():
    reaches_device(lambda: K.embedding(i32(5), h((10, 8)), out=h((5, 8))))
    reaches_device(lambda: K.rms_norm(h((4, 8)), h(8), 1e-6, out=h((4, 8)), residual=h((4, 8))))
    reaches_device(lambda: K.silu_and_mul(h((3, 16)), out=h((3, 8))))
    reaches_device(lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((3, 5)), bias=h(5)))
    reaches_device(lambda: K.argmax(h((2, 50)), out=i32(2)))
    qkv = h((6, 3 * 2 * 8))
    reaches_device(lambda: K.rotary_embedding(i32(6), qkv[:, :16], qkv[:, 16:32],
                                              np.zeros((20, 8), np.float32), head_size=8))


@pytest.mark.parametrize("call, err, pattern", [
    (lambda: K.embedding(i32(5).astype(np.int64), h((10, 8)), out=h((5, 8))), TypeError, "ids has dtype int64"),
    (lambda: K.embedding(i32(5), h((10, 8)), out=h((5, 9))), ValueError, r"out has shape \[5, 9\]"),
    (lambda: K.embedding(i32(5), h((10, 8)), out=h((5, 8), np.float32)), TypeError, "out has dtype float32"),
    (lambda: K.rms_norm(h((4, 8)), h(7), 1e-6, out=h((4, 8))), ValueError, "weight has shape"),
    (lambda: K.rms_norm(h((4, 8)), h(8), 1e-6, out=h((4, 8)), residual=h((3, 8))), ValueError, "residual has shape"),
    (lambda: K.rms_norm(h((4, 8)), h(8), -1.0, out=h((4, 8))), ValueError, "eps"),
    (lambda: K.rms_norm(h((4, 8)).T, h(4), 1e-6, out=h((8, 4))), ValueError, "C-contiguous"),
    (lambda: K.rms_norm(h((4, 8)).astype(np.float64), h(8, np.float64), 1e-6, out=h((4, 8), np.float64)),
     TypeError, "x has dtype float64"),
    (lambda: K.silu_and_mul(h((3, 15)), out=h((3, 7))), ValueError, "even last dim"),
    (lambda: K.silu_and_mul(h((3, 16)), out=h((3, 16))), ValueError, r"expected \[3, 8\]"),
    (lambda: K.gemm(h((3, 16)), h((5, 17)), out=h((3, 5))), ValueError, "K=17 must equal"),
    (lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((5, 3))), ValueError, r"expected \[3, 5\]"),
    (lambda: K.gemm(h((3, 16), np.float32), h((5, 16), np.float32), out=h((3, 5), np.float32)),
     TypeError, "float16, bfloat16"),
    (lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((3, 5)), bias=h(3)), ValueError, "bias has shape"),
    (lambda: K.gemm(h((3, 32))[:, ::2], h((5, 16)), out=h((3, 5))), ValueError, "a must be C-contiguous"),
    (lambda: K.argmax(h((2, 50)), out=i32(3)), ValueError, "out has shape"),
    (lambda: K.argmax(h((2, 50)), out=h(2)), TypeError, "out has dtype float16"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), np.zeros((20, 8), np.float32), head_size=7),
     ValueError, "even"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), np.zeros((20, 8), np.float16), head_size=8),
     TypeError, "cos_sin_cache has dtype float16"),
    (lambda: K.rotary_embedding(i32(6), h((6, 12)), h((6, 16)), np.zeros((20, 8), np.float32), head_size=8),
     ValueError, "not a multiple of head_size"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), np.zeros((20, 6), np.float32), head_size=8),
     ValueError, "cos_sin_cache has shape"),
    (lambda: K.rotary_embedding(i32(6), h((6, 4, 8))[:, :, ::2], h((6, 16)), np.zeros((20, 4), np.float32),
                                head_size=4), ValueError, "contiguous within each row"),
])
def test_bad_arguments_raise_clear_errors(call, err, pattern):
    with pytest.raises(err, match=pattern):
        call()


def _paged_args(t=4, hq=8, hkv=2, d=64, s=3, nb=6, bs=16, max_blocks=4):
    return dict(q=h((t, hq, d)), k_cache=h((nb, bs, hkv, d)), v_cache=h((nb, bs, hkv, d)), out=h((t, hq, d)),
                block_tables=i32((s, max_blocks)), seq_lens=i32(s), query_start_loc=i32(s + 1),
                num_seqs=i32(1), max_query_len=1, scale=0.125)


def test_paged_attention_valid_arguments_reach_device():
    args = _paged_args()
    reaches_device(lambda: K.paged_attention(args.pop("q"), args.pop("k_cache"), args.pop("v_cache"), **args))


@pytest.mark.parametrize("change, err, pattern", [
    (dict(q=h((4, 6, 64))), ValueError, r"out has shape"),
    (dict(q=h((4, 7, 64)), out=h((4, 7, 64))), ValueError, "multiple of KV heads"),
    (dict(seq_lens=i32(4)), ValueError, "seq_lens has shape"),
    (dict(query_start_loc=i32(3)), ValueError, "query_start_loc has shape"),
    (dict(num_seqs=i32(2)), ValueError, "num_seqs has shape"),
    (dict(block_tables=i32((3, 4)).astype(np.int64)), TypeError, "block_tables has dtype int64"),
    (dict(max_query_len=0), ValueError, "max_query_len"),
    (dict(k_cache=h((6, 16, 2, 32))), ValueError, "D=64"),
    (dict(v_cache=h((6, 8, 2, 64))), ValueError, "v_cache has shape"),
])
def test_paged_attention_bad_arguments(change, err, pattern):
    args = _paged_args()
    args.update(change)
    with pytest.raises(err, match=pattern):
        K.paged_attention(args.pop("q"), args.pop("k_cache"), args.pop("v_cache"), **args)


def test_varlen_and_cache_argument_checks():
    q, k, v, out = h((9, 4, 64)), h((9, 2, 64)), h((9, 2, 64)), h((9, 4, 64))
    reaches_device(lambda: K.varlen_attention(q, k, v, out=out, cu_seqlens=i32(3), max_seqlen=9,
                                              causal=True, scale=0.1))
    with pytest.raises(ValueError, match="v has shape"):
        K.varlen_attention(q, k, h((9, 1, 64)), out=out, cu_seqlens=i32(3), max_seqlen=9, causal=True, scale=0.1)
    with pytest.raises(ValueError, match="cu_seqlens must be"):
        K.varlen_attention(q, k, v, out=out, cu_seqlens=i32(1), max_seqlen=9, causal=False, scale=0.1)
    kc = h((5, 16, 2, 64))
    reaches_device(lambda: K.reshape_and_cache(k, v, kc, h((5, 16, 2, 64)), i32(9)))
    with pytest.raises(ValueError, match=r"k has shape \[9, 2, 64\]; expected \[8, 2, 64\]"):
        K.reshape_and_cache(k, v, kc, h((5, 16, 2, 64)), i32(8))
    with pytest.raises(TypeError, match="v_cache has dtype float32"):
        K.reshape_and_cache(k, v, kc, h((5, 16, 2, 64), np.float32), i32(9))


# ------------------------------------------------------------------ GEMM planning
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 16, 17, 64, 65, 128, 512, 2048])
@pytest.mark.parametrize("n, k", [(1024, 1024), (4096, 1024), (1024, 4096), (11008, 4096), (7, 40)])
def test_gemm_plan_covers_the_output_and_all_of_k(m, n, k):
    plan = plan_gemm(m, n, k, aligned=True, sm_count=132, cluster=True)
    if plan.kind == "gemv":
        assert m <= 4 and plan.grid[0] * 8 >= n
        return
    if plan.kind == "stream":
        assert plan.kernel == "m8" and m <= STREAM_MAX_M and plan.grid[0] * STREAM_BN >= n
        assert plan.block // 32 in STREAM_WARPS and plan.smem == plan.block // 32 * STREAM_BM * STREAM_BN * 4
        return
    tile, split = plan.kernel.split("_s")
    bm, bn, bk, warps, _ = TILES[tile]
    assert plan.grid[0] * bn >= n and plan.grid[1] * bm >= m
    assert plan.grid[2] == int(split) and plan.ktiles_per_split * int(split) >= math.ceil(k / bk)
    assert plan.block == warps * 32 and plan.smem == tile_smem_bytes(tile) <= 227 * 1024
    assert bm % int(split) == 0, "each CTA of a cluster must own whole rows of the tile"


def test_gemm_plan_split_only_with_clusters_and_fallback_when_unaligned():
    assert plan_gemm(16, 1024, 4096, aligned=True, sm_count=132, cluster=False, tile="t16").kernel.endswith("_s1")
    assert plan_gemm(16, 1024, 4096, aligned=True, sm_count=132, cluster=True, tile="t16").grid[2] > 1
    assert plan_gemm(64, 1024, 4096, aligned=True, sm_count=132, cluster=False).kernel.endswith("_s1")
    assert plan_gemm(64, 1024, 4096, aligned=True, sm_count=132, cluster=True).grid[2] > 1
    with pytest.raises(ValueError, match="M <= 32"):
        plan_gemm(33, 1024, 4096, aligned=True, sm_count=132, cluster=True, streaming=True)
    with pytest.raises(ValueError, match="warps"):
        plan_gemm(8, 1024, 4096, aligned=True, sm_count=132, cluster=True, streaming=True, warps=3)
    assert plan_gemm(100, 768, 588, aligned=False, sm_count=132, cluster=True).kind == "fallback"
    with pytest.raises(ValueError, match="clusters"):
        plan_gemm(16, 1024, 4096, aligned=True, sm_count=108, cluster=False, tile="t16", split=4)
    with pytest.raises(ValueError, match="tile"):
        plan_gemm(16, 1024, 4096, aligned=True, sm_count=108, cluster=True, tile="t48")


@pytest.mark.parametrize("m", [33, 65, 100, 128, 129, 512, 2048, 4096])
@pytest.mark.parametrize("n, k", [(1024, 1024), (4096, 1024), (1024, 4096), (11008, 4096), (7, 40)])
@pytest.mark.parametrize("sms", [114, 132])
def test_wgmma_plan_covers_the_output_and_all_of_k(m, n, k, sms):
    plan = plan_gemm(m, n, k, aligned=True, sm_count=sms, cluster=True, wgmma=True)
    assert plan.kind == "wgmma"
    tile, split = plan.kernel.split("_s")
    bm, bn, _ = WGMMA_TILES[tile]
    split = int(split)
    assert split in WGMMA_SPLITS and bm % split == 0, "each CTA of a cluster must own whole rows"
    assert plan.grid == (math.ceil(n / bn), math.ceil(m / bm), split)
    assert plan.ktiles_per_split * split >= math.ceil(k / 64)
    assert plan.block == 2 * bm + 32, "a warpgroup per 64 rows and the producer warp"
    assert plan.smem == wgmma_smem_bytes(tile) <= 227 * 1024
    # a split never pushes the grid past one CTA per multiprocessor
    assert split == 1 or plan.grid[0] * plan.grid[1] * split <= sms


@pytest.mark.parametrize("n, k", [(1024, 1024), (4096, 1024), (11008, 4096), (520, 768)])
def test_gemm_plan_depends_on_m_only_through_its_row_tiles(n, k):
    # padding a batch up to a capture size must not change any row's kernel or K split: the
    # plan may change only at M = 4, 16, 32, 64 and multiples of 128 (all capture sizes)
    ranges = {False: ((5, 16), (17, 32), (33, 64), (65, 128), (129, 256), (257, 384)),
              True: ((5, 32), (33, 128), (129, 256), (257, 384))}
    for wgmma, spans in ranges.items():
        for lo, hi in spans:
            plans = {plan_gemm(m, n, k, aligned=True, sm_count=132, cluster=True, wgmma=wgmma).kernel
                     for m in range(lo, hi + 1)}
            assert len(plans) == 1, (wgmma, lo, hi, plans)
            if wgmma and lo == 5:
                streamed = plans == {"m8"}
                # wgmma from M = 5 when the streaming kernel does not serve (N, K)
                assert streamed or plans == {plan_gemm(100, n, k, aligned=True, sm_count=132,
                                                       cluster=True, wgmma=True).kernel}


def test_wgmma_plan_only_where_the_device_runs_it():
    kw = dict(aligned=True, sm_count=132, cluster=True)
    assert plan_gemm(4, 11008, 4096, wgmma=True, **kw).kind == "gemv"
    assert plan_gemm(5, 11008, 4096, wgmma=True, **kw).kind == "wgmma"
    assert plan_gemm(8, 4096, 1024, wgmma=True, **kw).kind == "stream"
    assert plan_gemm(33, 4096, 1024, wgmma=True, **kw).kind == "wgmma"
    assert plan_gemm(100, 4096, 1024, wgmma=False, **kw).kind == "tile"
    assert plan_gemm(16, 4096, 1024, wgmma=True, tile="t16", **kw).kind == "tile"
    assert plan_gemm(100, 4096, 1026, wgmma=True, aligned=False, sm_count=132, cluster=True).kind == "fallback"
    assert plan_gemm(8, 512, 64, wgmma=True, tile="w128x64s8", **kw).kind == "wgmma"
    with pytest.raises(ValueError, match="compute capability 9.0"):
        plan_gemm(100, 4096, 1024, tile="w128x128s6", **kw)
    with pytest.raises(ValueError, match="split must be one of"):
        plan_gemm(100, 4096, 1024, wgmma=True, tile="w128x128s6", split=8, **kw)


def test_wgmma_tile_choice_follows_the_output_size():
    kw = dict(aligned=True, sm_count=132, cluster=True, wgmma=True)
    assert plan_gemm(128, 4096, 1024, **kw).kernel.startswith("w128x64s8")  # 32 tiles of 128x128
    assert plan_gemm(128, 11008, 4096, **kw).kernel == "w128x128s6_s1"
    assert plan_gemm(2048, 11008, 4096, **kw).kernel.startswith("w128x256s4")
    assert plan_gemm(128, 1024, 1024, **kw).kernel == "w128x64s8_s4"  # 16 tiles: split K 4 ways


def test_tensor_map_rejects_what_the_tma_cannot_address():
    with pytest.raises(ValueError, match="16-byte aligned.*0x1002"):
        encode_2d(0x1002, 16, 64, 128)
    with pytest.raises(ValueError, match=r"cols % 8 == 0.*\[16, 60\]"):
        encode_2d(0x1000, 16, 60, 128)
    with pytest.raises(ValueError, match="box 300x64"):
        encode_2d(0x1000, 16, 64, 300)
    with pytest.raises(ValueError, match="box 64x32"):
        encode_2d(0x1000, 16, 64, 64, box_cols=32)


# ------------------------------------------------------------------ references
def test_reference_rotary_is_a_rotation_and_skips_bad_positions():
    t, d = 9, 16
    cache = ref.cos_sin_cache(64, d)
    x = RNG.standard_normal((t, 3 * d))
    pos = RNG.integers(0, 64, size=t).astype(np.int32)
    pos[2] = -1
    y = ref.rotary_embedding(pos, x, cache, d)
    pair_norm = lambda a: np.hypot(a.reshape(t, 3, d)[..., : d // 2], a.reshape(t, 3, d)[..., d // 2:])
    np.testing.assert_allclose(pair_norm(y), pair_norm(x), rtol=1e-6)
    np.testing.assert_array_equal(y[2], x[2])
    zero = ref.rotary_embedding(np.zeros(t, np.int32), x, cache, d)
    np.testing.assert_allclose(zero, x, rtol=1e-12)


def test_reference_paged_attention_matches_varlen_on_a_contiguous_layout():
    bs, hkv, hq, d = 4, 2, 6, 8
    lens = [5, 1, 9]
    kc, vc = RNG.standard_normal((8, bs, hkv, d)), RNG.standard_normal((8, bs, hkv, d))
    perm = RNG.permutation(8)
    tables = np.full((3, 3), -1, np.int32)
    k_rows, v_rows, used = [], [], 0
    for s, n in enumerate(lens):
        nblk = -(-n // bs)
        tables[s, :nblk] = perm[used:used + nblk]
        used += nblk
        keys = np.arange(n)
        k_rows.append(kc[tables[s, keys // bs], keys % bs])
        v_rows.append(vc[tables[s, keys // bs], keys % bs])
    q = RNG.standard_normal((sum(lens), hq, d))
    qsl = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    paged = ref.paged_attention(q, kc, vc, tables, np.array(lens, np.int32), qsl, 3, 0.3)
    varlen = ref.varlen_attention(q, np.concatenate(k_rows), np.concatenate(v_rows), qsl, True, 0.3)
    np.testing.assert_allclose(paged, varlen, rtol=1e-12)


def test_reference_unfold_patches_matches_explicit_loop():
    c, p = 3, 4
    img = RNG.standard_normal((c, 8, 12))
    got = ref.unfold_patches(img, p)
    rows = [img[:, y * p:(y + 1) * p, x * p:(x + 1) * p].reshape(-1) for y in range(2) for x in range(3)]
    np.testing.assert_array_equal(got, np.stack(rows))
    np.testing.assert_array_equal(K.unfold_patches(img, p), got)
    with pytest.raises(ValueError, match="patch=5"):
        K.unfold_patches(img, 5)


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
