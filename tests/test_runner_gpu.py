"""GraphRunner and capture_all on a real device."""

from __future__ import annotations

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

from cgraph import BatchDescriptor, GraphConfig, GraphMode, build_dispatch_table, dispatch  # noqa: E402
from cgraph.core.errors import InputMismatchError  # noqa: E402
from cgraph import GraphRunner, batch_context, capture_all, capture_phase  # noqa: E402

CAP = 64
HID = 32


class Counting:
    """fn(x, w, out) = relu(x @ w-ish elementwise) + 1, counting Python-level calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, w, out):
        self.calls += 1
        cp.maximum(x * w, 0.25, out=out)
        out += 1
        return out


def _ref(x, w):
    return np.maximum(x.get() * w.get(), 0.25) + 1


def _buffers():
    return rand(cp, (CAP, HID)), rand(cp, (CAP, HID)), cp.empty((CAP, HID), cp.float32)


def test_capture_once_per_descriptor_then_replay_equals_eager():
    fn = Counting()
    runner = GraphRunner(fn, GraphMode.FULL, warmup=1)
    x, w, out = _buffers()
    sizes = (1, 3, 8, 17, 64)
    for n in sizes:
        with capture_phase():
            runner.run(GraphMode.FULL, BatchDescriptor(n), x[:n], w[:n], out[:n])
    assert fn.calls == 2 * len(sizes)  # one warm-up + one capture each
    for _ in range(3):
        for n in sizes:
            x[:n] = rand(cp, (n, HID))
            poison(out)
            res = runner.run(GraphMode.FULL, BatchDescriptor(n), x[:n], w[:n], out[:n])
            assert res.shape == (n, HID)
            np.testing.assert_allclose(res.get(), _ref(x[:n], w[:n]), rtol=1e-6)
            assert np.isnan(out[n:].get()).all()  # rows past n are never written
    assert fn.calls == 2 * len(sizes) and len(runner) == len(sizes)
    runner.close()


def test_first_call_outputs_are_real():
    runner = GraphRunner(Counting(), GraphMode.FULL)
    x, w, out = _buffers()
    poison(out)
    with capture_phase():
        res = runner.run(GraphMode.FULL, BatchDescriptor(CAP), x, w, out)
    np.testing.assert_allclose(res.get(), _ref(x, w), rtol=1e-6)
    runner.close()


@pytest.mark.parametrize("mode", [GraphMode.NONE, GraphMode.PIECEWISE])
def test_none_and_mismatch_pass_through(mode):
    fn = Counting()
    runner = GraphRunner(fn, GraphMode.FULL)
    x, w, out = _buffers()
    for i in range(3):
        x[...] = rand(cp, (CAP, HID))
        poison(out)
        runner.run(mode, BatchDescriptor(CAP), x, w, out)
        np.testing.assert_allclose(out.get(), _ref(x, w), rtol=1e-6)
    assert fn.calls == 3 and len(runner) == 0


def test_nested_runners_full_outside_piecewise_inside():
    inner_fn = Counting()
    inner = GraphRunner(inner_fn, GraphMode.PIECEWISE, name="piece")
    x, w, out = _buffers()
    mid = cp.empty_like(out)

    def whole(x, w, out):
        inner(x, w, mid)  # reads mode and descriptor from the runner's context
        cp.multiply(mid, 2, out=out)
        return out

    outer = GraphRunner(whole, GraphMode.FULL, name="whole")
    desc = BatchDescriptor(CAP)
    with capture_phase():
        outer.run(GraphMode.FULL, desc, x, w, out)
    assert len(outer) == 1 and len(inner) == 0  # the piece was captured inside the whole graph
    with capture_phase():
        outer.run(GraphMode.PIECEWISE, desc, x, w, out)
    assert len(outer) == 1 and len(inner) == 1  # now the piece has its own graph
    for mode in (GraphMode.FULL, GraphMode.PIECEWISE, GraphMode.NONE):
        x[...] = rand(cp, (CAP, HID))
        poison(out)
        poison(mid)
        with batch_context(mode, desc):
            outer(x, w, out)
        np.testing.assert_allclose(out.get(), 2 * _ref(x, w), rtol=1e-6)
    outer.close()
    inner.close()


def test_debug_mode_catches_a_moved_input():
    runner = GraphRunner(Counting(), GraphMode.FULL, debug=True, name="dbg")
    x, w, out = _buffers()
    desc = BatchDescriptor(CAP)
    with capture_phase():
        runner.run(GraphMode.FULL, desc, x, w, out)
    runner.run(GraphMode.FULL, desc, x, w, out)
    moved = x.copy()
    # named as the caller passed it: the parameter of the wrapped function, not a tree path
    with pytest.raises(InputMismatchError, match=r"dbg.*input x \(positional argument 0\) moved: captured at 0x"):
        runner.run(GraphMode.FULL, desc, moved, w, out)
    with pytest.raises(InputMismatchError, match=r"input out \(positional argument 2\) moved"):
        runner.run(GraphMode.FULL, desc, x, w, out.copy())
    runner.close()


def test_capture_all_covers_the_table_largest_first():
    cfg = GraphConfig(GraphMode.FULL, capture_sizes=[1, 2, 4, 8, 16, 32, 64], max_num_seqs=32,
                      max_num_batched_tokens=64)
    table = build_dispatch_table(cfg)
    x, w, out = _buffers()
    runner = GraphRunner(Counting(), GraphMode.FULL)
    report = capture_all(runner, table, lambda d: (x[:d.num_tokens], w[:d.num_tokens], out[:d.num_tokens]),
                         progress=False)
    captured = [g.descriptor.num_tokens for g in report.graphs]
    assert captured == sorted(captured, reverse=True)
    assert set(runner.descriptors) == set(table.keys(GraphMode.FULL))
    assert report.pool_bytes == runner.pool.total_bytes()
    for n in (1, 5, 33, 64):
        mode, desc = dispatch(table, n)
        assert mode is GraphMode.FULL and desc.num_tokens >= n
        m = desc.num_tokens
        x[:n] = rand(cp, (n, HID))
        x[n:m] = 0
        poison(out)
        runner.run(mode, desc, x[:m], w[:m], out[:m])
        np.testing.assert_allclose(out[:n].get(), _ref(x[:n], w[:n]), rtol=1e-6)
    runner.close()
