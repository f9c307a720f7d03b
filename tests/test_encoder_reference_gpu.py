"""VisionEncoder against an independent NumPy model of its architecture (tests/_encoder_reference.py).

The gpu-marked tests draw random small specs (tensor-core and CUDA-core attention head
sizes) and random images, and compare encode / encode_batch with the float64 reference.
The unmarked tests run on the CPU and check that the reference itself is not trivially
wrong: its patch order, per-image attention in a packed batch, and its float16 simulation.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import _encoder_reference as E

# float16 activations (every kernel stores its output in float16) put the encoder's output
# off the float64 model by a few 1e-3 of the output's RMS. Bound derived without a GPU: the
# reference run in float64 and again rounding each activation to float16 where the kernels
# store one (E.simulated_error, which draws a spec of E.random_spec, weights and the images
# of E.image_sizes): over 4000 seeds the worst max|float16 - float64| / RMS(float64 output)
# was 0.0131 (median 0.0056, 99.9th percentile 0.0114: a smooth tail, no outlier spec); the
# bound is 3x that. Element-wise: every output element of every image is within
# REL_TOL * RMS of that image's reference output.
WORST_SIMULATED = 0.0131
REL_TOL = 3 * WORST_SIMULATED


def _assert_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, reference {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite outputs (an unwritten element reads the NaN poison)"
    rms = float(np.sqrt(np.mean(ref * ref)))
    err = np.abs(got - ref)
    token, feature = np.unravel_index(int(err.argmax()), err.shape)
    assert err.max() <= REL_TOL * rms, (
        f"{what}: |gpu - numpy| = {err.max():.3g} at token {token}, feature {feature} is "
        f"{err.max() / rms:.3g} x the output RMS {rms:.3g}; float16 storage explains {REL_TOL} x")


# --------------------------------------------------------------------------- GPU
def _poison_pool(cp, nbytes: int = 64 << 20) -> None:
    """NaN-fill a block of the memory pool and free it: encode allocates its activations and
    output from the pool, so an element no kernel writes reads NaN, not a plausible stale value."""
    junk = cp.full(nbytes // 2, np.nan, cp.float16)
    cp.cuda.get_current_stream().synchronize()
    del junk


def _random_model(rng):
    from cgraph.encoder.model import EncoderSpec, VisionEncoder

    return VisionEncoder(EncoderSpec(**E.random_spec(rng)), seed=int(rng.integers(1 << 31)))


@pytest.mark.gpu
@pytest.mark.parametrize("trial", range(3))
def test_encode_matches_the_numpy_model(trial):
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng()
    model = _random_model(rng)
    w = E.weights_of(model)
    for th, tw in E.image_sizes(rng):
        image = E.random_image(rng, w.spec, th, tw)
        what = f"{model.spec} image {image.shape}"
        prepared = model.prepare(cp.asarray(image))
        patches, positions = E.window_patches(image, w.spec.patch, w.spec.max_grid)
        # prepare is a permutation: the same float16 values, in the documented order
        np.testing.assert_array_equal(prepared.patches.get().astype(np.float64), patches, err_msg=what)
        np.testing.assert_array_equal(np.asarray(prepared.positions), positions, err_msg=what)
        _poison_pool(cp)
        got = model.encode(prepared).get()
        assert got.shape == (th * tw, w.spec.out_dim)
        _assert_close(got, E.encode(w, image), what)


@pytest.mark.gpu
def test_packed_batch_matches_the_numpy_model_per_image():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng()
    model = _random_model(rng)
    w = E.weights_of(model)
    sizes = E.image_sizes(rng) + E.image_sizes(rng)
    images = [E.random_image(rng, w.spec, th, tw) for th, tw in (sizes[i] for i in rng.permutation(len(sizes)))]
    _poison_pool(cp)
    outs = model.encode_batch([cp.asarray(im) for im in images])
    assert len(outs) == len(images)
    for i, (image, out) in enumerate(zip(images, outs)):
        # each image against the reference of that image alone: attention stays within it
        _assert_close(out.get(), E.encode(w, image), f"{model.spec} batch item {i} {image.shape}")


# --------------------------------------------------------------------------- the reference (CPU)
def _small(rng):
    spec = E.RefSpec(**E.random_spec(rng, max_side=4))
    return spec, E.random_weights(spec, rng)


def test_window_patches_follow_the_documented_order():
    rng = np.random.default_rng()
    spec, _ = _small(rng)
    th, tw = (int(v) for v in rng.integers(1, 5, 2))
    image = E.random_image(rng, spec, th, tw)
    patches, positions = E.window_patches(image, spec.patch, spec.max_grid)
    p = spec.patch
    assert patches.shape == (4 * th * tw, spec.channels * p * p)
    rows_cols = [divmod(int(q), spec.max_grid) for q in positions]
    for (r, c), row in zip(rows_cols, patches):  # each row is the patch at its position id
        np.testing.assert_array_equal(row, image[:, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1))
    for j in range(th * tw):  # windows row-major; inside one, row-major 2x2
        wr, wc = divmod(j, tw)
        assert rows_cols[4 * j:4 * j + 4] == [(2 * wr, 2 * wc), (2 * wr, 2 * wc + 1),
                                              (2 * wr + 1, 2 * wc), (2 * wr + 1, 2 * wc + 1)]


def test_attention_matches_a_row_by_row_softmax():
    rng = np.random.default_rng()
    n, heads, d = int(rng.integers(4, 40)), int(rng.integers(1, 4)), 8 * int(rng.integers(1, 5))
    q, k, v = (rng.standard_normal((n, heads, d)) for _ in range(3))
    got = E._attention(q, k, v, lambda z: z)
    for h in range(heads):
        for i in range(n):
            s = k[:, h] @ q[i, h] / np.sqrt(d)
            p = np.exp(s - s.max())
            np.testing.assert_allclose(got[i, h], p @ v[:, h] / p.sum(), rtol=1e-12, atol=1e-12)


def test_packed_batch_is_per_image_and_order_free():
    rng = np.random.default_rng()
    spec, w = _small(rng)
    images = [E.random_image(rng, spec, *(int(v) for v in rng.integers(1, 5, 2))) for _ in range(4)]
    alone = [E.encode(w, im) for im in images]
    order = rng.permutation(len(images))
    packed = E.encode_packed(w, [images[i] for i in order])
    for i, out in zip(order, packed):
        np.testing.assert_allclose(out, alone[i], rtol=1e-10, atol=1e-10)


def test_a_token_depends_only_on_its_own_image_and_on_all_of_it():
    rng = np.random.default_rng()
    spec, w = _small(rng)
    images = [E.random_image(rng, spec, 2, 2) for _ in range(3)]
    before = E.encode_packed(w, images)
    changed = list(images)
    changed[1] = images[1].copy()
    p = spec.patch
    # only the bottom-right patch: its window is the last output token, so a change in the
    # first token comes through attention, which is bidirectional (a causal mask would hide it)
    changed[1][:, -p:, -p:] = E.random_image(rng, spec, 1, 1)[:, :p, :p]
    after = E.encode_packed(w, changed)
    for i in (0, 2):
        np.testing.assert_allclose(after[i], before[i], rtol=1e-10, atol=1e-10)
    rms = np.sqrt(np.mean(before[1] ** 2))
    assert np.abs(after[1][0] - before[1][0]).max() > 1e-3 * rms


def test_float16_simulation_is_within_the_derived_bound():
    rng = np.random.default_rng()
    for _ in range(3):
        err = E.simulated_error(rng)
        assert 1e-5 < err <= REL_TOL, err  # rounding happened, and stays inside the GPU bound
