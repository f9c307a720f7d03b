"""Control flow on the device: `while_loop` and `cond`, named and shaped after jax.lax, and
the kernel that sets a conditional node's condition (kernels/control.cu).

Inside a capture each call adds a CUDA conditional node (WHILE, or IF with an else
branch) to the graph being captured: its body graphs are captured from the given
functions, and its condition is a device scalar that a one-thread kernel
(cgraph.kernels.set_condition) turns into the node's condition before the node runs and,
for a loop, again at the end of every iteration. One launch of the graph then loops or
branches on the device, with no host round trip. Outside a capture (NONE mode, eager
runners, tests) the same call runs on the host: it reads the predicate and calls the
functions, so both ways run the same kernels in the same order and give the same bits.

Contract. The state is device arrays the functions update in place (a graph replays
against fixed addresses): `body_fun(carry)` writes into `carry`'s arrays,
`cond_fun(carry)` returns a device array of one element (bool or integer; non-zero is
true) computed from them. Temporaries come from the capture's graph pool and stay alive
with the graph. CUDA allows only kernels, copies, memsets and nested conditionals inside
a conditional body: a host callback or an eager break inside one is refused (the call
raises; the capture ends cleanly and raises CaptureError). `max_iterations` bounds a loop,
on the device inside a capture and on the host outside.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

from cgraph.core.checks import check_int
from cgraph.core.errors import ArgumentTypeError, CaptureError, StateError
from cgraph.cuda import state as _state
from cgraph.cuda.device import require_device
from cgraph.cuda.driver import cudart
from cgraph.kernels.launch import I32, launch
from cgraph.kernels.spec import INT32, Arr, Spec

__all__ = ["while_loop", "cond", "set_condition"]


def _scalar(pred: Any, what: str) -> Any:
    """The predicate as an int32 device array of one element."""
    cp = require_device()
    if not hasattr(pred, "__cuda_array_interface__") or getattr(pred, "size", 0) != 1:
        raise ArgumentTypeError(f"{what} must return a device array of one element (bool or integer), got "
                                f"{type(pred).__name__} {getattr(pred, 'shape', '')}; compute it with CuPy ops, "
                                "e.g. `x.sum() < 10`")
    return pred.reshape(1).astype(cp.int32, copy=pred.dtype != cp.int32)


def _recording() -> _state.ActiveCapture | None:
    state = _state.active()
    return state if state is not None and state.recording and not state.in_break else None


def _check(err: Any, what: str) -> None:
    rt = cudart()
    if err != rt.cudaError_t.cudaSuccess:
        raise CaptureError(f"{what} failed: {getattr(err, 'name', err)}")


@contextlib.contextmanager
def _body(state: _state.ActiveCapture, graph: Any) -> Iterator[None]:
    """Capture what runs inside the block into a conditional node's body graph, on a stream
    of its own (kept alive with the capture); always ends that capture."""
    cp = require_device()
    rt = cudart()
    body_stream = cp.cuda.Stream(non_blocking=True)
    state.keepalive.append(body_stream)
    err, = rt.cudaStreamBeginCaptureToGraph(body_stream.ptr, graph, None, None, 0,
                                            rt.cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed)
    _check(err, "cudaStreamBeginCaptureToGraph")
    state.conditional_depth += 1
    try:
        with body_stream:
            yield
    finally:
        state.conditional_depth -= 1
        err, _ = rt.cudaStreamEndCapture(body_stream.ptr)
    _check(err, "capturing a conditional body")


def while_loop(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any], carry: Any, *,
               max_iterations: int | None = None) -> Any:
    """While cond_fun(carry) is true (and fewer than max_iterations ran), body_fun(carry).

    Returns `carry`, updated in place (see the module docstring). Inside a capture this is
    one WHILE node; outside, a host loop.
    """
    if not callable(cond_fun) or not callable(body_fun):
        raise ArgumentTypeError("while_loop(cond_fun, body_fun, carry): cond_fun and body_fun must be callables")
    limit = -1 if max_iterations is None else check_int(max_iterations, "max_iterations", 0,
                                                        hint="or None for no bound")
    state = _recording()
    if state is None:
        n = 0
        while (limit < 0 or n < limit) and bool(_scalar(cond_fun(carry), "cond_fun").get()[0]):
            body_fun(carry)
            n += 1
        return carry
    cp = require_device()
    count = cp.zeros(1, cp.int32)  # graph-pool memory, alive with the graph
    state.keepalive.append(count)
    pred = _scalar(cond_fun(carry), "cond_fun")
    handle, (body,) = _add_conditional_after(lambda h: set_condition(h, pred, count, limit=limit, step=0))
    with _body(state, body):
        body_fun(carry)
        again = _scalar(cond_fun(carry), "cond_fun")
        set_condition(handle, again, count, limit=limit, step=1)
    return carry


def _add_conditional_after(set_first: Callable[[int], None], kind: str = "while", branches: int = 1):
    """Create the handle, queue the kernel that sets it first, then add the node after it."""
    cp = require_device()
    rt = cudart()
    stream = cp.cuda.get_current_stream()
    info = rt.cudaStreamGetCaptureInfo(stream.ptr)
    _check(info[0], "cudaStreamGetCaptureInfo")
    if info[1] != rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusActive:
        raise StateError("the current stream is not capturing; call while_loop / cond inside the captured "
                         "function, on the capture's stream")
    err, handle = rt.cudaGraphConditionalHandleCreate(info[3], 0, 0)
    _check(err, "cudaGraphConditionalHandleCreate")
    set_first(int(handle))
    return _add_node(handle, kind, branches)


def _add_node(handle: Any, kind: str, branches: int) -> tuple[int, list[Any]]:
    cp = require_device()
    rt = cudart()
    stream = cp.cuda.get_current_stream()
    info = rt.cudaStreamGetCaptureInfo(stream.ptr)
    _check(info[0], "cudaStreamGetCaptureInfo")
    graph, deps, edges, ndeps = info[3], info[4], info[5], info[-1]
    params = rt.cudaGraphNodeParams()
    params.type = rt.cudaGraphNodeType.cudaGraphNodeTypeConditional
    params.conditional.handle = handle
    params.conditional.type = (rt.cudaGraphConditionalNodeType.cudaGraphCondTypeWhile if kind == "while"
                               else rt.cudaGraphConditionalNodeType.cudaGraphCondTypeIf)
    params.conditional.size = branches
    err, node = rt.cudaGraphAddNode(graph, deps, edges, ndeps, params)
    _check(err, "cudaGraphAddNode (conditional)")
    bodies = [params.conditional.phGraph_out[i] for i in range(branches)]
    (err,) = rt.cudaStreamUpdateCaptureDependencies(
        stream.ptr, [node], None, 1, rt.cudaStreamUpdateCaptureDependenciesFlags.cudaStreamSetCaptureDependencies)
    _check(err, "cudaStreamUpdateCaptureDependencies")
    return int(handle), bodies


def cond(pred: Any, true_fun: Callable[..., Any], false_fun: Callable[..., Any], *operands: Any) -> None:
    """true_fun(*operands) if pred (a device array of one element) is true, else
    false_fun(*operands). The functions write into the operands' arrays; nothing is
    returned. Inside a capture this is one IF node with an else branch; outside, a host
    branch on the predicate's value."""
    if not callable(true_fun) or not callable(false_fun):
        raise ArgumentTypeError("cond(pred, true_fun, false_fun, *operands): the branches must be callables")
    state = _recording()
    flag = _scalar(pred, "pred")
    if state is None:
        (true_fun if bool(flag.get()[0]) else false_fun)(*operands)
        return
    cp = require_device()
    count = cp.zeros(1, cp.int32)
    state.keepalive.append(count)
    _, (then_graph, else_graph) = _add_conditional_after(
        lambda h: set_condition(h, flag, count, limit=-1, step=0), "if", 2)
    for graph, fun in ((then_graph, true_fun), (else_graph, false_fun)):
        with _body(state, graph):
            fun(*operands)


_SET = Spec("set_condition", Arr("pred", (1,), INT32), Arr("count", (1,), INT32))


def set_condition(handle: int, pred: Any, count: Any, *, limit: int, step: int, stream: Any = None) -> None:
    """Set conditional handle `handle` to (pred[0] != 0 and count < limit), on the device.

    step=0 starts the count at 0 (the kernel before a node), step=1 adds one iteration (the
    end of a WHILE body); limit < 0 means no bound. pred and count are int32 [1].
    """
    _SET.bind(pred=pred, count=count).on_device()
    limit = check_int(limit, "limit", -1, hint="-1 for no bound")
    step = check_int(step, "step", 0, hint="0 before the node, 1 at the end of a WHILE body")
    launch("control", "set_condition", (1,), 32, (np.uint64(handle), pred, count, I32(limit), I32(min(step, 1))),
           stream)
