"""CPU: the Philox4x32-10 reference (known-answer vectors), the generator stream layout,
SamplingParams validation and packing, and the NumPy reference sampler's semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.core.sampling import GREEDY, SAMPLING_WIDTH, SamplingParams, pack_sampling, unpack_sampling
from cgraph.engine import Request, ScheduledBatch, ScheduledSeq, build_metadata
from cgraph.kernels import random_reference as RR

# Random123's known-answer vectors for philox4x32-10 (kat_vectors)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, want", KAT)
def test_philox_matches_the_random123_known_answers(counter, key, want):
    got = RR.philox4x32(np.array([counter], np.uint64), key)
    assert tuple(int(w) for w in got[0]) == want


def test_philox_is_vectorized_row_by_row():
    counters = np.array([c for c, _, _ in KAT[:2]] * 3, np.uint64)
    got = RR.philox4x32(counters, (0, 0))
    assert tuple(int(w) for w in got[0]) == KAT[0][2]
    assert (got[0] == got[2]).all() and (got[1] == got[3]).all() and not (got[0] == got[1]).all()


def test_stream_words_are_the_blocks_from_the_offset_and_wrap_at_2_64():
    seed = 0x0123456789ABCDEF
    words = RR.stream_words(seed, 5, 10)
    blocks = RR.philox4x32(np.array([[5, 0, 0, 0], [6, 0, 0, 0], [7, 0, 0, 0]], np.uint64),
                           (seed & 0xFFFFFFFF, seed >> 32)).reshape(-1)
    np.testing.assert_array_equal(words, blocks[:10])
    # a draw continues where the last one stopped: offsets count 4-word blocks
    np.testing.assert_array_equal(RR.stream_words(seed, 0, 12)[8:], RR.stream_words(seed, 2, 4))
    wrapped = RR.stream_words(seed, 2**64 - 1, 8)
    np.testing.assert_array_equal(wrapped[4:], RR.stream_words(seed, 0, 4))
    u = RR.stream_uniform(seed, 0, 1000)
    assert u.dtype == np.float32 and 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.05


def test_sampling_params_validation_names_the_value_and_the_fix():
    assert GREEDY.greedy and SamplingParams(temperature=0.7).temperature == pytest.approx(0.7)
    for kwargs, match in [({"temperature": -1.0}, "temperature=-1.0"), ({"temperature": float("nan")}, "finite"),
                          ({"temperature": float("inf")}, "finite"), ({"temperature": 1e-40}, "too small"),
                          ({"top_p": 0.0}, r"top_p=0.0.*\(0, 1\]"), ({"top_p": 1.5}, "top_p=1.5"),
                          ({"top_k": -1}, "top_k=-1"), ({"seed": -1}, "seed=-1"), ({"seed": 2**64}, "seed=")]:
        with pytest.raises(ArgumentError, match=match):
            SamplingParams(**kwargs)
    for kwargs in [{"temperature": "hot"}, {"top_k": 2.5}, {"top_k": True}, {"seed": 1.0}, {"top_p": None}]:
        with pytest.raises(ArgumentTypeError):
            SamplingParams(**kwargs)
    with pytest.raises(ArgumentTypeError, match="SamplingParams"):
        Request(0, [1, 2], sampling={"temperature": 1.0})
    assert Request(0, [1]).sampling is GREEDY


def test_pack_sampling_round_trips_and_pads_with_greedy_rows():
    params = [SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=2**64 - 3), GREEDY,
              SamplingParams(temperature=1.0, seed=7)]
    packed = pack_sampling(params, 5)
    assert packed.shape == (5, SAMPLING_WIDTH) and packed.dtype == np.int32
    assert (packed[1] == 0).all() and (packed[3:] == 0).all()
    rows = unpack_sampling(packed)
    assert rows[0] == (np.float32(0.8), np.float32(0.95), 40, 2**64 - 3)
    assert rows[2] == (1.0, 1.0, 0, 7) and rows[1] == (0.0, 0.0, 0, 0)
    with pytest.raises(ArgumentError, match="do not fit"):
        pack_sampling(params, 2)


def test_metadata_carries_each_rows_sampling_parameters():
    sp = SamplingParams(temperature=0.5, top_k=3, seed=11)
    batch = ScheduledBatch((ScheduledSeq(0, (5,), 3, (0,), 0), ScheduledSeq(1, (1, 2), 0, (1,), sampling=sp)), 1)
    meta = build_metadata(batch, num_tokens=4, num_seqs=4, max_blocks=2)
    np.testing.assert_array_equal(meta.sampling, pack_sampling([GREEDY, sp], 4))
    np.testing.assert_array_equal(meta.seq_lens[:2], [4, 2])  # each row samples at its seq_len


def test_exp_weight_is_e_to_the_x_in_40_bit_fixed_point():
    x = -np.random.default_rng().exponential(4.0, 5000).astype(np.float32)
    x[:3] = (0.0, -1e-30, -20.7)
    got = RR.exp_weight(x).astype(np.float64)
    want = np.exp(x.astype(np.float64)) * 2.0**40
    ok = x > -20.0
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-6, atol=1.0)  # truncated to an integer
    assert got[0] == 2.0**40
    assert (RR.exp_weight(np.array([-30.0, -np.inf, np.nan], np.float32)) == 0).all()


def test_ordered_key_sorts_like_the_floats():
    v = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], np.float32)
    k = RR.ordered_key(v)
    assert (np.diff(k.astype(np.int64)) > 0).all()


def _probs(logits, t):
    z = np.exp((logits.astype(np.float64) - logits.max()) / t)
    return z / z.sum()


def test_top_k_keeps_the_k_largest_and_ties_at_the_kth_value():
    rng = np.random.default_rng()
    x = rng.standard_normal(300).astype(np.float32)
    for k in (1, 5, 299, 300, 1000):
        _, kept = RR.kept_tokens(x, 1.0, k, 1.0)
        assert set(np.nonzero(kept)[0]) == set(np.argsort(-x)[:min(k, 300)].tolist())
    tied = np.array([3.0, 1.0, 2.0, 2.0, 2.0, 0.5], np.float32)
    _, kept = RR.kept_tokens(tied, 1.0, 2, 1.0)
    assert kept.tolist() == [True, False, True, True, True, False]


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    rng = np.random.default_rng()
    for _ in range(20):
        x = (rng.standard_normal(200) * 2).astype(np.float32)
        p = float(rng.uniform(0.05, 0.99))
        w, kept = RR.kept_tokens(x, 0.9, 0, p)
        order = np.argsort(-w.astype(np.float64))
        n = int(kept.sum())
        assert set(order[:n].tolist()) == set(np.nonzero(kept)[0].tolist())  # the most probable ones
        all_w, _ = RR.kept_tokens(x, 0.9, 0, 1.0)
        total = float(all_w.sum())
        assert float(w.sum()) >= p * total > float(w.sum()) - float(w[kept].min())  # minimal
        # the weights are the softmax at temperature 0.9, to float32 accuracy
        np.testing.assert_allclose(all_w / total, _probs(x, 0.9), rtol=2e-5, atol=1e-12)


def test_sample_row_is_the_inverse_cdf_of_one_draw():
    rng = np.random.default_rng()
    x = rng.standard_normal(50).astype(np.float32)
    w, kept = RR.kept_tokens(x, 1.3, 10, 0.8)
    ids = np.nonzero(kept)[0]
    assert RR.sample_row(x, 1.3, 10, 0.8, 0) == ids[0]
    assert RR.sample_row(x, 1.3, 10, 0.8, 2**64 - 1) == ids[-1]
    assert RR.sample_row(x, 0.0, 10, 0.8, 12345) == int(np.argmax(x))  # greedy ignores the rest
    draws = [RR.sample_row(x, 1.3, 10, 0.8, int(b)) for b in rng.integers(0, 2**63, 4000) * 2]
    assert set(draws) <= set(ids.tolist())
    counts = np.bincount(draws, minlength=50)[ids]
    expect = w[ids].astype(np.float64) / float(w.sum()) * len(draws)
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 3 * len(ids) + 30  # far beyond any plausible fluctuation (df = len(ids) - 1)


def test_sample_row_falls_back_to_argmax_without_finite_mass():
    assert RR.sample_row(np.full(4, np.nan, np.float32), 1.0, 0, 1.0, 99) == 0
    assert RR.sample_row(np.array([np.nan, -np.inf, -np.inf], np.float32), 1.0, 0, 1.0, 99) == 1
    assert RR.sample_row(np.array([0.0, np.inf, np.inf], np.float32), 1.0, 0, 1.0, 99) == 1


def test_row_bits_depend_on_seed_and_position_only():
    a = RR.row_bits([1, 1, 2], [10, 11, 10])
    assert len(set(a)) == 3 and RR.row_bits([1], [11]) == [a[1]]
    assert all(0 <= b < 2**64 for b in a)
    g = RR.generator_bits(5, 3, 4)
    assert g[1:] == RR.generator_bits(5, 4, 3)
    assert not math.isnan(float(g[0]))
