"""GPU tests of every kernel against the NumPy references.

Fresh random inputs on every run (the seed is in each failure message), outputs poisoned
with NaN / sentinels before each launch, relative-error bounds fitting the storage dtype,
awkward sizes, padding conventions, GQA, paged caches with holes and shuffled blocks, and
a CUDA-graph capture replayed with new inputs.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.kernels import ops
from cgraph.kernels import reference as ref
from cgraph.kernels.gemm_plan import TILES, WGMMA_SPLITS, WGMMA_TILES

pytestmark = pytest.mark.gpu

SEED = int.from_bytes(os.urandom(4), "little")
RNG = np.random.default_rng(SEED)
TOL = {"float16": 3e-3, "bfloat16": 1.6e-2, "float32": 1e-5}
DTYPES = ["float16", "bfloat16"]
ALL_DTYPES = ["float16", "bfloat16", "float32"]


@pytest.fixture(scope="module")
def cp():
    from cgraph.cuda.device import require_device

    return require_device()


def _bf16():
    ml = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    return np.dtype(ml.bfloat16)


def np_dtype(dt):
    return _bf16() if dt == "bfloat16" else np.dtype(dt)


def round_host(x, dt):
    """x rounded to the storage dtype, as float64 (what the device holds)."""
    return np.asarray(x, np.float32).astype(np_dtype(dt)).astype(np.float64)


def dev(cp, x, dt):
    """Host float data -> device array of dtype dt (bf16 moved as its 16-bit pattern)."""
    a = to_np(x, dt)
    if dt == "bfloat16":
        return cp.asarray(a.view(np.uint16)).view(np_dtype(dt))
    return cp.asarray(a)


def to_np(x, dt):
    return np.asarray(x, np.float32).astype(np_dtype(dt))


def host(x):
    """Device array -> float64 (floats) or as is (ints)."""
    if x.dtype.kind in "iu":
        return x.get()
    if x.dtype.itemsize == 2 and x.dtype != np.float16:  # bfloat16: widen the bit pattern
        bits = x.view("uint16").get().astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    return x.get().astype(np.float64)


def copy_into(dst, src):
    """Raw device copy (works for any dtype, bf16 included)."""
    assert dst.nbytes == src.nbytes and dst.flags.c_contiguous and src.flags.c_contiguous
    dst.data.copy_from_device(src.data, src.nbytes)


def rand(shape, scale=1.0):
    return RNG.standard_normal(shape) * scale


def poison(cp, x):
    """Fill with NaN (floats) or a sentinel (ints) so unwritten elements show."""
    if x.dtype.itemsize == 2:
        bits = 0x7E00 if x.dtype == np.float16 else 0x7FC0
        x.view(cp.uint16).fill(bits)
    elif x.dtype == np.float32:
        x.fill(np.nan)
    else:
        x.fill(-123456)
    return x


def empty(cp, shape, dt):
    return poison(cp, cp.empty(shape, dtype=np_dtype(dt)))


def assert_close(got, want, dt, what=""):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite output (unwritten?) seed={SEED}"
    denom = max(np.linalg.norm(want), 1e-30)
    err = np.linalg.norm(got - want) / denom
    assert err <= TOL[dt], f"{what}: relative error {err:.3g} > {TOL[dt]} ({dt}) seed={SEED}"


# ---------------------------------------------------------------- embedding
@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("t, vocab, hidden", [(1, 7, 8), (37, 1000, 4096), (5, 11, 13), (70000, 50, 8)])
def test_embedding_gathers_rows_and_zeroes_out_of_range_ids(cp, dt, t, vocab, hidden):
    table_h = round_host(rand((vocab, hidden)), dt)
    ids_h = RNG.integers(0, vocab, size=t).astype(np.int32)
    if t > 2:
        ids_h[1], ids_h[2] = -1, vocab
    out = empty(cp, (t, hidden), dt)
    K.embedding(cp.asarray(ids_h), dev(cp, table_h, dt), out=out)
    np.testing.assert_array_equal(host(out), ref.embedding(ids_h, table_h), err_msg=f"seed={SEED}")


# ---------------------------------------------------------------- rms_norm
@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("t, hidden", [(1, 8), (33, 4096), (7, 1000), (3, 13)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_matches_reference(cp, dt, t, hidden, with_residual):
    x_h, w_h, r_h = (round_host(rand(s), dt) for s in ((t, hidden), (hidden,), (t, hidden)))
    out = empty(cp, (t, hidden), dt)
    res = dev(cp, r_h, dt) if with_residual else None
    K.rms_norm(dev(cp, x_h, dt), dev(cp, w_h, dt), 1e-5, out=out, residual=res)
    want, new_res = ref.rms_norm(x_h, w_h, 1e-5, residual=r_h if with_residual else None,
                                 round_to=lambda z: round_host(z, dt))
    assert_close(host(out), want, dt, "rms_norm out")
    if with_residual:
        np.testing.assert_array_equal(host(res), new_res, err_msg=f"residual seed={SEED}")


# ---------------------------------------------------------------- rotary
@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("head, hq, hk", [(128, 4, 2), (64, 8, 8), (10, 3, 1)])
def test_rotary_in_place_on_strided_qkv_views(cp, dt, head, hq, hk):
    t, max_pos = 17, 300
    qkv_h = round_host(rand((t, (hq + 2 * hk) * head)), dt)
    pos_h = RNG.integers(0, max_pos, size=t).astype(np.int32)
    pos_h[3] = -1  # padding row: untouched
    qkv = dev(cp, qkv_h, dt)
    q, k = qkv[:, : hq * head], qkv[:, hq * head:(hq + hk) * head]
    cache = K.make_cos_sin_cache(max_pos, head)
    K.rotary_embedding(cp.asarray(pos_h), q, k, cache, head_size=head)
    cache_h = ref.cos_sin_cache(max_pos, head)
    got = host(qkv)
    assert_close(got[:, : hq * head], ref.rotary_embedding(pos_h, qkv_h[:, : hq * head], cache_h, head), dt, "q")
    assert_close(got[:, hq * head:(hq + hk) * head],
                 ref.rotary_embedding(pos_h, qkv_h[:, hq * head:(hq + hk) * head], cache_h, head), dt, "k")
    np.testing.assert_array_equal(got[:, (hq + hk) * head:], qkv_h[:, (hq + hk) * head:])  # v untouched
    np.testing.assert_array_equal(got[3], qkv_h[3])


# ---------------------------------------------------------------- silu_and_mul
@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("t, inter", [(1, 8), (37, 11008), (5, 13), (70000, 8)])
def test_silu_and_mul_matches_reference(cp, dt, t, inter):
    x_h = round_host(rand((t, 2 * inter), 2.0), dt)
    out = empty(cp, (t, inter), dt)
    K.silu_and_mul(dev(cp, x_h, dt), out=out)
    assert_close(host(out), ref.silu_and_mul(x_h), dt, "silu_and_mul")


# ---------------------------------------------------------------- gemm
def _gemm_case(cp, dt, m, n, k, bias, **force):
    a_h, w_h = round_host(rand((m, k)), dt), round_host(rand((n, k), 1 / math.sqrt(k)), dt)
    b_h = round_host(rand(n), dt) if bias else None
    out = empty(cp, (m, n), dt)
    a, w = dev(cp, a_h, dt), dev(cp, w_h, dt)
    b = dev(cp, b_h, dt) if bias else None
    if force:
        plan = ops._gemm_launch(a, w, out, b, None, **force)
    else:
        plan = None
        K.gemm(a, w, out=out, bias=b)
    assert_close(host(out), ref.gemm(a_h, w_h, b_h), dt, f"gemm M={m} N={n} K={k} {force} {plan}")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m, n, k", [
    (1, 1024, 1024), (2, 200, 64), (3, 1000, 520), (5, 4096, 1024), (8, 1024, 4096), (16, 4096, 1024),
    (17, 1024, 4096), (64, 1000, 1024), (100, 1024, 1024), (128, 11008, 4096), (300, 520, 768),
    (2048, 1024, 1024),
])
def test_gemm_default_plan(cp, dt, m, n, k):
    _gemm_case(cp, dt, m, n, k, bias=(m % 2 == 1))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("tile", sorted(TILES))
@pytest.mark.parametrize("split", [1, 2, 4, 8])
def test_gemm_every_tile_and_cluster_split(cp, dt, tile, split):
    if split > 1 and int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("cluster split needs sm_90")
    _gemm_case(cp, dt, int(RNG.integers(1, 200)), 300 + 8 * int(RNG.integers(0, 40)), 1000, bias=True,
               tile=tile, split=split)


def _needs_wgmma(cp):
    if int(cp.cuda.Device().compute_capability) != 90:
        pytest.skip("the wgmma kernels run on compute capability 9.0 (H100/H200) only")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("tile", sorted(WGMMA_TILES))
@pytest.mark.parametrize("split", WGMMA_SPLITS)
def test_gemm_every_wgmma_tile_and_split(cp, dt, tile, split):
    _needs_wgmma(cp)
    # M, N not multiples of the tile (the TMA fills the edges with zeros), K not a multiple
    # of the 64-wide slice; M = 1 and M far below the tile height as well
    for m in (1, int(RNG.integers(2, 128)), int(RNG.integers(129, 400))):
        n, k = 8 * int(RNG.integers(1, 90)) + 4, 8 * int(RNG.integers(1, 200))
        _gemm_case(cp, dt, m, n, k, bias=bool(m % 2), tile=tile, split=split)


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_wgmma_short_k_and_empty_splits(cp, dt):
    _needs_wgmma(cp)
    # K = 8: one slice for the whole split; split 4 over 2 slices leaves CTAs with no K at all
    _gemm_case(cp, dt, 100, 300, 8, bias=True, tile="w128x128s6", split=4)
    _gemm_case(cp, dt, 77, 64, 72, bias=False, tile="w128x64s8", split=4)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m, padded", [(3, 4), (5, 8), (20, 24), (40, 48), (65, 72), (100, 128), (130, 136),
                                       (250, 256)])
@pytest.mark.parametrize("n, k", [(1000, 1024), (3000, 4096)])  # streamed / not streamed at M <= 32
def test_gemm_rows_do_not_change_when_the_batch_is_padded(cp, dt, m, padded, n, k):
    # a graph replays the padded batch, eager runs the real one: rows must agree bit for bit
    a_h = round_host(rand((padded, k)), dt)
    w = dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    full, part = empty(cp, (padded, n), dt), empty(cp, (m, n), dt)
    a = dev(cp, a_h, dt)
    K.gemm(a, w, out=full)
    K.gemm(dev(cp, a_h[:m], dt), w, out=part)
    assert np.array_equal(host(full.view(cp.uint16))[:m], host(part.view(cp.uint16))), f"M={m} vs {padded}"
    assert not np.isnan(host(part)).any()


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_wgmma_captured_in_a_graph_replays_with_new_inputs(cp, dt):
    _needs_wgmma(cp)
    m, n, k = 100, 520, 1000
    a, out = empty(cp, (m, k), dt), empty(cp, (m, n), dt)
    w = dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    b = dev(cp, round_host(rand(n), dt), dt)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        K.gemm(a, w, out=out, bias=b)  # compile and load outside capture
        stream.synchronize()
        stream.begin_capture()
        try:
            K.gemm(a, w, out=out, bias=b)
        finally:
            graph = stream.end_capture()
    for replay in range(3):
        a_h = round_host(rand((m, k)), dt)
        copy_into(a, dev(cp, a_h, dt))
        poison(cp, out)
        cp.cuda.Device().synchronize()
        graph.launch(stream)
        stream.synchronize()
        assert_close(host(out), ref.gemm(a_h, host(w), host(b)), dt, f"replay {replay}")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8])
def test_gemm_gemv_path_for_small_m(cp, dt, m):
    _gemm_case(cp, dt, m, 777, 1032, bias=bool(m % 2), gemv_max_m=8)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m", [1, 3, 8, 16, 17, 31, 32])
@pytest.mark.parametrize("warps", [2, 4, 8, 16])
def test_gemm_streaming_kernel_any_n_and_k(cp, dt, m, warps):
    # N not a multiple of the 16-wide slice, K not a multiple of the 128-wide K group
    n, k = int(RNG.integers(1, 700)), 8 * int(RNG.integers(1, 300))
    _gemm_case(cp, dt, m, n, k, bias=bool(m % 2), streaming=True, warps=warps)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m, n, k", [(8, 4096, 1024), (32, 1000, 4096), (100, 11008, 512), (700, 520, 768)])
def test_gemm_default_plan_is_bit_reproducible(cp, dt, m, n, k):
    # the engine compares graph replays with eager runs bit for bit: same inputs, same bits
    a = dev(cp, round_host(rand((m, k)), dt), dt)
    w = dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    b = dev(cp, round_host(rand(n), dt), dt)
    first, again = empty(cp, (m, n), dt), empty(cp, (m, n), dt)
    K.gemm(a, w, out=first, bias=b)
    K.gemm(a, w, out=again, bias=b)
    assert np.array_equal(host(first.view(cp.uint16)), host(again.view(cp.uint16)))
    assert not np.isnan(host(first)).any()


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_fallback_for_odd_k_and_misaligned_views(cp, dt):
    _gemm_case(cp, dt, 33, 70, 588, bias=True)  # K % 8 != 0 (14x14x3 patches)
    a_h, w_h = round_host(rand((9, 65)), dt), round_host(rand((40, 64)), dt)
    # a contiguous [9, 64] view starting 2 bytes into its buffer: not 16-byte aligned
    flat = dev(cp, np.concatenate([[0.0], a_h[:, 1:].reshape(-1)]), dt)[1:].reshape(9, 64)
    assert flat.data.ptr % 16 != 0
    out = empty(cp, (9, 40), dt)
    K.gemm(flat, dev(cp, w_h, dt), out=out)
    assert_close(host(out), ref.gemm(a_h[:, 1:], w_h), dt, "misaligned a")


@pytest.mark.parametrize("dt", DTYPES)
def test_patch_embed_over_unfolded_patches(cp, dt):
    c, hgt, wid, p, hidden = 3, 28, 42, 14, 96
    img_h = round_host(rand((c, hgt, wid)), dt)
    w_h, b_h = round_host(rand((hidden, c, p, p), 0.05), dt), round_host(rand(hidden), dt)
    patches = K.unfold_patches(dev(cp, img_h, dt), p)
    assert patches.shape == ((hgt // p) * (wid // p), c * p * p)
    out = empty(cp, (patches.shape[0], hidden), dt)
    K.patch_embed(patches, dev(cp, w_h.reshape(hidden, -1), dt), out=out, bias=dev(cp, b_h, dt))
    # reference: a strided convolution written out directly
    want = np.zeros((hgt // p, wid // p, hidden))
    for y in range(hgt // p):
        for x in range(wid // p):
            want[y, x] = np.einsum("chw,ochw->o", img_h[:, y * p:(y + 1) * p, x * p:(x + 1) * p], w_h) + b_h
    assert_close(host(out), want.reshape(-1, hidden), dt, "patch_embed")


# ---------------------------------------------------------------- KV cache write
@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("hkv, d", [(2, 64), (1, 12)])
def test_reshape_and_cache_writes_slots_and_skips_padding(cp, dt, hkv, d):
    t, nb, bs = 13, 10, 16
    kv_h = round_host(rand((t, 2, hkv, d)), dt)
    kc_h, vc_h = round_host(rand((nb, bs, hkv, d)), dt), round_host(rand((nb, bs, hkv, d)), dt)
    slots = RNG.permutation(nb * bs)[:t].astype(np.int32)
    slots[[0, 5]] = -1
    kv = dev(cp, kv_h, dt)
    kc, vc = dev(cp, kc_h, dt), dev(cp, vc_h, dt)
    K.reshape_and_cache(kv[:, 0], kv[:, 1], kc, vc, cp.asarray(slots))
    want_k, want_v = ref.reshape_and_cache(kv_h[:, 0], kv_h[:, 1], kc_h, vc_h, slots)
    np.testing.assert_array_equal(host(kc), want_k, err_msg=f"seed={SEED}")
    np.testing.assert_array_equal(host(vc), want_v, err_msg=f"seed={SEED}")


# ---------------------------------------------------------------- paged attention
def _paged_setup(cp, dt, q_lens, ctx_lens, t_rows, hq, hkv, d, bs=16):
    """Caches with shuffled blocks, holes (unused blocks between sequences) and garbage
    in unused table entries; returns device args and host copies."""
    need = [-(-n // bs) for n in ctx_lens]
    max_blocks = max(max(need), 1) + 2
    nb = sum(need) * 2 + 4
    perm = RNG.permutation(nb)
    tables = RNG.integers(-5, nb + 5, size=(len(ctx_lens), max_blocks)).astype(np.int32)
    used = 0
    for s, k in enumerate(need):
        tables[s, :k] = perm[used:used + 2 * k:2]  # every other block: holes
        used += 2 * k
    kc_h, vc_h = round_host(rand((nb, bs, hkv, d)), dt), round_host(rand((nb, bs, hkv, d)), dt)
    q_h = round_host(rand((t_rows, hq, d)), dt)
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    args = dict(block_tables=cp.asarray(tables), seq_lens=cp.asarray(np.array(ctx_lens, np.int32)),
                query_start_loc=cp.asarray(qsl), num_seqs=cp.asarray(np.array([len(q_lens)], np.int32)))
    hosts = dict(q=q_h, kc=kc_h, vc=vc_h, tables=tables, seq_lens=np.array(ctx_lens, np.int32), qsl=qsl)
    return dev(cp, q_h, dt), dev(cp, kc_h, dt), dev(cp, vc_h, dt), args, hosts


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d", [(8, 2, 128), (4, 4, 64), (12, 2, 80), (16, 1, 256)])
def test_paged_attention_decode_with_padding_rows(cp, dt, hq, hkv, d):
    ctx = [1, 17, 300, 0, 64]
    t_rows = len(ctx) + 3  # 3 padding rows past num_seqs
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, t_rows, hq, hkv, d)
    out = empty(cp, (t_rows, hq, d), dt)
    scale = 1 / math.sqrt(d)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=scale, **args)
    want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], hs["tables"], hs["seq_lens"], hs["qsl"], len(ctx), scale)
    got = host(out)
    assert_close(got, want, dt, "decode")
    assert not got[len(ctx):].any() and not got[3].any(), "padding rows and empty sequences must be zeros"


@pytest.mark.parametrize("dt", DTYPES)
def test_paged_attention_reads_num_seqs_from_device(cp, dt):
    ctx = [5, 40, 33]
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * 3, ctx, 3, 4, 2, 64)
    args["num_seqs"] = cp.asarray(np.array([2], np.int32))
    out = empty(cp, (3, 4, 64), dt)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=0.2, **args)
    want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], hs["tables"], hs["seq_lens"], hs["qsl"], 2, 0.2)
    got = host(out)
    assert_close(got[:2], want[:2], dt, "first two")
    assert not got[2].any(), "the row of a sequence past num_seqs is padding"


# ---------------------------------------------------------------- varlen attention
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("hq, hkv, d", [(4, 1, 64), (3, 3, 80), (16, 16, 64)])
def test_varlen_attention_segments_and_padding(cp, dt, causal, hq, hkv, d):
    cu_h = np.array([0, 1, 18, 150, 153], np.int32)
    t = int(cu_h[-1]) + 7
    qkv_h = round_host(rand((t, hq + 2 * hkv, d)), dt)
    qkv = dev(cp, qkv_h, dt)
    q, k, v = qkv[:, :hq], qkv[:, hq:hq + hkv], qkv[:, hq + hkv:]
    out = empty(cp, (t, hq, d), dt)
    K.varlen_attention(q, k, v, out=out, cu_seqlens=cp.asarray(cu_h), max_seqlen=132, causal=causal,
                       scale=1 / math.sqrt(d))
    want = ref.varlen_attention(qkv_h[:, :hq], qkv_h[:, hq:hq + hkv], qkv_h[:, hq + hkv:], cu_h, causal,
                                1 / math.sqrt(d))
    got = host(out)
    assert_close(got, want, dt, f"varlen causal={causal}")
    assert not got[cu_h[-1]:].any()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("hq, hkv, d", [(8, 2, 128), (6, 6, 64)])
def test_varlen_attention_tensor_core_tiles_long_and_many_segments(cp, dt, causal, hq, hkv, d):
    """Segments longer than a 64-row tile, of odd lengths, empty ones, more than 32 of them
    (the on-device segment scan spans several warps' worth), and padding rows."""
    lens = [0, 1, 63, 64, 65, 300, 0, 7] + list(RNG.integers(1, 40, size=30)) + [517]
    cu_h = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    t = int(cu_h[-1]) + 70
    qkv_h = round_host(rand((t, hq + 2 * hkv, d)), dt)
    qkv = dev(cp, qkv_h, dt)
    q, k, v = qkv[:, :hq], qkv[:, hq:hq + hkv], qkv[:, hq + hkv:]
    out = empty(cp, (t, hq, d), dt)
    K.varlen_attention(q, k, v, out=out, cu_seqlens=cp.asarray(cu_h), max_seqlen=max(lens), causal=causal,
                       scale=1 / math.sqrt(d))
    want = ref.varlen_attention(qkv_h[:, :hq], qkv_h[:, hq:hq + hkv], qkv_h[:, hq + hkv:], cu_h, causal,
                                1 / math.sqrt(d))
    got = host(out)
    assert_close(got, want, dt, f"varlen causal={causal}")
    assert not got[cu_h[-1]:].any(), "padding rows must be zeros"
    first = host(out).copy()
    poison(cp, out)
    K.varlen_attention(q, k, v, out=out, cu_seqlens=cp.asarray(cu_h), max_seqlen=max(lens), causal=causal,
                       scale=1 / math.sqrt(d))
    np.testing.assert_array_equal(host(out), first, err_msg="a second launch must be bit-identical")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d, ctx", [
    (16, 8, 64, [512]),  # batch 1: the context is split over a cluster of CTAs
    (32, 8, 128, [1, 2000, 64, 65, 0, 777]),
    (16, 1, 128, [1500, 3]),  # 16 query heads share one KV head
    (8, 1, 64, [130] * 40),  # enough rows that no split is needed
    (16, 4, 128, [(i * 37) % 300 for i in range(70)]),  # enough rows for two KV heads per CTA
    (8, 2, 64, [(i * 53) % 1100 for i in range(140)]),
])
def test_paged_attention_decode_split_context(cp, dt, hq, hkv, d, ctx):
    t_rows = len(ctx) + 2
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, t_rows, hq, hkv, d)
    out = empty(cp, (t_rows, hq, d), dt)
    scale = 1 / math.sqrt(d)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=scale, **args)
    want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], hs["tables"], hs["seq_lens"], hs["qsl"], len(ctx), scale)
    got = host(out)
    assert_close(got, want, dt, "decode")
    assert not got[len(ctx):].any(), "padding rows must be zeros"
    for i, n in enumerate(ctx):
        if n == 0:
            assert not got[i].any(), "a sequence with no keys gives zeros"
    first = got.copy()
    poison(cp, out)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=scale, **args)
    np.testing.assert_array_equal(host(out), first, err_msg="a second launch must be bit-identical")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("variant", ["s1", "s2", "s8", "h2", "h2k32", "h4k32"])
def test_paged_attention_decode_every_variant_on_a_small_batch(cp, dt, variant):
    """Each decode kernel forced on one batch (the launcher picks them from the SM count)."""
    if variant in ("s2", "s8") and int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("key splits need thread-block clusters (sm_90)")
    for hq, hkv, d in ((16, 4, 128), (8, 4, 64)):
        ctx = [700, 1, 0, 64, 65, 129, 33]
        q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, len(ctx) + 1, hq, hkv, d)
        out = empty(cp, (len(ctx) + 1, hq, d), dt)
        ops._flash_decode_launch(q, kc, vc, out, scale=0.09, stream=None, variant=variant, **args)
        want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], hs["tables"], hs["seq_lens"], hs["qsl"], len(ctx),
                                   0.09)
        got = host(out)
        assert_close(got, want, dt, f"decode {variant} D={d}")
        assert not got[len(ctx):].any() and not got[2].any()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d, q_lens, ctx, pad", [
    (8, 2, 64, [3, 1, 7, 20], [3 + 10, 1, 7 + 40, 20], 5),  # short chunks after cached prefixes
    # chunks longer than one 64-row tile after a cached prefix, single-token rows mixed in,
    # an empty sequence, and padding rows
    (8, 2, 128, [150, 1, 70, 0, 3, 64], [150 + 200, 33, 70, 0, 3 + 61, 64 + 1], 9),
    (4, 4, 64, [150, 1, 70, 0, 3, 64], [150 + 200, 33, 70, 0, 3 + 61, 64 + 1], 9),
])
def test_paged_attention_chunked_prefill_mixed_lengths(cp, dt, hq, hkv, d, q_lens, ctx, pad):
    t_rows = sum(q_lens) + pad
    q, kc, vc, args, hs = _paged_setup(cp, dt, q_lens, ctx, t_rows, hq, hkv, d)
    out = empty(cp, (t_rows, hq, d), dt)
    K.paged_attention(q, kc, vc, out=out, max_query_len=max(q_lens), scale=0.1, **args)
    want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], hs["tables"], hs["seq_lens"], hs["qsl"], len(ctx), 0.1)
    got = host(out)
    assert_close(got, want, dt, "prefill")
    assert not got[sum(q_lens):].any(), "padding rows must be zeros"


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d", [(8, 2, 128), (12, 3, 64)])
def test_paged_attention_single_query_rows_are_batch_invariant(cp, dt, hq, hkv, d):
    """A one-query sequence gets the same bits from the decode launch (alone in a batch of its
    own, with or without padding) and from the mixed launch (among prefill chunks, with padding
    rows and spare sequence rows): what lets a graph replay of a padded mixed step generate
    exactly the tokens of an eager decode step."""
    q_lens = [20, 1, 1, 70, 1, 0, 1, 3]
    ctx = [20 + 5, 300, 1, 70, 129, 0, 64, 3 + 700]
    t_rows = sum(q_lens) + 11
    q, kc, vc, args, hs = _paged_setup(cp, dt, q_lens, ctx, t_rows, hq, hkv, d)
    spare = 4  # sequence rows past num_seqs, as a padded step has
    tables = np.concatenate([hs["tables"], RNG.integers(-3, 9, size=(spare, hs["tables"].shape[1]))]).astype(np.int32)
    qsl = np.concatenate([hs["qsl"], np.full(spare, hs["qsl"][-1])]).astype(np.int32)
    lens = np.concatenate([hs["seq_lens"], RNG.integers(1, 50, size=spare)]).astype(np.int32)
    mixed_args = dict(block_tables=cp.asarray(tables), seq_lens=cp.asarray(lens), query_start_loc=cp.asarray(qsl),
                      num_seqs=args["num_seqs"])
    scale = 1 / math.sqrt(d)
    out_m = empty(cp, (t_rows, hq, d), dt)
    K.paged_attention(q, kc, vc, out=out_m, max_query_len=max(q_lens), scale=scale, **mixed_args)
    want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], hs["tables"], hs["seq_lens"], hs["qsl"], len(ctx), scale)
    got_m = host(out_m)
    assert_close(got_m, want, dt, "mixed launch")
    assert not got_m[sum(q_lens):].any(), "padding rows must be zeros"

    single = [i for i, n in enumerate(q_lens) if n == 1]
    rows = hs["qsl"][single]
    for pad in (0, 5):
        n = len(single) + pad
        q_d = dev(cp, np.concatenate([hs["q"][rows], round_host(rand((pad, hq, d)), dt)]), dt)
        t_d = np.concatenate([hs["tables"][single], np.zeros((pad, tables.shape[1]), np.int32)]).astype(np.int32)
        l_d = np.concatenate([hs["seq_lens"][single], np.ones(pad, np.int32)]).astype(np.int32)
        dec_args = dict(block_tables=cp.asarray(t_d), seq_lens=cp.asarray(l_d),
                        query_start_loc=cp.asarray(np.arange(n + 1, dtype=np.int32)),
                        num_seqs=cp.asarray(np.array([len(single)], np.int32)))
        out_d = empty(cp, (n, hq, d), dt)
        K.paged_attention(q_d, kc, vc, out=out_d, max_query_len=1, scale=scale, **dec_args)
        got_d = host(out_d)
        np.testing.assert_array_equal(got_d[:len(single)], got_m[rows],
                                      err_msg=f"decode launch (pad {pad}) vs mixed launch, seed={SEED}")
        assert not got_d[len(single):].any(), "padding rows must be zeros"


# ---------------------------------------------------------------- argmax
@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("t, vocab", [(1, 32000), (7, 50257), (3, 5)])
def test_argmax_matches_numpy_including_ties(cp, dt, t, vocab):
    x_h = round_host(rand((t, vocab)), dt)
    top = RNG.integers(0, vocab, size=t)
    x_h[np.arange(t), top] = 9.0
    if vocab > 10:
        x_h[0, vocab - 1] = 9.0  # a tie: lowest index wins
    out = cp.full((t,), -7, dtype=cp.int32)
    K.argmax(dev(cp, x_h, dt), out=out)
    np.testing.assert_array_equal(out.get(), ref.argmax(x_h), err_msg=f"seed={SEED}")


# ---------------------------------------------------------------- CUDA graph capture
@pytest.mark.parametrize("dt", DTYPES)
def test_kernels_capture_into_a_cuda_graph_and_replay_with_new_inputs(cp, dt):
    """embedding -> rms_norm(+residual) -> gemm -> silu_and_mul -> gemm -> argmax, and a paged
    decode attention whose lengths change between replays, all in one captured graph."""
    t, vocab, hidden, inter = 6, 500, 256, 384
    hq, hkv, d, bs = 4, 2, 64, 16
    ids = cp.zeros((t,), cp.int32)
    table = dev(cp, rand((vocab, hidden)), dt)
    norm_w = dev(cp, rand(hidden), dt)
    w_up = dev(cp, rand((2 * inter, hidden), 0.06), dt)
    w_down = dev(cp, rand((vocab, inter), 0.05), dt)
    residual = cp.zeros((t, hidden), np_dtype(dt))
    x, h = cp.empty((t, hidden), np_dtype(dt)), cp.empty((t, hidden), np_dtype(dt))
    up, act = cp.empty((t, 2 * inter), np_dtype(dt)), cp.empty((t, inter), np_dtype(dt))
    logits, tokens = cp.empty((t, vocab), np_dtype(dt)), cp.empty((t,), cp.int32)
    nb, max_blocks = 64, 8
    kc, vc = dev(cp, rand((nb, bs, hkv, d)), dt), dev(cp, rand((nb, bs, hkv, d)), dt)
    q = dev(cp, rand((t, hq, d)), dt)
    attn = cp.empty((t, hq, d), np_dtype(dt))
    tables = cp.asarray(RNG.permutation(nb)[: t * max_blocks].reshape(t, max_blocks).astype(np.int32))
    seq_lens, qsl = cp.zeros((t,), cp.int32), cp.arange(t + 1, dtype=cp.int32)
    num_seqs = cp.zeros((1,), cp.int32)

    def step():
        K.embedding(ids, table, out=x)
        K.rms_norm(x, norm_w, 1e-6, out=h, residual=residual)
        K.gemm(h, w_up, out=up)
        K.silu_and_mul(up, out=act)
        K.gemm(act, w_down, out=logits)
        K.argmax(logits, out=tokens)
        K.paged_attention(q, kc, vc, out=attn, block_tables=tables, seq_lens=seq_lens, query_start_loc=qsl,
                          num_seqs=num_seqs, max_query_len=1, scale=0.125)

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        step()  # compile and load outside capture
        stream.synchronize()
        stream.begin_capture()
        try:
            step()
        finally:
            graph = stream.end_capture()

    for replay in range(3):
        ids_h = RNG.integers(0, vocab, size=t).astype(np.int32)
        res_h = round_host(rand((t, hidden)), dt)
        n_real = int(RNG.integers(1, t + 1))
        lens_h = RNG.integers(1, max_blocks * bs + 1, size=t).astype(np.int32)
        q_h = round_host(rand((t, hq, d)), dt)
        ids.set(ids_h)
        copy_into(residual, dev(cp, res_h, dt))
        seq_lens.set(lens_h)
        num_seqs.set(np.array([n_real], np.int32))
        copy_into(q, dev(cp, q_h, dt))
        for buf in (x, h, up, act, logits, attn, tokens):
            poison(cp, buf)
        cp.cuda.Device().synchronize()
        graph.launch(stream)
        stream.synchronize()

        x_ref = ref.embedding(ids_h, host(table))
        h_ref, res_ref = ref.rms_norm(x_ref, host(norm_w), 1e-6, residual=res_h, round_to=lambda z: round_host(z, dt))
        np.testing.assert_array_equal(host(residual), res_ref)
        assert_close(host(h), h_ref, dt, f"replay {replay}: norm")
        up_ref = ref.gemm(host(h), host(w_up))
        assert_close(host(up), up_ref, dt, f"replay {replay}: up")
        assert_close(host(act), ref.silu_and_mul(host(up)), dt, f"replay {replay}: act")
        logits_ref = ref.gemm(host(act), host(w_down))
        assert_close(host(logits), logits_ref, dt, f"replay {replay}: logits")
        np.testing.assert_array_equal(tokens.get(), ref.argmax(host(logits)))
        attn_ref = ref.paged_attention(q_h, host(kc), host(vc), tables.get(), lens_h, qsl.get(), n_real, 0.125)
        got = host(attn)
        assert_close(got, attn_ref, dt, f"replay {replay}: attention")
        assert not got[n_real:].any()
