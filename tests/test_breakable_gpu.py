"""Breakable captures: segments, eager breaks, the decorator and BreakableRunner on a device.

Every capture is replayed at least twice, each time with new random values copied into the
captured input arrays and the outputs poisoned first, and compared with NumPy (or eager).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

from cgraph import BatchDescriptor, GraphMode  # noqa: E402
from cgraph.cuda import state as _state  # noqa: E402
from cgraph.cuda.breakable import BreakableCapture, BreakableRunner, eager_break  # noqa: E402
from cgraph.cuda.callbacks import host_callback  # noqa: E402
from cgraph.cuda.graph import capture  # noqa: E402
from cgraph.core.errors import NestedCaptureError  # noqa: E402
from cgraph import capture_phase  # noqa: E402

BREAK_CALLS = []


def fresh(x):
    """Copy new random values into the captured array x (its address stays); return them on the host."""
    new = rand(cp, x.shape, x.dtype)
    x[...] = new
    return new.get()


@eager_break
def double_in_place(x):
    BREAK_CALLS.append(1)
    x *= 2


def test_no_break_gives_one_graph():
    x, y = rand(cp, 8), cp.empty(8, cp.float32)
    with BreakableCapture() as cap:
        cp.add(x, 1, out=y)
        y *= 3
    assert [s.kind for s in cap.segments] == ["graph"]
    assert repr(cap) == "BreakableCapture(graphs=1, eager_breaks=0)"
    for _ in range(2):
        xh = fresh(x)
        poison(y)
        cap.replay()
        np.testing.assert_allclose(y.get(), (xh + 1) * 3, rtol=1e-6)
        np.testing.assert_array_equal(x.get(), xh)  # the input is only read
    cap.close()


def test_two_breaks_order_and_single_capture_call():
    x = rand(cp, 8)
    BREAK_CALLS.clear()
    with BreakableCapture() as cap:
        x += 1
        double_in_place(x)
        x += 2
        double_in_place(x)
        x += 3
    assert [s.kind for s in cap.segments] == ["graph", "eager", "graph", "eager", "graph"]
    assert len(BREAK_CALLS) == 2  # each break ran once at capture
    assert repr(cap) == "BreakableCapture(graphs=3, eager_breaks=2)"
    assert all(s.nodes > 0 for s in cap.segments if s.kind == "graph")
    for n in range(1, 3):
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), (((xh + 1) * 2 + 2) * 2) + 3, rtol=1e-6)
        assert len(BREAK_CALLS) == 2 + 2 * n  # a replay calls each break's Python again
    cap.close()


def test_numerics_of_the_issue_example():
    x = rand(cp, 4)
    before = x.get()
    with BreakableCapture() as cap:
        x += 1
        double_in_place(x)
        x += 5
    # The graph parts did not run during capture; only the break did.
    np.testing.assert_allclose(x.get(), before * 2, rtol=1e-6)
    for _ in range(2):
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), (xh + 1) * 2 + 5, rtol=1e-6)
    cap.close()


def test_empty_segments_record_no_graph():
    x = rand(cp, 8)
    with BreakableCapture() as cap:
        double_in_place(x)
        double_in_place(x)
        x += 1
    assert [s.kind for s in cap.segments] == ["eager", "eager", "graph"]
    for _ in range(2):
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), xh * 4 + 1, rtol=1e-6)
    cap.close()


def test_nesting_raises_and_state_is_cleared():
    x = rand(cp, 8)
    with BreakableCapture() as cap:
        x += 1
        with pytest.raises(NestedCaptureError):
            BreakableCapture().__enter__()
        with pytest.raises(NestedCaptureError):
            capture(lambda: None)
        x *= 2
    assert _state.active() is None
    for _ in range(2):  # the refused nested captures left the outer one intact
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), (xh + 1) * 2, rtol=1e-6)
    cap.close()


def test_other_thread_sees_no_active_capture():
    seen = []
    x = rand(cp, 8)
    with BreakableCapture() as cap:
        x += 1
        t = threading.Thread(target=lambda: seen.append(_state.active()))
        t.start()
        t.join()
        assert _state.active() is not None
        x *= 3
    assert seen == [None]
    for _ in range(2):
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), (xh + 1) * 3, rtol=1e-6)
    cap.close()


def test_exception_ends_capture_and_clears_state():
    x = rand(cp, 8)
    cap = BreakableCapture()
    with pytest.raises(ZeroDivisionError):
        with cap:
            x += 1
            double_in_place(x)
            1 / 0
    assert _state.active() is None
    assert not cap.pool.stream.is_capturing()
    assert cap.segments == ()
    with pytest.raises(RuntimeError):  # a failed capture kept nothing to replay
        cap.replay()
    cp.cuda.Device().synchronize()
    with BreakableCapture(pool=cap.pool) as again:
        x += 1
    for _ in range(2):
        xh = fresh(x)
        again.replay()
        np.testing.assert_allclose(x.get(), xh + 1, rtol=1e-6)
    cap.pool.close()


def test_exception_inside_a_break_ends_capture():
    @eager_break
    def bad(x):
        raise RuntimeError("break failed")

    x = rand(cp, 8)
    cap = BreakableCapture()
    with pytest.raises(RuntimeError, match="break failed"):
        with cap:
            x += 1
            bad(x)
    assert _state.active() is None and not cap.pool.stream.is_capturing()
    with pytest.raises(RuntimeError):  # nothing was recorded
        cap.replay()
    cap.close()


def test_nested_decorated_ops_make_one_break():
    @eager_break
    def outer(x):
        double_in_place(x)
        x += 1

    x = rand(cp, 8)
    with BreakableCapture() as cap:
        x += 1
        outer(x)
        x += 1
    assert [s.kind for s in cap.segments] == ["graph", "eager", "graph"]
    for _ in range(2):
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), ((xh + 1) * 2 + 1) + 1, rtol=1e-6)
    cap.close()


def test_break_under_full_capture_is_captured():
    x = rand(cp, 8)
    BREAK_CALLS.clear()

    def fn(x):
        x += 1
        double_in_place(x)
        return x

    g = capture(fn, x, warmup=0)
    assert len(BREAK_CALLS) == 1
    for _ in range(2):
        xh = fresh(x)
        g.replay()
        np.testing.assert_allclose(x.get(), (xh + 1) * 2, rtol=1e-6)
    xh = fresh(x)
    g.replay()
    g.replay()  # back to back: the second replay starts from the first one's result
    np.testing.assert_allclose(x.get(), ((xh + 1) * 2 + 1) * 2, rtol=1e-6)
    assert len(BREAK_CALLS) == 1  # replays run the captured kernels, not Python
    g.close()


def test_break_returning_new_array_is_an_error_unless_copied():
    @eager_break
    def doubled(x):
        return x * 2

    @eager_break(copy_into="out")
    def fresh_into(x, out):
        return x * 2

    x, out = rand(cp, 8), cp.empty(8, cp.float32)
    with pytest.raises(ValueError, match="new array"):
        with BreakableCapture():
            doubled(x)
    assert _state.active() is None
    with BreakableCapture() as cap:
        x += 1
        fresh_into(x, out)
        out += 1
    for _ in range(2):
        xh = fresh(x)
        poison(out)
        cap.replay()
        np.testing.assert_allclose(out.get(), (xh + 1) * 2 + 1, rtol=1e-6)
        np.testing.assert_allclose(x.get(), xh + 1, rtol=1e-6)
    cap.close()


def test_host_callback_inside_breakable_fires_per_replay():
    hits = []
    x = rand(cp, 8)
    with BreakableCapture() as cap:
        x += 1
        host_callback(hits.append, "a")
        double_in_place(x)
        host_callback(hits.append, "b")
    cp.cuda.Device().synchronize()
    hits.clear()
    for _ in range(3):
        xh = fresh(x)
        cap.replay()
        np.testing.assert_allclose(x.get(), (xh + 1) * 2, rtol=1e-6)
    cp.cuda.Device().synchronize()
    assert hits == ["a", "b"] * 3
    cap.close()


H = 64


def attention_like(h, a):
    """A stand-in for attention: softmax over rows, written into the caller's buffer."""
    e = cp.exp(h - h.max(axis=1, keepdims=True))
    cp.divide(e, e.sum(axis=1, keepdims=True), out=a)


attention_break = eager_break(attention_like)


def block_chain(x, w, h, a, out, attn):
    cp.multiply(x, w, out=h)
    h += 0.5
    for _ in range(3):
        attn(h, a)
        cp.multiply(a, w, out=h)
        h += x
    cp.tanh(h, out=out)
    return out


def test_transformer_like_chain_replays_equal_to_eager():
    n = 48
    x, w = rand(cp, (n, H)), rand(cp, (n, H))
    h, a, out = (cp.empty((n, H), cp.float32) for _ in range(3))
    with BreakableCapture() as cap:
        block_chain(x, w, h, a, out, attention_break)
    assert cap.num_breaks == 3 and cap.num_graphs == 4
    for _ in range(3):
        x[...] = rand(cp, (n, H))
        w[...] = rand(cp, (n, H))
        poison(out)
        cap.replay()
        got = out.get()
        eager = block_chain(x, w, cp.empty_like(h), cp.empty_like(a), cp.empty_like(out), attention_like)
        np.testing.assert_allclose(got, eager.get(), rtol=1e-6)
    cap.close()


def test_breakable_runner_contract_and_eager_debug_mode():
    n = 32
    x, w = rand(cp, (n, H)), rand(cp, (n, H))
    h, a, out = (cp.empty((n, H), cp.float32) for _ in range(3))
    calls = []

    def fn(x, w, h, a, out):
        calls.append(1)
        return block_chain(x, w, h, a, out, attention_break)

    runner = BreakableRunner(fn, GraphMode.PIECEWISE, name="chain")
    debug_runner = BreakableRunner(fn, GraphMode.PIECEWISE, eager=True)
    desc = BatchDescriptor(n)
    with capture_phase():
        runner.run(GraphMode.PIECEWISE, desc, x, w, h, a, out)
    assert len(calls) == 2 and len(runner) == 1
    assert repr(runner.entry(desc)) == "BreakableCapture(graphs=4, eager_breaks=3)"
    for mode in (GraphMode.PIECEWISE, GraphMode.NONE, GraphMode.PIECEWISE):  # two replays
        x[...] = rand(cp, (n, H))
        w[...] = rand(cp, (n, H))
        poison(out)
        got = runner.run(mode, desc, x, w, h, a, out).get()
        poison(out)
        want = debug_runner.run(GraphMode.PIECEWISE, desc, x, w, h, a, out).get()
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert len(debug_runner) == 0
    runner.close()
