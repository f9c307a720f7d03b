"""GPU tests of the row-wise kernels (embedding, RMSNorm, rotary, SiLU-and-mul, KV-cache
write, argmax) against the NumPy references, and one CUDA-graph capture of a whole step.

Fresh random inputs on every run (the seed is in each failure message), outputs poisoned
with NaN / sentinels before each launch, element-wise bounds derived from each kernel's
arithmetic (tests/_kernel_checks.py), awkward sizes and padding conventions. GEMM and
attention have their own files (test_kernels_gemm_gpu.py, test_kernels_attention_gpu.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.kernels import reference as ref
from tests._kernel_checks import (RMS_FP32_OPS, RNG, SEED, SILU_FP32_OPS, U32, assert_close, attention_atol, copy_into,
                                  dev, empty, gemm_atol, host, np_dtype, poison, rand, round_host)

pytestmark = pytest.mark.gpu

ALL_DTYPES = ["float16", "bfloat16", "float32"]
DTYPES = ["float16", "bfloat16"]


@pytest.fixture(scope="module")
def cp():
    from cgraph.cuda.device import require_device

    return require_device()


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
    assert_close(host(out), want, dt, "rms_norm out", fp32_ops=RMS_FP32_OPS)
    if with_residual:  # x + r is exact in fp32, then rounded once: the same bits as the host's
        np.testing.assert_array_equal(host(res), new_res, err_msg=f"residual seed={SEED}")


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
    # x1*cos - x2*sin in fp32: three roundings of terms at most max|x| each; the difference
    # may cancel, so the bound is absolute
    atol = 8 * U32 * np.abs(qkv_h).max()
    assert_close(got[:, : hq * head], ref.rotary_embedding(pos_h, qkv_h[:, : hq * head], cache_h, head), dt, "q",
                 atol=atol)
    assert_close(got[:, hq * head:(hq + hk) * head],
                 ref.rotary_embedding(pos_h, qkv_h[:, hq * head:(hq + hk) * head], cache_h, head), dt, "k", atol=atol)
    np.testing.assert_array_equal(got[:, (hq + hk) * head:], qkv_h[:, (hq + hk) * head:])  # v untouched
    np.testing.assert_array_equal(got[3], qkv_h[3])


@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("head, hq, hk", [(128, 4, 2), (64, 32, 8), (10, 3, 1)])
def test_rotary_and_cache_equals_rotary_then_cache_write_bit_for_bit(cp, dt, head, hq, hk):
    """The fused launch against the two launches it replaces, on strided views of one qkv
    buffer: padding positions (q and k untouched, k still cached), skipped slots (-1, past
    the cache), poisoned caches elsewhere kept as they were."""
    t, max_pos, nb, bs = 19, 300, 6, 16
    qkv_h = round_host(rand((t, (hq + 2 * hk) * head)), dt)
    pos_h = RNG.integers(0, max_pos, size=t).astype(np.int32)
    pos_h[[3, 11]] = [-1, max_pos]
    slots_h = RNG.permutation(nb * bs)[:t].astype(np.int32)
    slots_h[[5, 11]] = [-1, nb * bs + 3]
    cache = K.make_cos_sin_cache(max_pos, head)
    kc_h, vc_h = round_host(rand((nb, bs, hk, head)), dt), round_host(rand((nb, bs, hk, head)), dt)
    results = []
    for fused in (False, True):
        qkv, kc, vc = dev(cp, qkv_h, dt), dev(cp, kc_h, dt), dev(cp, vc_h, dt)
        q = qkv[:, : hq * head]
        k = qkv[:, hq * head:(hq + hk) * head]
        k3, v3 = (cp.lib.stride_tricks.as_strided(x, shape=(t, hk, head), strides=(qkv.strides[0], head * x.itemsize,
                                                                                   x.itemsize))
                  for x in (k, qkv[:, (hq + hk) * head:]))
        pos, slots = cp.asarray(pos_h), cp.asarray(slots_h)
        if fused:
            K.rotary_and_cache(pos, q, k3, v3, cache, kc, vc, slots)
        else:
            K.rotary_embedding(pos, q, k, cache, head_size=head)
            K.reshape_and_cache(k3, v3, kc, vc, slots)
        results.append((host(qkv), host(kc), host(vc)))
    for what, a, b in zip(("qkv", "k_cache", "v_cache"), *results):
        np.testing.assert_array_equal(b, a, err_msg=f"{what}: fused vs two launches, seed={SEED}")
    assert not np.array_equal(results[1][1], kc_h), "the fused launch wrote the cache"


@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("t, inter", [(1, 8), (37, 11008), (5, 13), (70000, 8)])
def test_silu_and_mul_matches_reference(cp, dt, t, inter):
    x_h = round_host(rand((t, 2 * inter), 2.0), dt)
    out = empty(cp, (t, inter), dt)
    K.silu_and_mul(dev(cp, x_h, dt), out=out)
    assert_close(host(out), ref.silu_and_mul(x_h), dt, "silu_and_mul", fp32_ops=SILU_FP32_OPS)


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


@pytest.mark.parametrize("t, n", [(1, 1), (37, 8), (1000, 300)])
def test_feed_tokens_replaces_ids_whose_source_is_a_sampled_row(cp, t, n):
    ids_h = RNG.integers(0, 50000, size=t).astype(np.int32)
    source_h = RNG.integers(-3, n + 3, size=t).astype(np.int32)  # -1 and out-of-range rows keep the id
    sampled_h = RNG.integers(0, 50000, size=n).astype(np.int32)
    ids = cp.asarray(ids_h)
    K.feed_tokens(ids, cp.asarray(source_h), cp.asarray(sampled_h))
    np.testing.assert_array_equal(ids.get(), ref.feed_tokens(ids_h, source_h, sampled_h), err_msg=f"seed={SEED}")


@pytest.mark.parametrize("n", [1, 37, 1000])
def test_publish_tokens_feeds_the_next_step_and_writes_pinned_host_memory(cp, n):
    import cupyx

    tok_h = RNG.integers(0, 50000, size=n).astype(np.int32)
    sampled = cp.full((n + 3,), -7, cp.int32)
    host = cupyx.empty_pinned((n + 5,), np.int32)
    host[...] = -9
    K.publish_tokens(cp.asarray(tok_h), sampled[:n], host)
    cp.cuda.get_current_stream().synchronize()
    np.testing.assert_array_equal(sampled.get()[:n], tok_h, err_msg=f"seed={SEED}")
    np.testing.assert_array_equal(host[:n], tok_h, err_msg=f"seed={SEED}")
    assert (sampled.get()[n:] == -7).all() and (host[n:] == -9).all()
    with pytest.raises(TypeError, match="pinned"):
        K.publish_tokens(cp.asarray(tok_h), sampled[:n], np.zeros(n, np.int32))  # pageable memory
    with pytest.raises(TypeError, match="int32"):
        K.publish_tokens(cp.asarray(tok_h), sampled[:n], host[: n - 1] if n > 1 else host.astype(np.int64))


@pytest.mark.parametrize("rows, live, max_blocks", [(1, 1, 4), (8, 5, 16), (300, 300, 8)])
def test_advance_decode_moves_live_rows_on_and_never_reads_past_the_table(cp, rows, live, max_blocks):
    bs = 16
    pos_h = RNG.integers(0, bs * max_blocks, size=rows).astype(np.int32)
    pos_h[: min(2, live)] = bs * max_blocks - 1  # next position falls off the table: slot -1
    lens_h, slots_h = RNG.integers(0, 999, size=rows).astype(np.int32), RNG.integers(-1, 999, size=rows).astype(np.int32)
    source_h = RNG.integers(-1, rows, size=rows).astype(np.int32)
    tables_h = RNG.integers(0, 10000, size=(rows, max_blocks)).astype(np.int32)
    arrays = [cp.asarray(a) for a in (pos_h, lens_h, slots_h, source_h)]
    K.advance_decode(*arrays, cp.asarray(tables_h), cp.asarray(np.array([live], np.int32)), block_size=bs)
    want = ref.advance_decode(pos_h, lens_h, slots_h, source_h, tables_h, live, bs)
    for name, got, exp in zip(("positions", "seq_lens", "slot_mapping", "token_source"), arrays, want):
        np.testing.assert_array_equal(got.get(), exp, err_msg=f"{name} seed={SEED}")


@pytest.mark.parametrize("rows, live, steps, count", [(1, 1, 4, 0), (8, 5, 16, 15), (300, 300, 3, 7), (600, 2, 8, 2)])
def test_decode_loop_step_does_one_iterations_bookkeeping_in_one_launch(cp, rows, live, steps, count):
    """record + keep the sampled tokens, advance live rows, mark stopped rows, count and
    predicate (600 rows: more rows than the CTA's threads); count 7 of 3 steps records nothing."""
    from cgraph.engine.multistep import MAX_STOP_IDS

    bs, max_blocks = 16, 8
    tok_h = RNG.integers(0, 50000, size=rows).astype(np.int32)
    stop_h = RNG.integers(-1, 50000, size=(rows, MAX_STOP_IDS)).astype(np.int32)
    hit = RNG.random(rows) < 0.5
    stop_h[hit, RNG.integers(0, MAX_STOP_IDS, size=int(hit.sum()))] = tok_h[hit]
    done_h = (RNG.random(rows) < 0.2).astype(np.int32)
    pos_h = RNG.integers(0, bs * max_blocks, size=rows).astype(np.int32)
    meta_h = [pos_h, pos_h + 1, RNG.integers(-1, 999, size=rows).astype(np.int32),
              RNG.integers(-1, rows, size=rows).astype(np.int32)]
    tables_h = RNG.integers(0, 10000, size=(rows, max_blocks)).astype(np.int32)
    hist_h = RNG.integers(-99, -1, size=(steps, rows)).astype(np.int32)  # poison
    for limit in (count + 1, count + 5):
        hist, sampled = cp.asarray(hist_h), cp.full((rows,), -7, cp.int32)
        meta = [cp.asarray(a) for a in meta_h]
        done, cnt = cp.asarray(done_h), cp.asarray(np.array([count], np.int32))
        pred = cp.full((1,), -3, cp.int32)
        K.decode_loop_step(hist, cp.asarray(tok_h), sampled, *meta, cp.asarray(tables_h),
                           cp.asarray(np.array([live], np.int32)), cp.asarray(stop_h), done, cnt,
                           cp.asarray(np.array([limit], np.int32)), pred, block_size=bs)
        want = ref.decode_loop_step(hist_h, tok_h, *meta_h, tables_h, live, stop_h, done_h, count, limit, bs)
        got = {"history": hist, "sampled": sampled, "positions": meta[0], "seq_lens": meta[1],
               "slot_mapping": meta[2], "token_source": meta[3], "done": done}
        for name, arr in got.items():
            np.testing.assert_array_equal(arr.get(), want[name], err_msg=f"{name} limit={limit} seed={SEED}")
        assert int(cnt.get()[0]) == count + 1 and int(pred.get()[0]) == want["pred"], f"seed={SEED}"
    done = cp.asarray(np.ones(rows, np.int32))
    cnt, pred = cp.asarray(np.array([5], np.int32)), cp.full((1,), -3, cp.int32)
    for limit, go in ((0, 0), (3, 1)):
        K.start_decode_loop(cnt, done, cp.asarray(np.array([limit], np.int32)), pred)
        assert int(cnt.get()[0]) == 0 and int(pred.get()[0]) == go and not done.get().any()


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
        assert_close(host(h), h_ref, dt, f"replay {replay}: norm", fp32_ops=RMS_FP32_OPS)
        for got, a_h, w_h, what in ((up, host(h), host(w_up), "up"), (logits, host(act), host(w_down), "logits")):
            assert_close(host(got), ref.gemm(a_h, w_h), dt, f"replay {replay}: {what}",
                         atol=gemm_atol(a_h, w_h, None, fallback=False))
        assert_close(host(act), ref.silu_and_mul(host(up)), dt, f"replay {replay}: act", fp32_ops=SILU_FP32_OPS)
        np.testing.assert_array_equal(tokens.get(), ref.argmax(host(logits)))
        args = (tables.get(), lens_h, qsl.get(), n_real, 0.125)
        attn_ref = ref.paged_attention(q_h, host(kc), host(vc), *args)
        got = host(attn)
        assert_close(got, attn_ref, dt, f"replay {replay}: attention",
                     atol=attention_atol(dt, ref.paged_attention(q_h, host(kc), np.abs(host(vc)), *args)))
        assert not got[n_real:].any()
