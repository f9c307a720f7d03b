"""GPU: the Philox generator and the sampler against their NumPy references, bit for bit;
captured draws replay fresh numbers, repeat from the same seed, and follow the softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cgraph.core.errors import ArgumentError, CaptureError, StateError
from cgraph.core.sampling import GREEDY, SamplingParams, pack_sampling
from cgraph.kernels import random_reference as RR
from tests._gpu_helpers import poison, rng
from tests._kernel_checks import dev, host

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def _host32(cp, a):
    """Device logits as the float32 values the kernel reads."""
    return host(a).astype(np.float32)


def _chi2_pvalue(stat: float, df: int) -> float:
    """Upper tail of the chi-square distribution (Wilson-Hilferty; ample at p ~ 1e-6)."""
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_device_philox_equals_the_reference_bit_for_bit(cp):
    import cgraph.kernels as K

    seed = int(rng().integers(0, 2**63)) * 2 + 1
    gen = K.Generator(seed)
    assert gen.offset == 0
    first = gen.random_bits(1001)  # not a whole number of blocks
    np.testing.assert_array_equal(first.get(), RR.stream_words(seed, 0, 1001))
    assert gen.offset == 251
    u = cp.full(37, cp.nan, cp.float32)
    gen.uniform(out=u)
    np.testing.assert_array_equal(u.get(), RR.stream_uniform(seed, 251, 37))
    assert gen.offset == 251 + 10
    gen.manual_seed(seed, offset=2**64 - 2)  # the 64-bit offset carries into its high word
    np.testing.assert_array_equal(gen.random_bits(16).get(), RR.stream_words(seed, 2**64 - 2, 16))
    assert gen.offset == 2
    # the KAT key through the device: counter 0, key 0
    zero = K.Generator(0).random_bits(4).get()
    assert [int(w) for w in zero] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_a_captured_draw_is_fresh_on_every_replay_and_repeats_from_the_seed(cp):
    import cgraph
    import cgraph.kernels as K

    seed = int(rng().integers(0, 2**62))
    gen = K.Generator(seed)
    out = cp.empty(1000, cp.float32)
    graph = cgraph.capture(lambda: gen.uniform(out=out), warmup=1)
    gen.manual_seed(seed)
    runs = []
    for i in range(4):
        poison(out)
        graph.replay()
        runs.append(out.get())
        np.testing.assert_array_equal(runs[-1], RR.stream_uniform(seed, 250 * i, 1000))
    assert all(not np.array_equal(runs[i], runs[j]) for i in range(4) for j in range(i))
    assert gen.offset == 1000
    gen.manual_seed(seed)
    again = []
    for _ in range(4):
        graph.replay()
        again.append(out.get())
    np.testing.assert_array_equal(np.stack(again), np.stack(runs))
    with pytest.raises(CaptureError):
        cgraph.capture(lambda: gen.manual_seed(1), warmup=0)
    del gen  # the graph keeps the device state alive
    graph.replay()
    assert np.isfinite(out.get()).all()
    graph.close()


def _random_params(g, rows):
    out = []
    for _ in range(rows):
        kind = g.integers(0, 5)
        if kind == 0:
            out.append(GREEDY)
        else:
            out.append(SamplingParams(temperature=float(g.uniform(0.3, 2.0)),
                                      top_k=int(g.choice([0, 1, 2, 7, 50])) if kind in (1, 3) else 0,
                                      top_p=float(g.uniform(0.1, 1.0)) if kind in (2, 3) else 1.0,
                                      seed=int(g.integers(0, 2**63))))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("vocab", [1, 7, 1000, 32003, 128256])
def test_sample_equals_the_reference_sampler_exactly(cp, dtype, vocab):
    import cgraph.kernels as K

    g = rng()
    rows = 12
    scale = float(g.choice([0.5, 3.0]))
    host_logits = (g.standard_normal((rows, vocab)) * scale).astype(np.float32)
    host_logits[1] = np.round(host_logits[1])  # many ties
    if vocab > 4:
        host_logits[2, ::3] = np.nan
    logits = dev(cp, host_logits, dtype)
    params = _random_params(g, rows)
    packed = cp.asarray(pack_sampling(params, rows))
    positions = cp.asarray(g.integers(0, 2**31 - 1, rows).astype(np.int32))
    out = cp.empty(rows, cp.int32)
    poison(out)
    K.sample(logits, packed, positions, out=out)
    got = out.get()
    x = _host32(cp, logits)
    bits = RR.row_bits([p.seed for p in params], positions.get())
    want = [RR.sample_row(x[r], p.temperature, p.top_k, p.top_p, bits[r]) for r, p in enumerate(params)]
    assert got.tolist() == want
    for r, p in enumerate(params):
        if not p.greedy:
            _, kept = RR.kept_tokens(x[r], p.temperature, p.top_k, p.top_p)
            assert kept[got[r]] or not kept.any()
    # greedy rows are the argmax kernel's picks, bit for bit
    greedy = cp.empty(rows, cp.int32)
    K.argmax(logits, out=greedy)
    for r, p in enumerate(params):
        if p.greedy:
            assert got[r] == int(greedy[r])
    again = cp.empty(rows, cp.int32)
    K.sample(logits, packed, positions, out=again)
    assert again.get().tolist() == want  # deterministic


def test_all_zero_parameter_rows_are_the_argmax_kernel_bit_for_bit(cp):
    import cgraph.kernels as K

    g = rng()
    host_logits = np.round(g.standard_normal((9, 515)) * 2).astype(np.float16)  # odd width: scalar kernels, ties
    logits = cp.asarray(host_logits)
    out, ref = cp.empty(9, cp.int32), cp.empty(9, cp.int32)
    poison(out)
    K.sample(logits, cp.zeros((9, 5), cp.int32), cp.zeros(9, cp.int32), out=out)
    K.argmax(logits, out=ref)
    np.testing.assert_array_equal(out.get(), ref.get())
    np.testing.assert_array_equal(out.get(), np.argmax(host_logits.astype(np.float32), axis=1))


def test_generator_sample_captured_follows_the_softmax(cp):
    """Chi-square over 65536 captured draws on a 16-token vocabulary (a fixed seed: not flaky)."""
    import cgraph
    import cgraph.kernels as K

    g = np.random.default_rng(1234)
    vocab, rows, replays = 16, 4096, 16
    row = (g.standard_normal(vocab) * 1.5).astype(np.float32)
    logits = cp.asarray(np.tile(row, (rows, 1)))
    for t, k, p in [(1.0, 0, 1.0), (0.7, 6, 1.0), (1.3, 0, 0.8), (1.0, 5, 0.9)]:
        gen = K.Generator(20240917)
        out = cp.empty(rows, cp.int32)
        graph = cgraph.capture(lambda: gen.sample(logits, out=out, temperature=t, top_k=k, top_p=p), warmup=1)
        gen.manual_seed(20240917)
        draws = []
        for i in range(replays):
            poison(out)
            graph.replay()
            draws.append(out.get())
            if i < 2:  # each replay is the reference sampler on the stream's next blocks
                bits = RR.generator_bits(20240917, i * rows, rows)
                assert draws[-1][:64].tolist() == [RR.sample_row(row, t, k, p, b) for b in bits[:64]]
        assert not np.array_equal(draws[0], draws[1])
        gen.manual_seed(20240917)
        graph.replay()
        np.testing.assert_array_equal(out.get(), draws[0])  # the same seed repeats
        graph.close()
        w, kept = RR.kept_tokens(row, t, k, p)
        allowed = np.nonzero(kept)[0]
        counts = np.bincount(np.concatenate(draws), minlength=vocab)
        assert counts[~kept].sum() == 0, "a token outside the top-k / top-p set was drawn"
        probs = w[allowed].astype(np.float64) / float(w.sum())
        if k == 0 and p == 1.0:  # the full softmax
            z = np.exp((row.astype(np.float64) - row.max()) / t)
            np.testing.assert_allclose(probs, z / z.sum(), rtol=1e-5)
        expect = probs * rows * replays
        if len(allowed) > 1:
            stat = float(((counts[allowed] - expect) ** 2 / expect).sum())
            pval = _chi2_pvalue(stat, len(allowed) - 1)
            print(f"chi2 t={t} k={k} p={p}: stat {stat:.1f} df {len(allowed) - 1} p-value {pval:.3g}")
            assert pval > 1e-6, (stat, counts, expect)


def test_sampler_arguments_are_checked_before_launch(cp):
    import cgraph
    import cgraph.kernels as K

    logits = cp.zeros((2, 8), cp.float16)
    out = cp.empty(2, cp.int32)
    with pytest.raises(ArgumentError, match="params"):
        K.sample(logits, cp.zeros((2, 4), cp.int32), cp.zeros(2, cp.int32), out=out)
    with pytest.raises(ArgumentError):
        K.sample(logits, cp.zeros((3, 5), cp.int32), cp.zeros(3, cp.int32), out=out)
    with pytest.raises(ArgumentError, match="exceeds the sampler"):
        K.sample(cp.zeros((1, 2**22 + 8), cp.float16), cp.zeros((1, 5), cp.int32), cp.zeros(1, cp.int32),
                 out=out[:1])
    with pytest.raises(ArgumentError, match="top_p"):
        K.Generator(1).sample(logits, out=out, top_p=0.0)
    with pytest.raises(CaptureError) as err:
        cgraph.capture(lambda: K.Generator(3), warmup=0)
    assert isinstance(err.value.__cause__, StateError)
