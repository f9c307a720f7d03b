"""EncoderGraphManager on a GPU: budget graphs give the eager encoder's outputs (gpu)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

SPEC = dict(channels=3, patch=4, hidden=64, heads=1, layers=2, mlp=128, merger=64, out_dim=48, max_grid=64)


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def model():
    from cgraph.encoder.model import EncoderSpec, VisionEncoder

    return VisionEncoder(EncoderSpec(**SPEC), seed=1234)


def _image(cp, rng, tokens_h, tokens_w):
    """Random image whose output grid is tokens_h x tokens_w (patch 4, 2x2 merge)."""
    step = SPEC["patch"] * 2
    return cp.asarray(rng.standard_normal((3, tokens_h * step, tokens_w * step)).astype(np.float16))


def _mixed_images(cp, rng, n, max_side):
    return [_image(cp, rng, int(rng.integers(1, max_side + 1)), int(rng.integers(1, max_side + 1)))
            for _ in range(n)]


def _assert_close(got, want):
    g = got.get().astype(np.float32)
    w = want.get().astype(np.float32)
    assert g.shape == w.shape
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2)


def test_outputs_equal_eager_on_random_mixed_sizes(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    images = _mixed_images(cp, rng, 12, 10)  # 1..100 tokens each
    # debug: padding rows are NaN, so any leak of padding into real rows shows up
    with EncoderGraphManager(model, (16, 32, 64, 128), 4, debug=True) as mgr:
        outs = mgr.execute(images)
        assert len(outs) == len(images)
        for img, out in zip(images, outs):
            assert out.shape == (model.output_tokens(img.shape[1], img.shape[2]), SPEC["out_dim"])
            _assert_close(out, model.encode(img))
        assert mgr.stats.misses == 0 and mgr.stats.hits == 12


def test_outputs_are_copies_that_later_replays_do_not_overwrite(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    first = _mixed_images(cp, rng, 5, 6)
    with EncoderGraphManager(model, (32, 64), 4) as mgr:
        kept = mgr.execute(first)
        snapshot = [o.get() for o in kept]
        for _ in range(3):
            mgr.execute(_mixed_images(cp, rng, 5, 6))
        for o, s in zip(kept, snapshot):
            np.testing.assert_array_equal(o.get(), s)
        for img, o in zip(first, kept):
            _assert_close(o, model.encode(img))


def test_oversize_image_runs_eagerly_and_counts_a_miss(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    small = _image(cp, rng, 3, 4)  # 12 tokens
    big = _image(cp, rng, 8, 9)  # 72 tokens > largest budget 64
    with EncoderGraphManager(model, (16, 64), 4) as mgr:
        assert mgr.plan([big, small])[-1].eager
        outs = mgr.execute([big, small])
        _assert_close(outs[0], model.encode(big))
        _assert_close(outs[1], model.encode(small))
        s = mgr.stats
        assert (s.hits, s.misses) == (1, 1)
        assert s.hit_rate == pytest.approx(0.5)
        assert dict(s.budget_replays) == {16: 1, 64: 0}


def test_eight_images_with_max_batch_4_are_packed_4_plus_4(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    images = [_image(cp, rng, 2, 2) for _ in range(8)]  # 4 tokens each
    with EncoderGraphManager(model, (16, 32), 4) as mgr:
        plan = mgr.plan(images)
        assert [len(b.items) for b in plan] == [4, 4]
        assert [b.budget for b in plan] == [16, 16]
        outs = mgr.execute(images)
        assert dict(mgr.stats.budget_replays) == {16: 2, 32: 0}
        for img, o in zip(images, outs):
            _assert_close(o, model.encode(img))


def test_stats_add_up_over_calls(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    with EncoderGraphManager(model, (16, 32, 64), 3) as mgr:
        total, batches, eager, real, padded = 0, 0, 0, 0, 0
        for n in (4, 7, 1):
            imgs = _mixed_images(cp, rng, n, 9)
            plan = mgr.plan(imgs)
            mgr.execute(imgs)
            total += n
            batches += sum(not b.eager for b in plan)
            eager += sum(b.eager for b in plan)
            real += sum(b.tokens for b in plan if not b.eager)
            padded += sum(b.budget for b in plan if not b.eager)
        s = mgr.stats
        assert s.hits + s.misses == s.items == total
        assert s.misses == eager and s.replays == batches
        assert (s.graph_tokens, s.padded_tokens) == (real, padded)
        mgr.reset_stats()
        assert mgr.stats.items == 0 and mgr.stats.hit_rate == 0.0


def test_prepared_images_and_numpy_images_are_accepted(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    img = _image(cp, rng, 3, 5)
    with EncoderGraphManager(model, (16,), 2) as mgr:
        a, b = mgr.execute([model.prepare(img), img.get()])
        _assert_close(a, model.encode(img))
        _assert_close(b, model.encode(img))


def test_packed_eager_batch_equals_single_images(cp, model):
    rng = np.random.default_rng()
    images = _mixed_images(cp, rng, 4, 5)
    for img, o in zip(images, model.encode_batch(images)):
        _assert_close(o, model.encode(img))


def test_graphs_are_captured_largest_first_into_one_pool(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    with EncoderGraphManager(model, (16, 32, 64), 2) as mgr:
        pools = {id(mgr.graph(b).pool) for b in mgr.budgets}
        assert pools == {id(mgr.pool)}
        assert mgr.graph(64).num_nodes > 0
        with pytest.raises(KeyError):
            mgr.graph(48)


def test_bad_images_and_settings_raise_clear_errors(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    with pytest.raises(ValueError, match="multiples of 2"):
        model.prepare(cp.zeros((3, 12, 16), cp.float16))
    with pytest.raises(ValueError, match="channels"):
        model.prepare(cp.zeros((1, 16, 16), cp.float16))
    with pytest.raises(ValueError, match="max_batch_size"):
        EncoderGraphManager(model, (4, 8), 5)
