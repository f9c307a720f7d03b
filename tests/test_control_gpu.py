"""while_loop and cond inside captured graphs (CUDA conditional nodes) and on the host (gpu)."""

from __future__ import annotations

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

import cgraph.kernels as K  # noqa: E402
from cgraph import CaptureError, capture, cond, host_callback, while_loop  # noqa: E402
from cgraph.cuda import state as _state  # noqa: E402
from cgraph.cuda.session import is_capturing  # noqa: E402


def _loop(x, n, target, limit=None):
    """x <- 1.5 * x + 1 while n < target (n counts the iterations), bounded by `limit`."""

    def more(_):
        return n < target

    def body(_):
        cp.multiply(x, 1.5, out=x)
        cp.add(x, 1.0, out=x)
        cp.add(n, 1, out=n)

    n.fill(0)
    while_loop(more, body, None, max_iterations=limit)
    return x


def _expected(x0, trips):
    x = x0.astype(np.float64)
    for _ in range(trips):
        x = x * 1.5 + 1.0
    return x


@pytest.mark.parametrize("trips", [[0, 1, 7, 3, 40], [5, 0, 0, 2]])
def test_while_loop_runs_the_device_trip_count_on_every_replay(trips):
    x, n, target = rand(cp, 300), cp.zeros(1, cp.int32), cp.zeros(1, cp.int32)
    graph = capture(_loop, x, n, target, warmup=0)
    assert graph.num_nodes < 20  # the loop is one conditional node, not its iterations unrolled
    for t in trips:
        x0 = np.random.default_rng().uniform(0.5, 1.5, 300).astype(np.float32)
        x[...] = cp.asarray(x0)
        target[...] = t
        graph.replay()
        np.testing.assert_allclose(x.get(), _expected(x0, t), rtol=1e-5)
        assert int(n.get()[0]) == t
    graph.close()


def test_while_loop_outside_a_capture_runs_on_the_host_with_the_same_bits():
    x0 = np.random.default_rng().uniform(0.5, 1.5, 256).astype(np.float32)
    x, n, target = cp.asarray(x0), cp.zeros(1, cp.int32), cp.full(1, 9, cp.int32)
    _loop(x, n, target)
    eager = x.get()
    xg, ng = cp.asarray(x0), cp.zeros(1, cp.int32)
    graph = capture(_loop, xg, ng, target, warmup=0)
    xg[...] = cp.asarray(x0)
    graph.replay()
    np.testing.assert_array_equal(xg.get(), eager)  # same kernels, same order, same bits
    assert int(n.get()[0]) == int(ng.get()[0]) == 9
    graph.close()


def test_max_iterations_is_enforced_on_the_device():
    x, n, target = rand(cp, 64), cp.zeros(1, cp.int32), cp.full(1, 10**6, cp.int32)
    graph = capture(_loop, x, n, target, 6, warmup=0)
    x0 = x.get()
    graph.replay()
    assert int(n.get()[0]) == 6
    np.testing.assert_allclose(x.get(), _expected(x0, 6), rtol=1e-5)
    eager_n = cp.zeros(1, cp.int32)
    _loop(cp.asarray(x0), eager_n, target, 6)
    assert int(eager_n.get()[0]) == 6
    graph.close()


def _branchy(x, n, target, w, out):
    """A loop whose body holds a cond and a cgraph kernel: even iterations add 1, odd double."""

    def body(_):
        cond(n % 2 == 0, lambda: cp.add(x, 1.0, out=x), lambda: cp.multiply(x, 2.0, out=x))
        K.rms_norm(x, w, 1e-6, out=out)
        cp.add(n, 1, out=n)

    n.fill(0)
    while_loop(lambda _: n < target, body, None)
    K.rms_norm(x, w, 1e-6, out=out)  # also after the loop: defined for 0 trips
    return out


def _branchy_reference(x0, w, trips):
    x = x0.astype(np.float64)
    for i in range(trips):
        x = x + 1.0 if i % 2 == 0 else x * 2.0
    h = x.astype(np.float16).astype(np.float64)
    return h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-6) * w.astype(np.float64)


def test_cond_inside_a_while_body_with_kernels():
    x, w = rand(cp, (4, 256), "float16"), rand(cp, (256,), "float16")
    n, target, out = cp.zeros(1, cp.int32), cp.zeros(1, cp.int32), cp.empty((4, 256), cp.float16)
    graph = capture(_branchy, x, n, target, w, out, warmup=0)
    for t in (0, 1, 2, 5):
        x0 = np.random.default_rng().uniform(0.5, 1.5, (4, 256)).astype(np.float16)
        x[...] = cp.asarray(x0)
        target[...] = t
        poison(out)
        graph.replay()
        np.testing.assert_allclose(out.get().astype(np.float64), _branchy_reference(x0, w.get(), t),
                                   rtol=2e-2, atol=2e-2)
    graph.close()


def test_cond_takes_the_branch_the_device_predicate_names_on_each_replay():
    x, flag = rand(cp, 128), cp.zeros(1, cp.int32)

    def fn(x, flag):
        cond(flag, lambda: cp.multiply(x, 3.0, out=x), lambda: cp.subtract(x, 1.0, out=x))
        return x

    graph = capture(fn, x, flag, warmup=0)
    for f in (1, 0, 0, 1):
        x0 = np.random.default_rng().uniform(0.5, 1.5, 128).astype(np.float32)
        x[...] = cp.asarray(x0)
        flag[...] = f
        graph.replay()
        np.testing.assert_allclose(x.get(), x0 * 3 if f else x0 - 1, rtol=1e-6)
    graph.close()


def test_a_host_callback_in_a_body_is_refused_in_a_capture_and_runs_eagerly():
    x, n, target = rand(cp, 16), cp.zeros(1, cp.int32), cp.full(1, 3, cp.int32)
    seen = []

    def fn(x, n, target):
        def body(_):
            cp.add(x, 1.0, out=x)
            host_callback(seen.append, 1)
            cp.add(n, 1, out=n)

        n.fill(0)
        while_loop(lambda _: n < target, body, None)
        return x

    with pytest.raises(CaptureError, match="host callback cannot run inside a while_loop"):
        capture(fn, x, n, target, warmup=0)
    assert _state.active() is None
    fn(x, n, target)  # eagerly, the callback runs once per iteration
    cp.cuda.Device().synchronize()
    assert seen == [1, 1, 1]


def test_an_exception_while_capturing_a_body_ends_every_capture():
    x, n, target = rand(cp, 32), cp.zeros(1, cp.int32), cp.full(1, 2, cp.int32)

    def fn(x, n, target):
        def body(_):
            cp.add(x, 1.0, out=x)
            raise ZeroDivisionError("body exploded")

        while_loop(lambda _: n < target, body, None)
        return x

    stream = cp.cuda.Stream(non_blocking=True)
    from cgraph import GraphPool

    pool = GraphPool()
    with pytest.raises(CaptureError, match="body exploded"):
        capture(fn, x, n, target, warmup=0, pool=pool, stream=stream)
    assert _state.active() is None and not is_capturing(stream) and not is_capturing(pool.stream)
    graph = capture(_loop, x, n, target, warmup=0, pool=pool)  # the pool captures again
    x0 = x.get()
    graph.replay()
    np.testing.assert_allclose(x.get(), _expected(x0, 2), rtol=1e-5)
    pool.close()
