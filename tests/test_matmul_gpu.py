"""GPU tests of cgraph.matmul: every layout and dtype against a float64 NumPy product, the
same call captured and replayed with new inputs, and the errors inside captures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests._kernel_checks import SEED, U32, assert_close, dev, empty, host, poison, rand

pytestmark = pytest.mark.gpu

DTYPES = ("float16", "bfloat16", "float32")
M, K, N, B = 37, 72, 40, 3


def _base(cp, shape, dt):
    return dev(cp, rand(shape), dt)


# name -> (cp, dt) -> (a, b): device views in the layout under test
LAYOUTS = {
    "contiguous": lambda cp, dt: (_base(cp, (M, K), dt), _base(cp, (K, N), dt)),
    "a_transposed": lambda cp, dt: (_base(cp, (K, M), dt).T, _base(cp, (K, N), dt)),
    "b_transposed": lambda cp, dt: (_base(cp, (M, K), dt), _base(cp, (N, K), dt).T),
    "both_transposed": lambda cp, dt: (_base(cp, (K, M), dt).T, _base(cp, (N, K), dt).T),
    "sliced": lambda cp, dt: (_base(cp, (M + 3, K + 9), dt)[2:2 + M, 5:5 + K], _base(cp, (K + 1, N + 7), dt)[1:, 3:3 + N]),
    "strided_both_axes": lambda cp, dt: (_base(cp, (M, 2 * K), dt)[:, ::2], _base(cp, (2 * K, N), dt)[::2]),
    "negative_stride": lambda cp, dt: (_base(cp, (M, K), dt)[::-1], _base(cp, (K, N), dt)[:, ::-1]),
    "odd_k": lambda cp, dt: (_base(cp, (M, 33), dt), _base(cp, (33, N), dt)),
    "row_vector": lambda cp, dt: (_base(cp, (1, K), dt), _base(cp, (N, K), dt).T),
    "batched": lambda cp, dt: (_base(cp, (B, M, K), dt), _base(cp, (B, K, N), dt)),
    "batched_transposed": lambda cp, dt: (_base(cp, (B, K, M), dt).swapaxes(1, 2), _base(cp, (B, N, K), dt).swapaxes(1, 2)),
    "batch_interleaved": lambda cp, dt: (_base(cp, (M, B, K), dt).transpose(1, 0, 2), _base(cp, (B, K, N), dt)),
    "batch1_vs_n": lambda cp, dt: (_base(cp, (1, M, K), dt), _base(cp, (B, K, N), dt)),
    "batch_n_vs_1": lambda cp, dt: (_base(cp, (B, M, K), dt), _base(cp, (1, K, N), dt)),
    "batch1_vs_1": lambda cp, dt: (_base(cp, (1, M, K), dt), _base(cp, (1, K, N), dt)),
    "3d_at_2d": lambda cp, dt: (_base(cp, (B, M, K), dt), _base(cp, (K, N), dt)),
    "3d_strided_at_2d": lambda cp, dt: (_base(cp, (B, M, K + 8), dt)[:, :, :K], _base(cp, (N, K), dt).T),
    "2d_at_3d": lambda cp, dt: (_base(cp, (M, K), dt), _base(cp, (B, K, N), dt)),
    "batch1_at_2d": lambda cp, dt: (_base(cp, (1, M, K), dt), _base(cp, (K, N), dt)),
}


def _atol(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # fp32 accumulation: at most K serial roundings of 2 * u32 of the running |sum|
    k = a.shape[-1]
    return 2 * k * U32 * np.matmul(np.abs(a), np.abs(b))


def _check(got, a, b, dt, what):
    ha, hb = host(a), host(b)
    want = np.matmul(ha, hb)
    assert tuple(got.shape) == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == a.dtype
    assert_close(host(got), want, dt, what, atol=_atol(ha, hb))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_matmul_matches_numpy(layout, dt):
    import cupy as cp

    import cgraph

    a, b = LAYOUTS[layout](cp, dt)
    got = cgraph.matmul(a, b)
    _check(got, a, b, dt, f"{layout} {dt}")
    out = empty(cp, got.shape, dt)  # poisoned, then written in place
    assert cgraph.matmul(a, b, out=out) is out
    _check(out, a, b, dt, f"{layout} {dt} out=")


@pytest.mark.parametrize("dt", ("float16", "float32"))
def test_out_views_and_aliasing(dt):
    import cupy as cp

    import cgraph

    a, b = _base(cp, (M, K), dt), _base(cp, (K, N), dt)
    wide = poison(cp, cp.empty((M, N + 5), dtype=a.dtype))
    view = wide[:, 2:2 + N]  # a strided out: written through a temporary
    cgraph.matmul(a, b, out=view)
    _check(view, a, b, dt, "strided out")
    assert bool(cp.isnan(wide[:, :2]).all()) and bool(cp.isnan(wide[:, 2 + N:]).all()), "wrote outside out"
    sq = _base(cp, (K, K), dt)
    x = _base(cp, (M, K), dt)
    hx, hsq = host(x), host(sq)
    cgraph.matmul(x, sq, out=x)  # out aliases a: computed into a temporary, then copied
    assert_close(host(x), np.matmul(hx, hsq), dt, "out aliasing a", atol=_atol(hx, hsq))


def test_degenerate_sizes():
    import cupy as cp

    import cgraph

    a, b = cp.ones((4, 0), cp.float16), cp.ones((0, 3), cp.float16)
    got = cgraph.matmul(a, b)
    assert got.shape == (4, 3) and not bool(got.any())  # an empty sum is 0, as in NumPy
    assert cgraph.matmul(cp.ones((0, 5), cp.float32), cp.ones((5, 2), cp.float32)).shape == (0, 2)


def test_bad_device_arguments_raise_clear_errors():
    import cupy as cp

    import cgraph
    from cgraph.core.errors import ArgumentError, ArgumentTypeError

    a, b = cp.ones((3, 4), cp.float16), cp.ones((4, 5), cp.float16)
    with pytest.raises(ArgumentError, match="must equal b's second-to-last"):
        cgraph.matmul(a, b.T)
    with pytest.raises(ArgumentTypeError, match="a is float16 and b is float32"):
        cgraph.matmul(a, b.astype(cp.float32))
    with pytest.raises(ArgumentError, match=r"out has shape \[5, 3\]"):
        cgraph.matmul(a, b, out=cp.empty((5, 3), cp.float16))
    with pytest.raises(ArgumentTypeError, match="out has dtype float32"):
        cgraph.matmul(a, b, out=cp.empty((3, 5), cp.float32))
    with pytest.raises(ArgumentTypeError, match="b must be a CuPy array on the GPU, got numpy.ndarray"):
        cgraph.matmul(a, np.ones((4, 5), np.float16))
    with pytest.raises(ArgumentTypeError, match="float64"):
        cgraph.matmul(a.astype(cp.float64), b.astype(cp.float64))


def _mlp(x, w1, w2):
    import cupy as cp

    import cgraph

    h = cgraph.matmul(x, w1)
    h = cp.maximum(h, 0)
    return cgraph.matmul(h, w2)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("rows", (1, 8, 200))
def test_captured_replays_new_inputs_like_eager(rows, dt):
    import cupy as cp

    import cgraph
    from cgraph.cuda import blas

    x = _base(cp, (rows, 64), dt)
    w1, w2 = _base(cp, (64, 96), dt), _base(cp, (160, 96), dt).T  # w2: a transposed view
    g = cgraph.capture(_mlp, x, w1, w2)
    try:
        for step in range(3):
            x[...] = _base(cp, (rows, 64), dt)  # new data in the captured input
            poison(cp, g.outputs)
            got = g.replay()
            cp.cuda.get_current_stream().synchronize()
            eager = _mlp(x, w1, w2)
            np.testing.assert_array_equal(host(got), host(eager), err_msg=f"replay {step} != eager, seed={SEED}")
            h = cp.maximum(cgraph.matmul(x, w1), 0)  # the device's rounded hidden layer
            _check(got, h, w2, dt, f"replay {step}")
        blas.clear_plans()  # the graph depends on no plan (nor on a plan's workspace)
        junk = cp.full((1 << 20,), 7, dtype=cp.float32)  # reuses freed default-pool memory, if any
        poison(cp, g.outputs)
        g.replay()
        cp.cuda.get_current_stream().synchronize()
        np.testing.assert_array_equal(host(g.outputs), host(_mlp(x, w1, w2)))
        assert bool((junk == 7).all()), "a replay wrote memory it does not own"
        assert g.pool_bytes > 0
    finally:
        g.close()


def test_batched_capture_replays():
    import cupy as cp

    import cgraph

    dt = "float16"
    a, b = _base(cp, (B, 16, K), dt), _base(cp, (1, K, N), dt)
    out = empty(cp, (B, 16, N), dt)
    g = cgraph.capture(lambda: cgraph.matmul(a, b, out=out))
    try:
        for _ in range(2):
            a[...] = _base(cp, (B, 16, K), dt)
            poison(cp, out)
            g.replay()
            cp.cuda.get_current_stream().synchronize()
            _check(out, a, b, dt, "batched replay")
    finally:
        g.close()


def test_unplanned_geometry_in_capture_raises_and_plan_matmul_fixes_it():
    import cupy as cp

    import cgraph
    from cgraph.core.errors import CaptureError
    from cgraph.cuda import blas

    a, b = _base(cp, (13, 24), "float16"), _base(cp, (24, 40), "float16")
    blas.clear_plans()
    with pytest.raises(CaptureError, match="plan_matmul") as info:
        cgraph.capture(lambda: cgraph.matmul(a, b), warmup=0)
    assert "cannot make one inside a stream capture" in str(info.value.__cause__ or info.value)
    assert not blas.cached_plans()
    out = empty(cp, (13, 40), "float16")
    blas.plan_matmul(a, b, out=out)
    assert blas.cached_plans() == 1
    g = cgraph.capture(lambda: cgraph.matmul(a, b, out=out), warmup=0)
    try:
        g.replay()
        cp.cuda.get_current_stream().synchronize()
        _check(out, a, b, "float16", "pre-planned capture")
    finally:
        g.close()


@pytest.mark.parametrize("dt", ("float16", "bfloat16"))
def test_autotuned_plan_replaces_the_heuristic_one_and_captures(dt):
    """plan_matmul(autotune=True) times the candidates in graphs, keeps one plan for the
    geometry, and the graph it then captures computes the product; a graph captured with
    the heuristic plan before keeps computing it too."""
    import cupy as cp

    import cgraph
    from cgraph.cuda import blas

    a, b = _base(cp, (96, 256), dt), _base(cp, (192, 256), dt).T
    out_h, out_t = empty(cp, (96, 192), dt), empty(cp, (96, 192), dt)
    blas.clear_plans()
    g_heur = cgraph.capture(lambda: cgraph.matmul(a, b, out=out_h))
    assert blas.cached_plans() == 1
    try:
        blas.plan_matmul(a, b, out=out_t, autotune=True)
        assert blas.cached_plans() == 1, "the tuned plan must replace the heuristic one"
        with cgraph.capture(lambda: cgraph.matmul(a, b, out=out_t), warmup=0) as g_tune:
            for _ in range(2):
                a[...] = _base(cp, (96, 256), dt)
                poison(cp, out_h)
                poison(cp, out_t)
                g_heur.replay()
                g_tune.replay()
                cp.cuda.get_current_stream().synchronize()
                _check(out_t, a, b, dt, "autotuned plan in a graph")
                _check(out_h, a, b, dt, "heuristic plan's graph after the plan was replaced")
    finally:
        g_heur.close()


@pytest.mark.parametrize("op", ("matmul", "at", "dot"))
def test_cupy_matmul_in_capture_names_cgraph_matmul(op):
    import cupy as cp

    import cgraph
    from cgraph.core.errors import CaptureError

    a, b = _base(cp, (8, 16), "float32"), _base(cp, (16, 8), "float32")
    fn = {"matmul": lambda: cp.matmul(a, b), "at": lambda: a @ b, "dot": lambda: cp.dot(a, b)}[op]
    with pytest.raises(CaptureError) as info:
        cgraph.capture(fn)
    text = str(info.value)
    print(op, "->", text)
    assert "cgraph.matmul" in text and "NotImplementedError" in text
    # the stream is not left capturing: eager work still runs
    assert math.isfinite(float(cp.matmul(a, b).sum()))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_other_output_order_matches_numpy(layout, monkeypatch):
    """The COLUMN_MAJOR switch flipped from its default (the other orientation of the problem
    handed to cuBLASLt) computes the same product in every layout, eager and captured."""
    import cupy as cp

    import cgraph
    from cgraph.cuda import blas

    monkeypatch.setattr(blas, "COLUMN_MAJOR", not blas.COLUMN_MAJOR)
    dt = "float16"
    a, b = LAYOUTS[layout](cp, dt)
    _check(cgraph.matmul(a, b), a, b, dt, f"{layout} other order")
    out = empty(cp, cgraph.matmul(a, b).shape, dt)
    g = cgraph.capture(lambda: cgraph.matmul(a, b, out=out))
    try:
        poison(cp, out)
        g.replay()
        cp.cuda.get_current_stream().synchronize()
        _check(out, a, b, dt, f"{layout} other order, replayed")
    finally:
        g.close()
