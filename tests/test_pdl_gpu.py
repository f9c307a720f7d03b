"""Programmatic dependent launch inside captures (gpu): the same bits with it on and off,
programmatic edges in the graph only when it is on, and inside conditional bodies."""

from __future__ import annotations

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

import cgraph.kernels as K  # noqa: E402
from cgraph import capture, while_loop  # noqa: E402


@pytest.fixture
def pdl_setting():
    previous = K.set_programmatic_launch(True)
    yield
    K.set_programmatic_launch(previous)


def _needs_sm90():
    if int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("programmatic dependent launch needs compute capability 9.0 (this GPU has less)")


def _h(x):
    return x.get().view(np.uint16)


def _mlp_step(x, norm_w, w1, w2, out_h, ids):
    """rms_norm -> gemm -> silu_and_mul -> gemm -> argmax: a chain of dependent kernels."""
    rows, hidden = x.shape
    h = K.rms_norm(x, norm_w, 1e-5, out=cp.empty_like(x))
    up = K.gemm(h, w1, out=cp.empty((rows, w1.shape[0]), x.dtype))
    act = K.silu_and_mul(up, out=cp.empty((rows, w1.shape[0] // 2), x.dtype))
    K.gemm(act, w2, out=out_h)
    K.argmax(out_h, out=ids)
    return out_h, ids


def _half(shape, scale=1.0):
    return (rand(cp, shape) * scale).astype(cp.float16)


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_a_captured_kernel_chain_computes_the_same_bits_with_and_without_pdl(pdl_setting, rows):
    _needs_sm90()
    hidden, inter = 256, 384
    x, norm_w = _half((rows, hidden)), _half(hidden)
    w1, w2 = _half((2 * inter, hidden), 0.1) - 0.1, _half((hidden, inter), 0.1) - 0.1
    edges = {}
    for on in (True, False):
        K.set_programmatic_launch(on)
        out_h = cp.empty((rows, hidden), cp.float16)
        ids = cp.empty((rows,), cp.int32)
        g = capture(_mlp_step, x, norm_w, w1, w2, out_h, ids)
        try:
            for _ in range(2):  # replays over poisoned outputs with fresh inputs
                poison(out_h)
                ids.fill(-1)
                x[...] = _half((rows, hidden))
                g.replay()
                eager_h, eager_ids = _mlp_step(x, norm_w, w1, w2, cp.empty_like(out_h), cp.empty_like(ids))
                np.testing.assert_array_equal(_h(out_h), _h(eager_h))
                np.testing.assert_array_equal(ids.get(), eager_ids.get())
            edges[on] = g.programmatic_edges()
            if on:
                assert "programmatic (PDL)" in g.dot()
        finally:
            g.close()
    assert edges[True][0] >= 4, edges  # every kernel after the first follows a kernel
    assert edges[False][0] == 0 and edges[False][1] == edges[True][1], edges


def test_pdl_kernels_inside_a_while_loop_body_replay_with_correct_trip_counts(pdl_setting):
    _needs_sm90()
    rows, hidden = 3, 128
    x, w, norm_w = _half((rows, hidden)), _half((hidden, hidden), 0.05) - 0.05, _half(hidden)
    n, target = cp.zeros(1, cp.int32), cp.zeros(1, cp.int32)
    buf = cp.empty((rows, hidden), cp.float16)

    h = cp.empty_like(buf)

    def body(_):
        K.rms_norm(buf, norm_w, 1e-5, out=h)
        K.gemm(h, w, out=buf)
        cp.add(n, 1, out=n)

    def fn():
        buf[...] = x
        n.fill(0)
        while_loop(lambda _: n < target, body, None, max_iterations=50)
        return buf

    g = capture(fn)
    try:
        for trips in (0, 1, 7):
            target.fill(trips)
            poison(buf)
            g.replay()
            want = x.copy()
            for _ in range(trips):
                want = K.gemm(K.rms_norm(want, norm_w, 1e-5, out=cp.empty_like(want)), w, out=cp.empty_like(want))
            np.testing.assert_array_equal(_h(buf), _h(want))
            assert int(n.get()[0]) == trips
    finally:
        g.close()


@pytest.mark.parametrize("rows,invariant", [(1, False), (16, False), (64, False), (300, False), (64, True)])
def test_a_gemm_reads_weights_its_predecessor_wrote_in_the_same_graph(pdl_setting, rows, invariant):
    """With programmatic launch a GEMM may start while its predecessor still runs; when
    that predecessor writes the GEMM's weights (here another GEMM), the product must still
    use the new weights: the GEMV (1 row), streaming (16), wgmma with a K split (64), wgmma
    (300) and the batch-invariant tiled kernel, each against the eager chain."""
    _needs_sm90()
    n, k, j = 1024, 2048, 64
    a = _half((rows, k))
    src, mix = _half((n, j)), _half((k, j), 0.1)
    w = cp.empty((n, k), cp.float16)
    out = cp.empty((rows, n), cp.float16)

    def chain():
        K.gemm(src, mix, out=w)  # the weights of the next GEMM, written in the graph
        return K.gemm(a, w, out=out, invariant=invariant)

    g = capture(chain)
    try:
        assert g.programmatic_edges()[0] >= 1
        for _ in range(3):  # fresh weights every replay; the old ones poisoned in memory
            src[...] = _half((n, j))
            poison(w)
            poison(out)
            g.replay()
            want_w = K.gemm(src, mix, out=cp.empty_like(w))
            want = K.gemm(a, want_w, out=cp.empty_like(out), invariant=invariant)
            np.testing.assert_array_equal(_h(w), _h(want_w))
            np.testing.assert_array_equal(_h(out), _h(want))
    finally:
        g.close()
