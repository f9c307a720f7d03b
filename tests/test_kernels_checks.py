"""Launcher argument checks (no device needed), GEMM planning and tensor-map encoding.

The launchers validate shapes, dtypes, strides and addresses before touching the device,
so NumPy arrays stand in for device arrays here: a bad argument raises ArgumentError /
ArgumentTypeError naming it; a good one gets as far as the device check, which rejects
host memory last.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.core.errors import ArgumentError, ArgumentTypeError, CgraphError
from cgraph.kernels.gemm_plan import (STREAM_BM, STREAM_BN, STREAM_MAX_M, STREAM_WARPS, TILES, WGMMA_SPLIT_FILL,
                                      WGMMA_SPLITS, WGMMA_TILES, invariant_split, plan_gemm, tile_smem_bytes, wgmma_smem_bytes)
from cgraph.kernels.spec import Arr, Spec
from cgraph.kernels.tensor_map import encode_2d

RNG = np.random.default_rng()


def h(shape, dtype=np.float16):
    return RNG.standard_normal(shape).astype(dtype)


def i32(shape):
    return RNG.integers(0, 10, size=shape).astype(np.int32)


def at_offset(x: np.ndarray, nbytes: int) -> np.ndarray:
    """A copy of x whose first element sits `nbytes` past a 64-byte boundary (host memory)."""
    buf = np.zeros(x.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + nbytes
    view = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    view[...] = x
    return view


def reaches_device(fn):
    """A call whose arguments are valid fails only at the host-memory check."""
    with pytest.raises(ArgumentTypeError, match="CuPy array on the GPU"):
        fn()


# ------------------------------------------------------------------ launcher argument checks
def test_valid_arguments_reach_the_device_check():
    reaches_device(lambda: K.embedding(i32(5), h((10, 8)), out=h((5, 8))))
    reaches_device(lambda: K.rms_norm(h((4, 8)), h(8), 1e-6, out=h((4, 8)), residual=h((4, 8))))
    reaches_device(lambda: K.silu_and_mul(h((3, 16)), out=h((3, 8))))
    reaches_device(lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((3, 5)), bias=h(5)))
    reaches_device(lambda: K.patch_embed(h((3, 16)), h((5, 16)), out=h((3, 5))))
    reaches_device(lambda: K.argmax(h((2, 50)), out=i32(2)))
    reaches_device(lambda: K.feed_tokens(i32(7), i32(7), i32(3)))
    qkv = h((6, 3 * 2 * 8))
    reaches_device(lambda: K.rotary_embedding(i32(6), qkv[:, :16], qkv[:, 16:32],
                                              np.zeros((20, 8), np.float32), head_size=8))


def test_element_aligned_views_reach_the_device_check():
    # 2 bytes past a boundary is a whole fp16 element: the scalar kernels serve it
    reaches_device(lambda: K.rms_norm(at_offset(h((4, 8)), 2), h(8), 1e-6, out=at_offset(h((4, 8)), 2)))
    reaches_device(lambda: K.gemm(at_offset(h((3, 16)), 2), h((5, 16)), out=at_offset(h((3, 5)), 2),
                                  bias=at_offset(h(5), 6)))
    reaches_device(lambda: K.embedding(at_offset(i32(5), 4), h((10, 8)), out=h((5, 8))))


@pytest.mark.parametrize("call, err, pattern", [
    (lambda: K.embedding(i32(5).astype(np.int64), h((10, 8)), out=h((5, 8))), ArgumentTypeError, "ids has dtype int64"),
    (lambda: K.embedding(i32(5), h((10, 8)), out=h((5, 9))),
     ArgumentError, r"out has shape \[5, 9\]; expected \[5, 8\] \(= \[T, H\]; T from ids, H from table\)"),
    (lambda: K.embedding(i32(5), h((10, 8)), out=h((5, 8), np.float32)), ArgumentTypeError,
     "out has dtype float32 but must match table's dtype float16"),
    (lambda: K.embedding(i32(5), [[1.0]], out=h((5, 8))), ArgumentTypeError, "table must be an array"),
    (lambda: K.rms_norm(h((4, 8)), h(7), 1e-6, out=h((4, 8))), ArgumentError, "weight has shape"),
    (lambda: K.rms_norm(h((4, 8)), h(8), 1e-6, out=h((4, 8)), residual=h((3, 8))), ArgumentError, "residual has shape"),
    (lambda: K.rms_norm(h((4, 8)), h(8), -1.0, out=h((4, 8))), ArgumentError, "eps must be a float >= 0"),
    (lambda: K.rms_norm(h((4, 8)).T, h(4), 1e-6, out=h((8, 4))), ArgumentError, "C-contiguous"),
    (lambda: K.rms_norm(h((4, 8)).astype(np.float64), h(8, np.float64), 1e-6, out=h((4, 8), np.float64)),
     ArgumentTypeError, "x has dtype float64"),
    (lambda: K.rms_norm(h((4, 8, 2)), h(8), 1e-6, out=h((4, 8))), ArgumentError,
     r"x has shape \[4, 8, 2\]; expected 2 dims"),
    (lambda: K.silu_and_mul(h((3, 15)), out=h((3, 7))), ArgumentError, r"dim 1 is 15, not 2\*I"),
    (lambda: K.silu_and_mul(h((3, 16)), out=h((3, 16))), ArgumentError, r"expected \[3, 8\]"),
    (lambda: K.gemm(h((3, 16)), h((5, 17)), out=h((3, 5))), ArgumentError,
     r"w has shape \[5, 17\]; expected \[5, 16\] \(= \[N, K\]; N from w, K from a\) \(w is \[N, K\]"),
    (lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((5, 3))), ArgumentError, r"expected \[3, 5\]"),
    (lambda: K.gemm(h((3, 16), np.float32), h((5, 16), np.float32), out=h((3, 5), np.float32)),
     ArgumentTypeError, "float16, bfloat16"),
    (lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((3, 5)), bias=h(3)), ArgumentError, "bias has shape"),
    (lambda: K.gemm(h((3, 32))[:, ::2], h((5, 16)), out=h((3, 5))), ArgumentError, "a must be C-contiguous"),
    (lambda: K.gemm(h((3, 0)), h((5, 0)), out=h((3, 5))), ArgumentError, "gemm needs K >= 1"),
    (lambda: K.patch_embed(h((3, 16)), h((5, 12)), out=h((3, 5))), ArgumentError, "weight has shape"),
    (lambda: K.argmax(h((2, 50)), out=i32(3)), ArgumentError, "out has shape"),
    (lambda: K.argmax(h((2, 50)), out=h(2)), ArgumentTypeError, "out has dtype float16"),
    (lambda: K.argmax(h((2, 0)), out=i32(2)), ArgumentError, "argmax needs V >= 1"),
    (lambda: K.feed_tokens(i32(7), i32(6), i32(3)), ArgumentError, r"token_source has shape \[6\]; expected \[7\]"),
    (lambda: K.feed_tokens(i32(7), i32(7), h(3)), ArgumentTypeError, "sampled has dtype float16"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), np.zeros((20, 8), np.float32), head_size=7),
     ArgumentError, "even"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), np.zeros((20, 8), np.float16), head_size=8),
     ArgumentTypeError, "cos_sin_cache has dtype float16"),
    (lambda: K.rotary_embedding(i32(6), h((6, 12)), h((6, 16)), np.zeros((20, 8), np.float32), head_size=8),
     ArgumentError, "not a multiple of head_size"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), np.zeros((20, 6), np.float32), head_size=8),
     ArgumentError, r"cos_sin_cache has shape \[20, 6\].*make_cos_sin_cache"),
    (lambda: K.rotary_embedding(i32(6), h((6, 4, 8))[:, :, ::2], h((6, 16)), np.zeros((20, 4), np.float32),
                                head_size=4), ArgumentError, "contiguous within each row"),
    (lambda: K.rotary_embedding(i32(6), h((6, 4, 8))[::-1], h((6, 16)), np.zeros((20, 8), np.float32),
                                head_size=8), ArgumentError, "row stride is -64 bytes"),
])
def test_bad_arguments_raise_clear_errors(call, err, pattern):
    with pytest.raises(err, match=pattern) as info:
        call()
    assert isinstance(info.value, CgraphError)


@pytest.mark.parametrize("call, arg", [
    (lambda: K.rms_norm(at_offset(h((4, 8)), 1), h(8), 1e-6, out=h((4, 8))), "x"),
    (lambda: K.rms_norm(h((4, 8)), h(8), 1e-6, out=at_offset(h((4, 8)), 3)), "out"),
    (lambda: K.gemm(h((3, 16)), h((5, 16)), out=h((3, 5)), bias=at_offset(h(5), 1)), "bias"),
    (lambda: K.embedding(at_offset(i32(5), 2), h((10, 8)), out=h((5, 8))), "ids"),
    (lambda: K.argmax(h((2, 50)), out=at_offset(i32(2), 2)), "out"),
    (lambda: K.rotary_embedding(i32(6), h((6, 16)), h((6, 16)), at_offset(np.zeros((20, 8), np.float32), 2),
                                head_size=8), "cos_sin_cache"),
])
def test_views_that_split_an_element_are_rejected(call, arg):
    with pytest.raises(ArgumentError, match=rf"^{arg} starts at address 0x[0-9a-f]+, not a multiple of its element"):
        call()


def _paged_args(t=4, hq=8, hkv=2, d=64, s=3, nb=6, bs=16, max_blocks=4):
    return dict(q=h((t, hq, d)), k_cache=h((nb, bs, hkv, d)), v_cache=h((nb, bs, hkv, d)), out=h((t, hq, d)),
                block_tables=i32((s, max_blocks)), seq_lens=i32(s), query_start_loc=i32(s + 1),
                num_seqs=i32(1), max_query_len=1, scale=0.125)


def _paged(args):
    return K.paged_attention(args.pop("q"), args.pop("k_cache"), args.pop("v_cache"), **args)


def test_paged_attention_valid_arguments_reach_device():
    reaches_device(lambda: _paged(_paged_args()))


@pytest.mark.parametrize("change, err, pattern", [
    (dict(q=h((4, 6, 64))), ArgumentError, r"out has shape"),
    (dict(q=h((4, 7, 64)), out=h((4, 7, 64))), ArgumentError, "multiple of KV heads"),
    (dict(seq_lens=i32(4)), ArgumentError, r"seq_lens has shape \[4\]; expected \[3\]"),
    (dict(query_start_loc=i32(3)), ArgumentError, r"query_start_loc has shape \[3\]; expected \[4\]"),
    (dict(num_seqs=i32(2)), ArgumentError, "num_seqs has shape"),
    (dict(block_tables=i32((3, 4)).astype(np.int64)), ArgumentTypeError, "block_tables has dtype int64"),
    (dict(max_query_len=0), ArgumentError, "max_query_len"),
    (dict(scale="0.1"), ArgumentTypeError, "scale must be a float"),
    (dict(k_cache=h((6, 16, 2, 32))), ArgumentError,
     r"k_cache has shape \[6, 16, 2, 32\]; expected \[6, 16, 2, 64\].*D from q"),
    (dict(v_cache=h((6, 8, 2, 64))), ArgumentError, "v_cache has shape"),
    (dict(q=h((4, 8, 12)), out=h((4, 8, 12)), k_cache=h((6, 16, 2, 12)), v_cache=h((6, 16, 2, 12))),
     ArgumentError, "head size D=12 must be a multiple of 8"),
    (dict(q=at_offset(h((4, 8, 64)), 8)), ArgumentError, "q starts at address .* 8 bytes past a 16-byte boundary"),
    (dict(out=at_offset(h((4, 8, 64)), 4)), ArgumentError, "out starts at address .*16-byte pieces"),
    (dict(k_cache=at_offset(h((6, 16, 2, 64)), 2)), ArgumentError, "k_cache starts at address"),
    (dict(seq_lens=at_offset(i32(3), 2)), ArgumentError, "seq_lens starts at address .* element size"),
])
def test_paged_attention_bad_arguments(change, err, pattern):
    args = _paged_args()
    args.update(change)
    with pytest.raises(err, match=pattern):
        _paged(args)


def test_varlen_and_cache_argument_checks():
    q, k, v, out = h((9, 4, 64)), h((9, 2, 64)), h((9, 2, 64)), h((9, 4, 64))
    reaches_device(lambda: K.varlen_attention(q, k, v, out=out, cu_seqlens=i32(3), max_seqlen=9,
                                              causal=True, scale=0.1))
    with pytest.raises(ArgumentError, match="v has shape"):
        K.varlen_attention(q, k, h((9, 1, 64)), out=out, cu_seqlens=i32(3), max_seqlen=9, causal=True, scale=0.1)
    with pytest.raises(ArgumentError, match="varlen_attention needs N >= 1, got N=0"):
        K.varlen_attention(q, k, v, out=out, cu_seqlens=i32(1), max_seqlen=9, causal=False, scale=0.1)
    qkv = h((9, 4 + 2 * 2, 64 + 4))[:, :, :64]  # rows padded by 4 elements: inner dims not contiguous
    with pytest.raises(ArgumentError, match="contiguous within each row"):
        K.varlen_attention(qkv[:, :4], k, v, out=out, cu_seqlens=i32(3), max_seqlen=9, causal=True, scale=0.1)
    rows = h((9, 4 * 64 + 4))[:, :4 * 64].reshape(9, 4, 64)  # row stride 260 elements: not 16-byte multiples
    with pytest.raises(ArgumentError, match="q rows are 260 elements apart; the stride must be a multiple of 8"):
        K.varlen_attention(rows, k, v, out=out, cu_seqlens=i32(3), max_seqlen=9, causal=True, scale=0.1)
    kc = h((5, 16, 2, 64))
    reaches_device(lambda: K.reshape_and_cache(k, v, kc, h((5, 16, 2, 64)), i32(9)))
    with pytest.raises(ArgumentError, match=r"k has shape \[9, 2, 64\]; expected \[8, 2, 64\] "
                                            r"\(= \[T, Hkv, D\]; T from slot_mapping, Hkv and D from k_cache\)"):
        K.reshape_and_cache(k, v, kc, h((5, 16, 2, 64)), i32(8))
    with pytest.raises(ArgumentTypeError, match="v_cache has dtype float32"):
        K.reshape_and_cache(k, v, kc, h((5, 16, 2, 64), np.float32), i32(9))


def test_spec_binds_symbols_and_reports_their_origin():
    spec = Spec("demo", Arr("x", ("T", "2*I"), ("float16",)), Arr("y", ("T+1", "I", "..."), like="x"),
                Arr("z", ("I",), like="x", optional=True))
    b = spec.bind(x=h((3, 8)), y=h((4, 4, 2, 5)), z=None)
    assert b.dims == {"T": 3, "I": 4} and "z" not in b.dtypes and b.host_arrays == {"x": "numpy.ndarray",
                                                                                  "y": "numpy.ndarray"}
    assert b.aligned(2, "x", "y") and b.row_strides == {}
    with pytest.raises(ArgumentError, match=r"y has shape \[3, 4, 2\]; expected \[4, 4, \.\.\.\] "
                                            r"\(= \[T\+1, I, \.\.\.\]; T and I from x\)"):
        spec.bind(x=h((3, 8)), y=h((3, 4, 2)), z=None)
    with pytest.raises(ArgumentError, match=r"y has shape \[4\]; expected 3 or more dims"):
        spec.bind(x=h((3, 8)), y=h(4), z=None)
    with pytest.raises(ArgumentTypeError, match="demo: x is required"):
        spec.bind(x=None, y=h(4), z=None)
    with pytest.raises(ArgumentError, match="give exactly one of dtypes= and like="):
        Arr("bad", ("T",))


# ------------------------------------------------------------------ GEMM planning
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 16, 17, 64, 65, 128, 512, 2048])
@pytest.mark.parametrize("n, k", [(1024, 1024), (4096, 1024), (1024, 4096), (11008, 4096), (7, 40)])
def test_gemm_plan_covers_the_output_and_all_of_k(m, n, k):
    plan = plan_gemm(m, n, k, aligned=True, sm_count=132, cluster=True)
    if plan.kind == "gemv":
        assert m <= 4 and plan.grid[0] * 8 >= n
        return
    if plan.kind == "stream":
        assert plan.kernel == "stream" and m <= STREAM_MAX_M and plan.grid[0] * STREAM_BN >= n
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
    with pytest.raises(ArgumentError, match="M <= 32"):
        plan_gemm(33, 1024, 4096, aligned=True, sm_count=132, cluster=True, streaming=True)
    with pytest.raises(ArgumentError, match="warps"):
        plan_gemm(8, 1024, 4096, aligned=True, sm_count=132, cluster=True, streaming=True, warps=3)
    assert plan_gemm(100, 768, 588, aligned=False, sm_count=132, cluster=True).kind == "fallback"
    assert plan_gemm(100, 768, 4096, aligned=False, sm_count=132, cluster=True, tile="t64").kind == "fallback"
    with pytest.raises(ArgumentError, match="clusters"):
        plan_gemm(16, 1024, 4096, aligned=True, sm_count=108, cluster=False, tile="t16", split=4)
    with pytest.raises(ArgumentError, match="tile"):
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
                streamed = plans == {"stream"}
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
    with pytest.raises(ArgumentError, match="compute capability 9.0"):
        plan_gemm(100, 4096, 1024, tile="w128x128s6", **kw)
    with pytest.raises(ArgumentError, match="split must be one of"):
        plan_gemm(100, 4096, 1024, wgmma=True, tile="w128x128s6", split=8, **kw)


def test_wgmma_tile_choice_follows_the_output_size():
    kw = dict(aligned=True, sm_count=132, cluster=True, wgmma=True)
    assert plan_gemm(128, 4096, 1024, **kw).kernel.startswith("w128x64s8")  # 32 tiles of 128x128
    assert plan_gemm(128, 11008, 4096, **kw).kernel == "w128x128s6_s1"
    assert plan_gemm(2048, 11008, 4096, **kw).kernel.startswith("w128x256s4")
    assert plan_gemm(128, 1024, 1024, **kw).kernel == "w128x64s8_s4"  # 16 tiles: split K 4 ways


@pytest.mark.parametrize("m", [8, 16, 32, 64])
def test_wgmma_split_keeps_its_clusters_within_three_quarters_of_the_gpu(m):
    """The H200 tuning run's decode shapes: 32 tiles split 2 ways (4 ways left clusters
    waiting), 16 tiles 4 ways, 48 tiles 2 ways, 88 tiles and more unsplit."""
    kw = dict(aligned=True, sm_count=132, cluster=True, wgmma=True, streaming=False)
    assert plan_gemm(m, 2048, 8192, **kw).kernel == "w128x64s8_s2"  # Llama-1B down
    assert plan_gemm(m, 2048, 2048, **kw).kernel == "w128x64s8_s2"  # Llama-1B o
    assert plan_gemm(m, 3072, 2048, **kw).kernel == "w128x64s8_s2"  # Llama-1B qkv
    assert plan_gemm(m, 1024, 2816, **kw).kernel == "w128x64s8_s4"  # 8-layer down
    assert plan_gemm(m, 5632, 1024, **kw).kernel == "w128x64s8_s1"  # 8-layer gate_up
    for sms in (78, 114, 132):
        plan = plan_gemm(m, 2048, 8192, aligned=True, sm_count=sms, cluster=True, wgmma=True, streaming=False)
        split = plan.grid[2]
        assert split == 1 or plan.grid[0] * plan.grid[1] * split <= WGMMA_SPLIT_FILL * sms


def test_tensor_map_rejects_what_the_tma_cannot_address():
    with pytest.raises(ArgumentError, match="16-byte aligned.*0x1002"):
        encode_2d(0x1002, 16, 64, 128)
    with pytest.raises(ArgumentError, match=r"cols % 8 == 0.*\[16, 60\]"):
        encode_2d(0x1000, 16, 60, 128)
    with pytest.raises(ArgumentError, match="box 300x64"):
        encode_2d(0x1000, 16, 64, 300)
    with pytest.raises(ArgumentError, match="box 64x32"):
        encode_2d(0x1000, 16, 64, 64, box_cols=32)


def test_host_helpers_check_their_arguments():
    with pytest.raises(ArgumentError, match="patch=5"):
        K.unfold_patches(h((3, 8, 12)), 5)
    with pytest.raises(ArgumentError, match="image must be"):
        K.unfold_patches(h((8, 12)), 4)
    with pytest.raises(ArgumentError, match="max_pos must be a host int >= 1"):
        K.make_cos_sin_cache(0, 8)
    with pytest.raises(ArgumentError, match="head_size must be a positive even int"):
        K.make_cos_sin_cache(16, 7)


@pytest.mark.parametrize("n, k", [(256, 128), (3072, 2048), (2048, 8192), (128256, 2048), (1000, 520)])
@pytest.mark.parametrize("sms, cluster, wgmma", [(132, True, True), (108, False, False)])
def test_invariant_plan_keeps_one_kernel_family_and_split_for_every_m(n, k, sms, cluster, wgmma):
    """invariant=True: the tiled kernel at every M (its height follows M), one K split per
    (N, K) and device, never the GEMV, streaming or wgmma kernels the default plan mixes."""
    kw = dict(aligned=True, sm_count=sms, cluster=cluster, wgmma=wgmma)
    plans = [plan_gemm(m, n, k, invariant=True, **kw) for m in (1, 2, 4, 5, 8, 31, 33, 64, 65, 129, 700, 4096)]
    assert {p.kind for p in plans} == {"tile"}
    assert len({p.grid[2] for p in plans}) == 1
    assert {p.ktiles_per_split for p in plans} == {math.ceil(math.ceil(k / 64) / plans[0].grid[2])}
    assert len({p.kernel.split("_s")[0] for p in plans}) >= 3, "tile heights follow M"
    assert plans[0].grid[2] == invariant_split(n, k, sms, cluster)
    if not cluster:
        assert plans[0].grid[2] == 1
    default_kinds = {plan_gemm(m, n, k, **kw).kind for m in (1, 8, 700)}
    assert len(default_kinds) > 1 or not wgmma, "the default plan mixes kernels with M"


def test_invariant_plan_refuses_forced_configurations():
    kw = dict(aligned=True, sm_count=132, cluster=True, wgmma=True, invariant=True)
    for force in ({"tile": "t64"}, {"split": 2}, {"streaming": True}, {"warps": 4}):
        with pytest.raises(ArgumentError, match="batch-invariant"):
            plan_gemm(8, 1024, 1024, **force, **kw)
    assert plan_gemm(8, 1024, 1026, aligned=False, sm_count=132, cluster=True, invariant=True).kind == "fallback"
