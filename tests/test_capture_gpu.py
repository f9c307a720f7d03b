"""capture(), GraphPool, StaticBuffers and host_callback on a real device."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

import cgraph  # noqa: E402
from cgraph import GraphPool, StaticBuffers, capture, host_callback  # noqa: E402
from cgraph.cuda.callbacks import check_callbacks  # noqa: E402
from cgraph.core.errors import CaptureError, GraphClosedError, HostCallbackError  # noqa: E402

_axpb = None


def axpb():
    """A raw kernel (what graphs are built around here): y = a * x + b."""
    global _axpb
    if _axpb is None:
        _axpb = cp.RawKernel(r"""
        extern "C" __global__ void axpb(const float* x, float a, float b, float* y, int n) {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = a * x[i] + b;
        }""", "axpb")
    return _axpb


def model(x, w, out):
    """Temporaries on purpose: they must come from the graph pool and stay private."""
    n = x.size
    t = cp.empty_like(x)
    axpb()(((n + 255) // 256,), (256,), (x, np.float32(2.0), np.float32(1.0), t, np.int32(n)))
    u = cp.tanh(t * w)
    del t
    cp.add(u, x.sum(), out=out)
    return out


def reference(x, w):
    x = x.get().astype(np.float64)
    return np.tanh((2 * x + 1) * w.get()) + x.sum()


@pytest.mark.parametrize("n", [1, 7, 256, 1000, 4097])
def test_replay_equals_eager_on_fresh_inputs(n):
    x, w = rand(cp, n), rand(cp, n)
    out = cp.empty(n, dtype=cp.float32)
    g = capture(model, x, w, out)
    assert g.outputs is out and g.num_nodes >= 3
    for _ in range(3):
        x[...] = rand(cp, n)
        w[...] = rand(cp, n)
        poison(out)
        g.replay()
        np.testing.assert_allclose(out.get(), reference(x, w), rtol=2e-5, atol=1e-4)
    g.close()


def test_artifact_is_inspectable():
    x, w, out = rand(cp, 64), rand(cp, 64), cp.empty(64, cp.float32)
    g = capture(model, x, w, out, name="tiny")
    assert "digraph" in g.dot()
    assert g.pool_bytes > 0 and g.capture_seconds > 0
    assert "tiny" in repr(g) and "nodes=" in repr(g)
    g.close()
    assert g.closed and "closed" in repr(g)
    with pytest.raises(GraphClosedError, match="tiny"):
        g.replay()


def test_temporaries_never_reach_outside_allocations():
    """The trap from the notes: a temporary freed in capture must not be handed to later code."""
    n = 1 << 16
    x, w, out = rand(cp, n), rand(cp, n), cp.empty(n, cp.float32)
    pool = GraphPool()
    g = capture(model, x, w, out, pool=pool)
    with pool.stream:
        z1 = cp.full(n, 7, dtype=cp.float32)
    z2 = cp.full(n, 7, dtype=cp.float32)
    for _ in range(3):
        g.replay()
    cp.cuda.Device().synchronize()
    assert float(z1.min()) == 7 and float(z1.max()) == 7
    assert float(z2.min()) == 7 and float(z2.max()) == 7
    pool.close()
    assert g.closed


def test_exception_in_capture_leaves_stream_clean_and_next_capture_works():
    x, w, out = rand(cp, 32), rand(cp, 32), cp.empty(32, cp.float32)
    pool = GraphPool()

    def broken(x):
        cp.multiply(x, 2, out=out)
        raise KeyError("boom")

    with pytest.raises(CaptureError, match="broken") as info:
        capture(broken, x, pool=pool, warmup=0)
    assert isinstance(info.value.__cause__, KeyError)
    assert not pool.stream.is_capturing()
    cp.cuda.Device().synchronize()
    g = capture(model, x, w, out, pool=pool)
    poison(out)
    g.replay()
    np.testing.assert_allclose(out.get(), reference(x, w), rtol=2e-5, atol=1e-4)
    pool.close()


@pytest.mark.parametrize("op", ["get", "synchronize", "matmul", "asarray"])
def test_uncapturable_operation_names_itself_and_recovers(op):
    x = rand(cp, (8, 8))
    pool = GraphPool()

    def bad(x):
        y = x * 2
        if op == "get":
            y.get()
        elif op == "synchronize":
            cp.cuda.get_current_stream().synchronize()
        elif op == "matmul":
            cp.matmul(y, y)
        else:
            cp.asarray(np.ones(3))
        return y

    with pytest.raises(CaptureError, match="bad"):
        capture(bad, x, pool=pool, warmup=0)
    assert not pool.stream.is_capturing()
    cp.cuda.Device().synchronize()
    out = cp.empty(64, cp.float32)
    v, w = rand(cp, 64), rand(cp, 64)
    g = capture(model, v, w, out, pool=pool)
    poison(out)
    g.replay()
    np.testing.assert_allclose(out.get(), reference(v, w), rtol=2e-5, atol=1e-4)
    pool.close()


def test_host_callback_fires_once_per_replay():
    hits = []
    x = rand(cp, 16)
    out = cp.empty(16, cp.float32)

    def fn(x):
        cp.multiply(x, 3, out=out)
        host_callback(hits.append, 1)
        return out

    g = capture(fn, x)
    cp.cuda.Device().synchronize()
    hits.clear()
    for _ in range(5):
        g.replay()
    cp.cuda.Device().synchronize()
    assert len(hits) == 5
    g.close()


def test_host_callback_error_is_reported_not_lost():
    def fails(tag):
        raise RuntimeError(f"callback failed {tag}")

    g = capture(lambda: host_callback(fails, "x1"), warmup=0)
    g.replay()
    cp.cuda.Device().synchronize()
    with pytest.raises(HostCallbackError, match="x1"):
        g.replay()
    check_callbacks()  # reported once, then cleared
    g.close()


def test_shared_pool_stays_near_the_largest_graph():
    """Largest first into one pool: smaller graphs reuse its temporaries."""
    sizes = [4096 * k for k in (64, 48, 32, 16, 8, 4, 2, 1)]
    cap = sizes[0]
    x, w, out = rand(cp, cap), rand(cp, cap), cp.empty(cap, cp.float32)

    def heavy(x, w, out):
        a = x * w
        b = cp.exp(a) + x
        c = cp.sqrt(b) * w
        cp.add(c, a, out=out)
        return out

    single = GraphPool()
    capture(heavy, x, w, out, pool=single)
    largest = single.total_bytes()
    shared = GraphPool()
    graphs = [capture(heavy, x[:n], w[:n], out[:n], pool=shared) for n in sizes]
    separate = 0
    for n in sizes:
        p = GraphPool()
        capture(heavy, x[:n], w[:n], out[:n], pool=p)
        separate += p.total_bytes()
        p.close()
    assert largest > 0
    assert shared.total_bytes() <= 1.25 * largest < separate / 2
    for n, g in zip(sizes, graphs):
        x[:n] = rand(cp, n)
        poison(out[:n])
        g.replay()
        xs, ws = x[:n].get().astype(np.float64), w[:n].get()
        a = xs * ws
        np.testing.assert_allclose(out[:n].get(), np.sqrt(np.exp(a) + xs) * ws + a, rtol=1e-5)
    shared.close()
    single.close()


def test_static_buffers_pad_and_poison():
    bufs = StaticBuffers({"x": ((16, 4), "float32"), "ids": ((16,), "int32")}, debug=True)
    src = np.random.default_rng().uniform(1, 2, size=(5, 4)).astype(np.float32)
    view = bufs.fill("x", src, 8)
    assert view.shape == (8, 4)
    np.testing.assert_array_equal(view[:5].get(), src)
    assert np.isnan(view[5:].get()).all()
    ids = bufs.fill("ids", cp.arange(3, dtype=cp.int32) + 5, 6)
    np.testing.assert_array_equal(ids.get(), [5, 6, 7, 0, 0, 0])
    assert bufs.view("x", 8).data.ptr == bufs["x"].data.ptr
    with pytest.raises(TypeError, match="float32"):
        bufs.fill("x", src.astype(np.float64), 8)
    with pytest.raises(ValueError, match="capacity"):
        bufs.fill("x", src, 17)
    with pytest.raises(ValueError, match="shape"):
        bufs.fill("x", np.ones((5, 3), np.float32), 8)
    with pytest.raises(KeyError, match="ids"):
        bufs["nope"]


def test_two_threads_capture_on_their_own_streams():
    errors, results = [], {}

    def work(tag):
        try:
            n = 512
            x, w, out = rand(cp, n), rand(cp, n), cp.empty(n, cp.float32)
            g = capture(model, x, w, out)
            for _ in range(3):
                x[...] = rand(cp, n)
                poison(out)
                g.replay()
                cp.cuda.get_current_stream().synchronize()
                np.testing.assert_allclose(out.get(), reference(x, w), rtol=2e-5, atol=1e-4)
            results[tag] = g.num_nodes
            g.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 2


def test_public_names_resolve_lazily():
    assert cgraph.capture is capture and cgraph.GraphPool is GraphPool


def test_rebind_points_the_graph_at_new_buffers():
    pytest.importorskip("cuda.bindings")
    n = 300
    x1, w1, o1 = rand(cp, n), rand(cp, n), cp.empty(n, cp.float32)
    x2, w2, o2 = rand(cp, n), rand(cp, n), cp.empty(n, cp.float32)
    g = capture(model, x1, w1, o1)
    seconds = g.rebind(x2, w2, o2)
    assert seconds > 0 and g.outputs is o2
    poison(o1)
    poison(o2)
    g.replay()
    np.testing.assert_allclose(o2.get(), reference(x2, w2), rtol=2e-5, atol=1e-4)
    assert np.isnan(o1.get()).all()  # the old buffers are no longer touched
    g.close()


def test_a_capture_refused_by_the_pool_limit_leaves_earlier_graphs_memory_alone():
    """A graph's temporaries are cached blocks of its pool; an allocation that fails must
    not return them to the device (CuPy frees its cache on failure before it retries)."""
    n = 1 << 16
    x, out = rand(cp, n), cp.empty(n, cp.float32)

    def temps(x, out):
        t = x * 3.0  # freed after the capture: the graph keeps using its block
        u = t + 1.0
        cp.multiply(u, 2.0, out=out)
        return out

    pool = GraphPool()
    g = capture(temps, x, out, pool=pool)
    held = pool.total_bytes()
    pool.set_limit(held + 1024)  # the next capture cannot fit
    with pytest.raises(CaptureError):
        capture(lambda b: b * 2.0, rand(cp, 8 * n), pool=pool)
    assert pool.total_bytes() == held  # nothing went back to the device
    fillers = [cp.full(n, 7.0, cp.float32) for _ in range(8)]  # memory freed now would be handed out here
    for _ in range(2):
        x[...] = rand(cp, n)
        poison(out)
        g.replay()
        np.testing.assert_allclose(out.get(), (x.get() * 3.0 + 1.0) * 2.0, rtol=1e-6)
    assert all(bool((f == 7.0).all()) for f in fillers)
    g.close()
    pool.close()
    assert pool.total_bytes() == 0
