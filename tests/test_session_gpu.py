"""The one capture session and the fixes the architecture review asked for (GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

from cgraph import (BatchDescriptor, BreakableCapture, BreakableRunner, CaptureError, GraphClosedError,  # noqa: E402
                    GraphMode, GraphPool, GraphRunner, capture, capture_breakable, capture_phase,
                    eager_break)
from cgraph.cuda import state as _state  # noqa: E402
from cgraph.cuda.session import CaptureSession, is_capturing  # noqa: E402


def scale_add(x, out):
    t = x * 3.0  # a temporary: must come from the graph pool
    cp.add(t, 1.0, out=out)
    return out


@eager_break
def negate(x, out):
    cp.negative(x, out=out)


def with_break(x, mid, out):
    cp.multiply(x, 2.0, out=mid)
    negate(mid, mid)
    cp.add(mid, 5.0, out=out)
    return out


def _streams_used(fn):
    """The CuPy current stream seen inside each call of fn."""
    seen = []

    def spy(*args):
        seen.append(cp.cuda.get_current_stream().ptr)
        return fn(*args)

    return spy, seen


@pytest.mark.parametrize("capturer", [capture, capture_breakable])
def test_warm_up_and_capture_run_on_the_pool_stream_and_allocate_from_the_pool(capturer):
    x, out = rand(cp, 4096), cp.empty(4096, cp.float32)
    pool = GraphPool()
    spy, seen = _streams_used(scale_add)
    with cp.cuda.Stream(non_blocking=True) as caller:
        graph = capturer(spy, x, out, pool=pool, warmup=2)
    assert seen == [pool.stream.ptr] * 3 and caller.ptr not in seen  # 2 warm-ups + the capture
    assert pool.total_bytes() >= x.nbytes  # the temporary came from the pool
    for _ in range(2):
        x[...] = rand(cp, 4096)
        poison(out)
        graph.replay()
        np.testing.assert_allclose(out.get(), 3 * x.get() + 1, rtol=1e-6)
    graph.close()
    pool.close()


def test_a_runner_closing_leaves_a_shared_pool_and_its_other_runner_working():
    x, out1, out2 = rand(cp, 256), cp.empty(256, cp.float32), cp.empty(256, cp.float32)
    pool = GraphPool()
    first = GraphRunner(scale_add, GraphMode.FULL, pool=pool, name="first")
    second = GraphRunner(scale_add, GraphMode.FULL, pool=pool, name="second")
    desc = BatchDescriptor(256)
    with capture_phase():
        first.run(GraphMode.FULL, desc, x, out1)
        second.run(GraphMode.FULL, desc, x, out2)
    first.close()
    assert not pool.closed
    x[...] = rand(cp, 256)
    poison(out2)
    second.run(GraphMode.FULL, desc, x, out2)
    np.testing.assert_allclose(out2.get(), 3 * x.get() + 1, rtol=1e-6)
    second.close()
    assert not pool.closed  # the caller's pool, the caller closes it
    pool.close()
    own = GraphRunner(scale_add, GraphMode.FULL)
    with capture_phase():
        own.run(GraphMode.FULL, desc, x, out1)
    own_pool = own.pool
    own.close()
    assert own_pool.closed  # a pool the runner created goes with it


def test_breakable_replay_after_close_raises_graph_closed():
    x, mid, out = rand(cp, 64), cp.empty(64, cp.float32), cp.empty(64, cp.float32)
    cap = capture_breakable(with_break, x, mid, out)
    poison(out)
    cap.replay()
    np.testing.assert_allclose(out.get(), -2 * x.get() + 5, rtol=1e-6)
    cap.close()
    with pytest.raises(GraphClosedError, match="closed"):
        cap.replay()
    with pytest.raises(GraphClosedError):
        with cap:
            pass


def test_a_function_failing_inside_rebind_changes_nothing():
    x, out = rand(cp, 512), cp.empty(512, cp.float32)
    calls = {"n": 0}

    def sometimes(x, out):
        calls["n"] += 1
        if calls["n"] > 2:  # warm-up and capture succeed, the rebind's capture fails
            raise RuntimeError("rebind source exploded")
        return scale_add(x, out)

    graph = capture(sometimes, x, out)
    x2, out2 = rand(cp, 512), cp.empty(512, cp.float32)
    with pytest.raises(CaptureError, match="exploded.*old arguments"):
        graph.rebind(x2, out2)
    assert _state.active() is None and not is_capturing(graph.pool.stream)
    assert graph.outputs is out
    poison(out)
    graph.replay()
    np.testing.assert_allclose(out.get(), 3 * x.get() + 1, rtol=1e-6)
    graph.close()


def test_session_ends_an_open_capture_and_restores_the_thread_on_error():
    pool = GraphPool()
    x = rand(cp, 128)
    with pytest.raises(ZeroDivisionError):
        with CaptureSession("boom", pool) as session:
            session.begin()
            cp.multiply(x, 2.0)
            assert _state.active() is session.state and cp.cuda.get_current_stream().ptr == pool.stream.ptr
            raise ZeroDivisionError
    assert _state.active() is None and not is_capturing(pool.stream)
    assert cp.cuda.get_current_stream().ptr != pool.stream.ptr
    # the pool and its stream still capture and replay correctly afterwards
    out = cp.empty(128, cp.float32)
    graph = capture(scale_add, x, out, pool=pool)
    poison(out)
    graph.replay()
    np.testing.assert_allclose(out.get(), 3 * x.get() + 1, rtol=1e-6)
    pool.close()


def test_breakable_runner_warm_up_runs_breaks_inline_then_records_them():
    x, mid, out = rand(cp, 300), cp.empty(300, cp.float32), cp.empty(300, cp.float32)
    runner = BreakableRunner(with_break, GraphMode.PIECEWISE, warmup=2)
    desc = BatchDescriptor(300)
    with capture_phase():
        runner.run(GraphMode.PIECEWISE, desc, x, mid, out)
    cap = runner.entry(desc)
    assert isinstance(cap, BreakableCapture)
    assert [s.kind for s in cap.segments] == ["graph", "eager", "graph"]
    for _ in range(2):
        x[...] = rand(cp, 300)
        poison(out)
        runner.run(GraphMode.PIECEWISE, desc, x, mid, out)
        np.testing.assert_allclose(out.get(), -2 * x.get() + 5, rtol=1e-6)
    runner.close()
