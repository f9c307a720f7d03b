"""GPU tests of the attention kernels (paged decode, chunked prefill, varlen) against the
float64 NumPy references, element by element.

Paged caches with holes, shuffled blocks and garbage in unused table entries; GQA;
padding rows; batch invariance of one-query rows; every decode variant (the kernel that
ran is asserted, cgraph.kernels.attention.launch_paged_attention returns it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.kernels import reference as ref
from cgraph.kernels.attention import launch_paged_attention
from tests._kernel_checks import RNG, SEED, assert_close, attention_atol, dev, empty, host, poison, rand, round_host

pytestmark = pytest.mark.gpu

DTYPES = ["float16", "bfloat16"]


@pytest.fixture(scope="module")
def cp():
    from cgraph.cuda.device import require_device

    return require_device()


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


def _paged_check(got, hs, n_seqs, scale, dt, what):
    """Compare with the reference over rows of the first n_seqs sequences; returns the reference."""
    meta = (hs["tables"], hs["seq_lens"], hs["qsl"], n_seqs, scale)
    want = ref.paged_attention(hs["q"], hs["kc"], hs["vc"], *meta)
    atol = attention_atol(dt, ref.paged_attention(hs["q"], hs["kc"], np.abs(hs["vc"]), *meta))
    assert_close(got, want, dt, what, atol=atol)
    return want


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d", [(8, 2, 128), (4, 4, 64), (12, 2, 80), (16, 1, 256)])
def test_paged_attention_decode_with_padding_rows(cp, dt, hq, hkv, d):
    ctx = [1, 17, 300, 0, 64]
    t_rows = len(ctx) + 3  # 3 padding rows past num_seqs
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, t_rows, hq, hkv, d)
    out = empty(cp, (t_rows, hq, d), dt)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=1 / math.sqrt(d), **args)
    got = host(out)
    _paged_check(got, hs, len(ctx), 1 / math.sqrt(d), dt, "decode")
    assert not got[len(ctx):].any() and not got[3].any(), "padding rows and empty sequences must be zeros"


@pytest.mark.parametrize("dt", DTYPES)
def test_paged_attention_reads_num_seqs_from_device(cp, dt):
    ctx = [5, 40, 33]
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * 3, ctx, 3, 4, 2, 64)
    args["num_seqs"] = cp.asarray(np.array([2], np.int32))
    out = empty(cp, (3, 4, 64), dt)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=0.2, **args)
    got = host(out)
    _paged_check(got, hs, 2, 0.2, dt, "first two")  # the reference leaves row 2 zero as well
    assert not got[2].any(), "the row of a sequence past num_seqs is padding"


def _varlen_case(cp, dt, cu_h, t, hq, hkv, d, causal):
    qkv_h = round_host(rand((t, hq + 2 * hkv, d)), dt)
    qkv = dev(cp, qkv_h, dt)
    q, k, v = qkv[:, :hq], qkv[:, hq:hq + hkv], qkv[:, hq + hkv:]
    out = empty(cp, (t, hq, d), dt)
    cu = cp.asarray(cu_h)

    def run():
        K.varlen_attention(q, k, v, out=out, cu_seqlens=cu, max_seqlen=int(np.diff(cu_h).max()), causal=causal,
                           scale=1 / math.sqrt(d))
    run()
    qh, kh, vh = qkv_h[:, :hq], qkv_h[:, hq:hq + hkv], qkv_h[:, hq + hkv:]
    want = ref.varlen_attention(qh, kh, vh, cu_h, causal, 1 / math.sqrt(d))
    atol = attention_atol(dt, ref.varlen_attention(qh, kh, np.abs(vh), cu_h, causal, 1 / math.sqrt(d)))
    got = host(out)
    assert_close(got, want, dt, f"varlen causal={causal}", atol=atol)
    assert not got[cu_h[-1]:].any(), "padding rows must be zeros"
    return got, out, run


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("hq, hkv, d", [(4, 1, 64), (3, 3, 80), (16, 16, 64)])
def test_varlen_attention_segments_and_padding(cp, dt, causal, hq, hkv, d):
    cu_h = np.array([0, 1, 18, 150, 153], np.int32)
    _varlen_case(cp, dt, cu_h, int(cu_h[-1]) + 7, hq, hkv, d, causal)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("hq, hkv, d", [(8, 2, 128), (6, 6, 64)])
def test_varlen_attention_tensor_core_tiles_long_and_many_segments(cp, dt, causal, hq, hkv, d):
    """Segments longer than a 64-row tile, of odd lengths, empty ones, more than 32 of them
    (the on-device segment scan spans several warps' worth), and padding rows."""
    lens = [0, 1, 63, 64, 65, 300, 0, 7] + list(RNG.integers(1, 40, size=30)) + [517]
    cu_h = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    got, out, run = _varlen_case(cp, dt, cu_h, int(cu_h[-1]) + 70, hq, hkv, d, causal)
    poison(cp, out)
    run()
    np.testing.assert_array_equal(host(out), got, err_msg=f"a second launch must be bit-identical, seed={SEED}")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d, ctx", [
    (16, 8, 64, [512]),  # batch 1
    (32, 8, 128, [1, 2000, 64, 65, 0, 777]),
    (16, 1, 128, [1500, 3]),  # 16 query heads share one KV head
    (8, 1, 64, [130] * 40),
    (16, 4, 128, [(i * 37) % 300 for i in range(70)]),
    (8, 2, 64, [(i * 53) % 1100 for i in range(140)]),
])
def test_paged_attention_decode_long_and_many_contexts(cp, dt, hq, hkv, d, ctx):
    t_rows = len(ctx) + 2
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, t_rows, hq, hkv, d)
    out = empty(cp, (t_rows, hq, d), dt)
    scale = 1 / math.sqrt(d)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=scale, **args)
    got = host(out)
    _paged_check(got, hs, len(ctx), scale, dt, "decode")
    assert not got[len(ctx):].any(), "padding rows must be zeros"
    for i, n in enumerate(ctx):
        if n == 0:
            assert not got[i].any(), "a sequence with no keys gives zeros"
    poison(cp, out)
    K.paged_attention(q, kc, vc, out=out, max_query_len=1, scale=scale, **args)
    np.testing.assert_array_equal(host(out), got, err_msg=f"a second launch must be bit-identical, seed={SEED}")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("variant", ["s1", "s2", "s4", "s8", "s4serial", "h2", "h2k32", "h4k32"])
def test_paged_attention_decode_every_variant_on_a_small_batch(cp, dt, variant):
    """Each decode kernel forced on one batch (by default the launcher picks the arithmetic by
    Hkv only, and the serial or cluster kernel of it by the batch)."""
    if variant in ("s2", "s4", "s8") and int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("key splits need thread-block clusters (sm_90)")
    tag = "f16" if dt == "float16" else "bf16"
    for hq, hkv, d in ((16, 4, 128), (8, 4, 64)):
        ctx = [700, 1, 0, 64, 65, 129, 33]
        q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, len(ctx) + 1, hq, hkv, d)
        out = empty(cp, (len(ctx) + 1, hq, d), dt)
        ran = launch_paged_attention(q, kc, vc, out=out, max_query_len=1, scale=0.09, variant=variant, **args)
        assert ran == (f"flash_decode_{tag}_d{d}_{variant}",), ran
        got = host(out)
        _paged_check(got, hs, len(ctx), 0.09, dt, f"decode {variant} D={d}")
        assert not got[len(ctx):].any() and not got[2].any()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d, q_lens, ctx, pad", [
    (8, 2, 64, [3, 1, 7, 20], [3 + 10, 1, 7 + 40, 20], 5),  # short chunks after cached prefixes
    # chunks longer than one 64-row tile after a cached prefix, single-token rows mixed in,
    # an empty sequence, and padding rows
    (8, 2, 128, [150, 1, 70, 0, 3, 64], [150 + 200, 33, 70, 0, 3 + 61, 64 + 1], 9),
    (4, 4, 64, [150, 1, 70, 0, 3, 64], [150 + 200, 33, 70, 0, 3 + 61, 64 + 1], 9),
    (6, 2, 80, [40, 1, 9], [40 + 3, 20, 9], 4),  # CUDA-core kernel (D = 80), mode 1
])
def test_paged_attention_chunked_prefill_mixed_lengths(cp, dt, hq, hkv, d, q_lens, ctx, pad):
    t_rows = sum(q_lens) + pad
    q, kc, vc, args, hs = _paged_setup(cp, dt, q_lens, ctx, t_rows, hq, hkv, d)
    out = empty(cp, (t_rows, hq, d), dt)
    K.paged_attention(q, kc, vc, out=out, max_query_len=max(q_lens), scale=0.1, **args)
    got = host(out)
    _paged_check(got, hs, len(ctx), 0.1, dt, "prefill")
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
    ran = launch_paged_attention(q, kc, vc, out=out_m, max_query_len=max(q_lens), scale=scale, **mixed_args)
    assert len(ran) == 2 and ran[0].startswith("flash_") and ran[1].startswith("flash_decode_"), ran
    got_m = host(out_m)
    _paged_check(got_m, hs, len(ctx), scale, dt, "mixed launch")
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


def _split_twins(cp, dt, hq, hkv, d, ctx, variants):
    """Every variant's output (forced) over one decode batch with lengths `ctx` and 3 padding rows."""
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * len(ctx), ctx, len(ctx) + 3, hq, hkv, d)
    outs = {}
    for variant in variants:
        out = empty(cp, (len(ctx) + 3, hq, d), dt)
        poison(cp, out)
        ran = launch_paged_attention(q, kc, vc, out=out, max_query_len=1, scale=1 / math.sqrt(d), variant=variant,
                                     **args)
        assert ran[0].endswith(f"_{variant}"), ran
        outs[variant] = host(out)
    return outs, hs


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hq, hkv, d", [(32, 8, 64), (16, 4, 128), (8, 8, 64), (64, 4, 128), (24, 8, 128)])
def test_serial_splits_give_the_cluster_kernels_bits(cp, dt, hq, hkv, d):
    """s4serial computes the four key splits of s4 one after another in one CTA: the same bits
    for every length (no keys, fewer tiles than splits, split boundaries inside and on tile
    edges, long contexts), group size (1 to 16 query heads per KV head) and head size, so the
    launcher may pick either by batch size without moving a token."""
    if int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("the cluster kernel needs thread-block clusters (sm_90)")
    ctx = [0, 1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 255, 256, 257, 511, 512, 513, 700, 2049]
    ctx += [int(n) for n in RNG.integers(1, 1500, size=9)]
    outs, hs = _split_twins(cp, dt, hq, hkv, d, ctx, ("s4", "s4serial"))
    np.testing.assert_array_equal(outs["s4serial"], outs["s4"], err_msg=f"s4serial vs s4, seed={SEED}")
    _paged_check(outs["s4"], hs, len(ctx), 1 / math.sqrt(d), dt, "decode s4")
    assert not outs["s4serial"][len(ctx):].any() and not outs["s4serial"][0].any()


@pytest.mark.parametrize("dt", DTYPES)
def test_a_sequence_gets_the_same_bits_from_a_small_and_a_large_batch(cp, dt):
    """The default launch picks the cluster kernel for a small batch and its serial twin past
    SERIAL_SPLITS_CTAS_PER_SM CTAs per multiprocessor: a sequence's row is the same bits in
    both, alone or among many (what padded graphs replaying eager tokens rely on)."""
    from cgraph.kernels.attention import decode_kernel
    from cgraph.kernels.launch import device_facts

    facts = device_facts()
    if not facts.clusters:
        pytest.skip("without clusters the default kernel does not depend on the batch")
    hq, hkv, d = 32, 8, 64
    big = next(r for r in range(1, 4096) if decode_kernel(r, hkv, facts.sm_count, True).endswith("serial"))
    ctx = [int(n) for n in RNG.integers(1, 900, size=big)]
    q, kc, vc, args, hs = _paged_setup(cp, dt, [1] * big, ctx, big, hq, hkv, d)
    out = empty(cp, (big, hq, d), dt)
    ran = launch_paged_attention(q, kc, vc, out=out, max_query_len=1, scale=0.125, **args)
    assert ran[0].endswith("_s4serial"), ran
    got_big = host(out)
    _paged_check(got_big, hs, big, 0.125, dt, "large batch")
    for row in RNG.choice(big, size=4, replace=False):
        one = dict(block_tables=cp.asarray(hs["tables"][row:row + 1]), seq_lens=cp.asarray(hs["seq_lens"][row:row + 1]),
                   query_start_loc=cp.asarray(np.array([0, 1], np.int32)),
                   num_seqs=cp.asarray(np.array([1], np.int32)))
        out1 = empty(cp, (1, hq, d), dt)
        poison(cp, out1)
        ran = launch_paged_attention(q[row:row + 1], kc, vc, out=out1, max_query_len=1, scale=0.125, **one)
        assert ran[0].endswith("_s4"), ran
        np.testing.assert_array_equal(host(out1)[0], got_big[row], err_msg=f"row {row} alone vs in {big}, seed={SEED}")


@pytest.mark.parametrize("dt", DTYPES)
def test_serial_splits_give_the_cluster_kernels_bits_in_the_mixed_launch(cp, dt):
    """Next to the prefill kernel (one-query rows among chunks, spare sequence rows), the serial
    twin writes the one-query rows with the cluster kernel's bits and leaves the rest alone."""
    if int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("the cluster kernel needs thread-block clusters (sm_90)")
    hq, hkv, d = 16, 4, 128
    q_lens = [20, 1, 1, 70, 1, 0, 1, 3, 1]
    ctx = [20 + 5, 300, 1, 70, 129, 0, 64, 3 + 700, 1000]
    q, kc, vc, args, hs = _paged_setup(cp, dt, q_lens, ctx, sum(q_lens) + 7, hq, hkv, d)
    outs = {}
    for variant in ("s4", "s4serial"):
        out = empty(cp, (sum(q_lens) + 7, hq, d), dt)
        poison(cp, out)
        ran = launch_paged_attention(q, kc, vc, out=out, max_query_len=max(q_lens), scale=0.1, variant=variant,
                                     **args)
        assert len(ran) == 2 and ran[1].endswith(f"_{variant}"), ran
        outs[variant] = host(out)
    np.testing.assert_array_equal(outs["s4serial"], outs["s4"], err_msg=f"mixed launch, seed={SEED}")
    _paged_check(outs["s4serial"], hs, len(ctx), 0.1, dt, "mixed launch, s4serial")
