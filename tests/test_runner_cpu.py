"""Runner dispatch contract on the CPU: pass-through, capture-phase guard, contexts, validation.

These paths never touch a device, so they run in CI with NumPy arrays standing in.
"""

from __future__ import annotations

import numpy as np
import pytest

from cgraph import BatchDescriptor, GraphMode
from cgraph.cuda import state as _state
from cgraph.cuda.breakable import BreakableRunner, eager_break
from cgraph.core.errors import CaptureNotAllowedError, NestedCaptureError
from cgraph.cuda.context import capture_allowed
from cgraph import GraphRunner, batch_context, capture_phase, current_batch


def _double(x):
    return x * 2


@pytest.mark.parametrize("cls", [GraphRunner, BreakableRunner])
def test_runner_rejects_mode_none(cls):
    with pytest.raises(ValueError, match="NONE"):
        cls(_double, GraphMode.NONE)


@pytest.mark.parametrize("cls", [GraphRunner, BreakableRunner])
def test_runner_rejects_non_callable(cls):
    with pytest.raises(TypeError, match="callable"):
        cls(42, GraphMode.FULL)


def test_runner_accepts_mode_name():
    assert GraphRunner(_double, "piecewise").mode is GraphMode.PIECEWISE


@pytest.mark.parametrize("mode", [GraphMode.NONE, GraphMode.PIECEWISE])
def test_full_runner_passes_through_on_none_and_mismatch(mode):
    calls = []

    def fn(x):
        calls.append(current_batch())
        return x * 3

    runner = GraphRunner(fn, GraphMode.FULL)
    desc = BatchDescriptor(8)
    x = np.random.default_rng().uniform(1, 2, size=8)
    for _ in range(3):
        np.testing.assert_allclose(runner.run(mode, desc, x), x * 3)
    assert len(calls) == 3 and len(runner) == 0
    # The function sees the step's dispatch result, so nested runners can read it.
    assert calls[0] == (mode, desc)


def test_capture_outside_capture_phase_raises_and_registers_nothing():
    runner = GraphRunner(_double, GraphMode.FULL, name="model")
    desc = BatchDescriptor(16)
    with pytest.raises(CaptureNotAllowedError, match=r"model.*capture_phase"):
        runner.run(GraphMode.FULL, desc, np.ones(16))
    assert len(runner) == 0


def test_call_without_context_runs_eagerly():
    runner = GraphRunner(_double, GraphMode.FULL)
    x = np.random.default_rng().uniform(1, 2, size=5)
    np.testing.assert_allclose(runner(x), 2 * x)


def test_call_reads_innermost_batch_context():
    seen = []
    runner = GraphRunner(lambda x: seen.append(current_batch()) or x, GraphMode.FULL)
    outer, inner = BatchDescriptor(8), BatchDescriptor(4)
    with batch_context(GraphMode.PIECEWISE, outer):
        runner(1)
        with batch_context(GraphMode.NONE, inner):
            runner(2)
        runner(3)
    assert seen == [(GraphMode.PIECEWISE, outer), (GraphMode.NONE, inner), (GraphMode.PIECEWISE, outer)]
    assert current_batch() is None


def test_nested_runner_sees_outer_dispatch():
    """Outer FULL runner passing through under PIECEWISE: the inner PIECEWISE runner tries to capture."""
    inner = GraphRunner(_double, GraphMode.PIECEWISE, name="piece")
    outer = GraphRunner(lambda x: inner(x) + 1, GraphMode.FULL, name="whole")
    x = np.random.default_rng().uniform(1, 2, size=4)
    np.testing.assert_allclose(outer.run(GraphMode.NONE, BatchDescriptor(4), x), 2 * x + 1)
    with pytest.raises(CaptureNotAllowedError, match="piece"):
        outer.run(GraphMode.PIECEWISE, BatchDescriptor(4), x)


def test_batch_context_validates():
    with pytest.raises(TypeError, match="BatchDescriptor"):
        with batch_context(GraphMode.FULL, 8):
            pass
    with pytest.raises(ValueError):
        with batch_context("sideways", BatchDescriptor(8)):
            pass


def test_capture_phase_is_scoped():
    assert not capture_allowed()
    with capture_phase():
        assert capture_allowed()
        with capture_phase():
            assert capture_allowed()
        assert capture_allowed()
    assert not capture_allowed()


def test_eager_runner_never_captures():
    runner = GraphRunner(_double, GraphMode.FULL, eager=True)
    x = np.random.default_rng().uniform(1, 2, size=3)
    np.testing.assert_allclose(runner.run(GraphMode.FULL, BatchDescriptor(3), x), 2 * x)
    assert len(runner) == 0


def test_closed_runner_refuses_work():
    runner = GraphRunner(_double, GraphMode.FULL)
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(GraphMode.NONE, BatchDescriptor(2), np.ones(2))


def test_eager_break_outside_capture_just_runs():
    @eager_break
    def scale(x, out):
        out[...] = x * 4
        return out

    x = np.random.default_rng().uniform(1, 2, size=6)
    out = np.full(6, np.nan)
    assert scale(x, out) is out
    np.testing.assert_allclose(out, 4 * x)


def test_eager_break_copy_into_must_name_a_parameter():
    with pytest.raises(ValueError, match="copy_into='dst'"):
        @eager_break(copy_into="dst")
        def f(x, out):
            return x


def test_nested_capture_state_raises():
    outer = _state.ActiveCapture(kind="full", name="outer")
    _state.enter(outer)
    try:
        with pytest.raises(NestedCaptureError, match="outer"):
            _state.enter(_state.ActiveCapture(kind="breakable", name="inner"))
    finally:
        _state.leave(outer)
    assert _state.active() is None
    assert _state.active() is None
