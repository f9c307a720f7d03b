"""The step's dispatch result and the capture phase, as context variables.

`batch_context(mode, desc)` makes a dispatch result the current step's for runners
called inside it (vLLM's forward context, reduced to the two facts runners need);
`capture_phase()` is the only place runners may capture new graphs, so a batch that was
never captured fails loudly instead of capturing in the middle of serving.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.errors import ArgumentTypeError
from cgraph.core.modes import GraphMode

_batch: contextvars.ContextVar[tuple[GraphMode, BatchDescriptor] | None] = contextvars.ContextVar(
    "cgraph_batch", default=None
)
_capture_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cgraph_capture_allowed", default=False
)


def as_mode(mode: Any) -> GraphMode:
    """A GraphMode from a GraphMode or its name (ArgumentTypeError otherwise)."""
    if isinstance(mode, GraphMode):
        return mode
    if isinstance(mode, str):
        return GraphMode.parse(mode)
    raise ArgumentTypeError(f"mode must be a GraphMode or its name, got {type(mode).__name__} {mode!r}")


@contextlib.contextmanager
def batch_context(mode: GraphMode | str, descriptor: BatchDescriptor) -> Iterator[None]:
    """Make (mode, descriptor) the current step's dispatch result for runners called inside."""
    mode = as_mode(mode)
    if not isinstance(descriptor, BatchDescriptor):
        raise ArgumentTypeError(
            f"descriptor must be a BatchDescriptor, got {type(descriptor).__name__} {descriptor!r}; "
            "use the second value that cgraph.dispatch returns"
        )
    token = _batch.set((mode, descriptor))
    try:
        yield
    finally:
        _batch.reset(token)


def current_batch() -> tuple[GraphMode, BatchDescriptor] | None:
    """The innermost batch_context's (mode, descriptor), or None."""
    return _batch.get()


@contextlib.contextmanager
def capture_phase() -> Iterator[None]:
    """Allow runners to capture new graphs inside this block (and only here)."""
    token = _capture_allowed.set(True)
    try:
        yield
    finally:
        _capture_allowed.reset(token)


def capture_allowed() -> bool:
    """True inside capture_phase()."""
    return _capture_allowed.get()


@contextlib.contextmanager
def running(mode: GraphMode, descriptor: BatchDescriptor) -> Iterator[None]:
    """batch_context without the argument checks, for runners passing on a checked result."""
    token = _batch.set((mode, descriptor))
    try:
        yield
    finally:
        _batch.reset(token)
