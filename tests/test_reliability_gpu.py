"""Faults, bad input, memory return and concurrency for the capture layer (GPU)."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

from cgraph import BatchDescriptor, GraphMode  # noqa: E402
from cgraph.cuda import state as _state  # noqa: E402
from cgraph.cuda.breakable import BreakableRunner, eager_break  # noqa: E402
from cgraph.cuda.buffers import StaticBuffers  # noqa: E402
from cgraph.cuda.graph import capture  # noqa: E402
from cgraph.core.errors import CaptureError, GraphClosedError  # noqa: E402
from cgraph.cuda.pool import GraphPool  # noqa: E402
from cgraph import GraphRunner, capture_phase  # noqa: E402


def _fault(kind):
    """A function that fails inside capture in the way named by `kind`."""

    @eager_break
    def failing_break(x):
        raise RuntimeError("break exploded")

    def fn(x, out):
        cp.multiply(x, 2, out=out)
        if kind == "raise":
            raise RuntimeError("user code exploded")
        if kind == "break":
            failing_break(x)
        if kind == "sync":
            cp.cuda.Device().synchronize()
        if kind == "get":
            out.get()
        if kind == "matmul":
            cp.matmul(x, x)
        out += 1
        return out

    return fn


@pytest.mark.parametrize("runner_cls", [GraphRunner, BreakableRunner])
@pytest.mark.parametrize("kind", ["raise", "break", "sync", "get", "matmul"])
def test_fault_names_descriptor_leaves_nothing_and_next_capture_works(runner_cls, kind):
    n = 16
    x, out = rand(cp, (n, n)), cp.empty((n, n), cp.float32)
    desc = BatchDescriptor(n, num_reqs=n)
    mode = GraphMode.FULL if runner_cls is GraphRunner else GraphMode.PIECEWISE
    bad = runner_cls(_fault(kind), mode, warmup=0, name="faulty")
    with capture_phase(), pytest.raises(CaptureError) as info:
        bad.run(mode, desc, x, out)
    message = str(info.value)
    assert "faulty" in message and "num_tokens=16" in message, message
    assert len(bad) == 0 and _state.active() is None
    assert not bad.pool.stream.is_capturing()
    cp.cuda.Device().synchronize()
    good = runner_cls(_fault("none"), mode, pool=bad.pool)
    with capture_phase():
        good.run(mode, desc, x, out)
    x[...] = rand(cp, (n, n))
    poison(out)
    good.run(mode, desc, x, out)
    np.testing.assert_allclose(out.get(), 2 * x.get() + 1, rtol=1e-6)
    good.close()


def test_replay_after_close_raises_clearly():
    x, out = rand(cp, 8), cp.empty(8, cp.float32)
    runner = GraphRunner(_fault("none"), GraphMode.FULL, name="closing")
    desc = BatchDescriptor(8)
    with capture_phase():
        runner.run(GraphMode.FULL, desc, x, out)
    entry = runner.entry(desc)
    runner.close()
    with pytest.raises(GraphClosedError, match="closing"):
        entry.replay()
    with pytest.raises(GraphClosedError):
        runner.run(GraphMode.FULL, desc, x, out)
    pool = GraphPool()
    g = capture(_fault("none"), x, out, pool=pool)
    pool.close()
    with pytest.raises(GraphClosedError):
        g.replay()
    with pytest.raises(GraphClosedError):
        capture(_fault("none"), x, out, pool=pool)


def test_capture_on_the_legacy_stream_is_refused():
    x, out = rand(cp, 8), cp.empty(8, cp.float32)
    with pytest.raises(ValueError, match="legacy default stream"):
        capture(_fault("none"), x, out, stream=cp.cuda.Stream.null)


def test_static_buffers_refuse_another_device_or_dtype():
    bufs = StaticBuffers({"x": ((8, 2), "float32")})
    with pytest.raises(TypeError, match="dtype float32"):
        bufs.fill("x", cp.ones((4, 2), cp.float16))
    with pytest.raises(ValueError, match="rows"):
        bufs.view("x", 9)


def _capture_and_close_a_runner(n):
    x, out = rand(cp, n), cp.empty(n, cp.float32)

    def heavy(x, out):
        t = [x * (i + 1) for i in range(8)]  # 8 temporaries of 4 MiB each, from the graph pool
        cp.add(sum(t), 1, out=out)
        return out

    runner = GraphRunner(heavy, GraphMode.FULL)
    with capture_phase():
        for k in (n, n // 2, n // 4):
            runner.run(GraphMode.FULL, BatchDescriptor(k), x[:k], out[:k])
    held = runner.pool.total_bytes()
    runner.close()
    return held


def _free_device_bytes():
    cp.get_default_memory_pool().free_all_blocks()
    cp.cuda.Device().synchronize()
    return cp.cuda.runtime.memGetInfo()[0]


@pytest.mark.skipif(bool(os.environ.get("CGRAPH_TEST_NO_POOL")),
                    reason="under compute-sanitizer the device's free memory includes the tool's own")
def test_gpu_memory_returns_to_its_starting_level_after_close():
    n = 1 << 20
    # A first round loads the kernels' modules and the driver's one-time state.
    _capture_and_close_a_runner(n)
    free_before = _free_device_bytes()
    gc.disable()  # close() alone must return the memory, without waiting for the GC
    try:
        for _ in range(3):
            held = _capture_and_close_a_runner(n)
            assert held >= 8 * 4 * n
        free_after = _free_device_bytes()
    finally:
        gc.enable()
    assert free_before - free_after < 2**20, (free_before, free_after)


def test_replays_of_different_graphs_on_two_streams_at_once():
    n = 1 << 18
    xs = [rand(cp, n) for _ in range(2)]
    outs = [cp.empty(n, cp.float32) for _ in range(2)]

    def fn(x, out, scale):
        for _ in range(20):
            cp.multiply(x, scale, out=out)
            cp.add(out, x, out=out)
        return out

    graphs = [capture(fn, xs[i], outs[i], 1.5 + i) for i in range(2)]
    streams = [cp.cuda.Stream(non_blocking=True) for _ in range(2)]
    for _ in range(5):
        for i in range(2):
            xs[i][...] = rand(cp, n)
            poison(outs[i])
        cp.cuda.Device().synchronize()
        for _ in range(10):
            for g, s in zip(graphs, streams):
                g.replay(s)
        cp.cuda.Device().synchronize()
        for i in range(2):
            np.testing.assert_allclose(outs[i].get(), xs[i].get() * (1.5 + i) + xs[i].get(), rtol=1e-6)
    for g in graphs:
        g.close()


def test_two_threads_breakable_capture_at_once():
    errors = []

    @eager_break
    def half(x):
        x *= 0.5

    def work():
        try:
            x = rand(cp, 256)
            runner = BreakableRunner(lambda x: (x.__iadd__(1), half(x), x.__iadd__(3))[-1],
                                     GraphMode.PIECEWISE)
            with capture_phase():
                runner.run(GraphMode.PIECEWISE, BatchDescriptor(256), x)
            for _ in range(5):
                start = rand(cp, 256)
                x[...] = start
                runner.run(GraphMode.PIECEWISE, BatchDescriptor(256), x)
                cp.cuda.get_current_stream().synchronize()
                np.testing.assert_allclose(x.get(), (start.get() + 1) * 0.5 + 3, rtol=1e-6)
            runner.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
