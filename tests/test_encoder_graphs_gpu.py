"""The staging and output path of EncoderGraphManager for two encoder shapes and a
protocol-only encoder: outputs equal eager per image with poisoned graph outputs (gpu)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

BASE = dict(channels=3, patch=4, hidden=64, heads=1, layers=2, mlp=128, merger=64, out_dim=48, max_grid=64)


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module", params=[2, 1], ids=["merge2x2", "no-merger"])
def model(request):
    from cgraph.encoder.model import EncoderSpec, VisionEncoder

    seed = int(np.random.default_rng().integers(1 << 30))
    return VisionEncoder(EncoderSpec(**BASE, merge=request.param), seed=seed)


def _images(cp, model, rng, n, max_side, *, host_every=2):
    """Random images, every `host_every`-th one prepared on the host (NumPy patches)."""
    step = model.spec.patch * model.spec.merge
    out = []
    for i in range(n):
        r, c = (int(v) for v in rng.integers(1, max_side + 1, size=2))
        im = rng.standard_normal((3, r * step, c * step)).astype(np.float16)
        out.append(model.prepare(im) if i % host_every == 0 else model.prepare(cp.asarray(im)))
    return out


def _close(got, want):
    g = got.get().astype(np.float32)
    w = want.get().astype(np.float32)
    assert g.shape == w.shape
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2)


def _poison(cp, mgr):
    """NaN into every graph's output buffer and the whole static input region's patches."""
    for b in mgr.budgets:
        mgr.graph(b).outputs.fill(float("nan"))
    mgr.stager.patches.fill(float("nan"))


def test_mixed_host_and_device_items_equal_eager_with_poisoned_buffers(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    t = model.spec.merge_patches
    budgets = (64 // t * t, 128, 256) if t == 4 else (64, 256, 512)
    with EncoderGraphManager(model, budgets, 4, debug=True) as mgr:
        for _ in range(3):  # several calls: slots reused, later replays over earlier outputs
            images = _images(cp, model, rng, 11, 8 if t == 4 else 10)
            assert any(isinstance(im.patches, np.ndarray) for im in images)
            _poison(cp, mgr)
            outs = mgr.execute(images)
            assert len(outs) == len(images) and mgr.stats.misses == 0
            for im, o in zip(images, outs):
                assert o.shape == (im.tokens, model.spec.out_dim)
                _close(o, model.encode(im))
        assert mgr.stats.replays >= 3 * 3


def test_one_item_per_batch_cycles_the_pinned_slots(cp, model):
    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    images = _images(cp, model, rng, 7, 6, host_every=1)  # all host patches: 7 H2D copies, 2 slots
    with EncoderGraphManager(model, (64, 256), 1) as mgr:
        _poison(cp, mgr)
        outs = mgr.execute(images)
        snapshot = [o.get() for o in outs]
        assert mgr.stats.replays == 7
        mgr.execute(_images(cp, model, rng, 7, 6, host_every=1))  # must not change the first outputs
        for im, o, s in zip(images, outs, snapshot):
            np.testing.assert_array_equal(o.get(), s)
            _close(o, model.encode(im))


def test_phases_are_recorded_and_outputs_are_views_of_one_array(cp, model):
    from cgraph.encoder.manager import PHASES, EncoderGraphManager

    rng = np.random.default_rng()
    images = _images(cp, model, rng, 6, 5)
    with EncoderGraphManager(model, (64, 256), 8, record_phases=True) as mgr:
        outs = mgr.execute(images)
        ph = mgr.phases
        assert set(PHASES) | {"replay_gpu"} == set(ph) and ph["replay_gpu"] > 0 and ph["stage"] > 0
        assert mgr.stats.replays == 1
        bases = {o.base.data.ptr if o.base is not None else o.data.ptr for o in outs}
        assert len(bases) == 1  # one batch: every output is a view of the call's output array
        for im, o in zip(images, outs):
            _close(o, model.encode(im))


def test_bad_items_are_refused_on_the_host(cp, model):
    import attrs

    from cgraph.encoder.manager import EncoderGraphManager

    rng = np.random.default_rng()
    (im,) = _images(cp, model, rng, 1, 3)
    bad_pos = attrs.evolve(im, positions=np.full_like(im.positions, model.spec.max_grid ** 2))
    bad_dtype = attrs.evolve(im, patches=cp.asarray(im.patches).astype(cp.float32))
    with EncoderGraphManager(model, (64,), 2) as mgr:
        with pytest.raises(ValueError, match="position ids"):
            mgr.execute([im, bad_pos])
        with pytest.raises(TypeError, match="float16"):
            mgr.execute([bad_dtype])
        neg = attrs.evolve(im, positions=np.where(np.arange(im.positions.size) == 1, -1, im.positions)
                           .astype(np.int32))
        with pytest.raises(ValueError, match="-1"):
            mgr.execute([im, neg])
        for _ in range(3):  # the refused batches left every pinned slot safe to copy again
            (out,) = mgr.execute([im])
            _close(out, model.encode(im))


class RowEncoder:
    """A protocol-only encoder: out = silu(x W1) W2 per pair of rows merged (rows_per_token=2),
    no positions, written straight from cgraph.kernels (no VisionEncoder code)."""

    def __init__(self, cp, patch_dim=40, hidden=64, out_dim=24, seed=0):
        import cgraph.kernels as K
        from cgraph.core.encoder_layout import EncoderLayout

        rng = np.random.default_rng(seed)
        self._cp, self._K = cp, K
        self.dtype = cp.dtype(cp.float16)
        self.graph_layout = EncoderLayout(patch_dim, 2, out_dim, 1)
        self.w1 = cp.asarray(rng.standard_normal((hidden, patch_dim)) / math.sqrt(patch_dim)).astype(cp.float16)
        self.w2 = cp.asarray(rng.standard_normal((out_dim, 2 * hidden)) / math.sqrt(2 * hidden)).astype(cp.float16)
        self.hidden = hidden

    def prepare(self, image):
        return image

    def forward(self, patches, positions, cu_seqlens, max_seqlen):
        cp, K = self._cp, self._K
        t = patches.shape[0]
        h = K.gemm(patches, self.w1, out=cp.empty((t, self.hidden), self.dtype))
        return K.gemm(h.reshape(t // 2, 2 * self.hidden), self.w2,
                      out=cp.empty((t // 2, self.w2.shape[0]), self.dtype))

    def encode_batch(self, images):
        cp = self._cp
        x = cp.concatenate([cp.asarray(im.patches) for im in images])
        out = self.forward(x, None, None, 0)
        ends = np.cumsum([im.tokens for im in images])
        return [out[e - im.tokens : e] for e, im in zip(ends, images)]


class _RowItem:
    def __init__(self, patches):
        self.patches = patches
        self.positions = np.zeros(patches.shape[0], np.int32)
        self.tokens = patches.shape[0] // 2


def test_a_protocol_only_encoder_is_served_by_the_manager(cp):
    from cgraph.encoder.manager import EncoderGraphManager
    from cgraph.encoder.protocol import SupportsEncoderGraphs

    enc = RowEncoder(cp, seed=int(np.random.default_rng().integers(1 << 30)))
    assert isinstance(enc, SupportsEncoderGraphs)
    rng = np.random.default_rng()
    items = []
    for i in range(9):
        p = rng.standard_normal((2 * int(rng.integers(1, 40)), 40)).astype(np.float16)
        items.append(_RowItem(p if i % 2 else cp.asarray(p)))
    with EncoderGraphManager(enc, (16, 32, 64), 4) as mgr:
        _poison(cp, mgr)
        outs = mgr.execute(items)
        assert mgr.stats.misses == 0
        for it, o in zip(items, outs):
            _close(o, enc.encode_batch([it])[0])
