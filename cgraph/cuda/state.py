"""The one piece of hidden state: this thread's active capture session, if any.

Kept thread-local so two threads can capture on their own streams at once, and so code
in another thread never mistakes itself for being inside someone else's capture. Only
cgraph.cuda.session enters and leaves it; other modules read it with :func:`active`.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from cgraph.core.errors import ArgumentError, NestedCaptureError


@attrs.define(slots=True)
class ActiveCapture:
    """What the thread is capturing now.

    kind: "full" for a plain capture (everything goes into one graph, breaks included),
    "breakable" for a BreakableCapture (decorated breaks end the segment).
    owner: the BreakableCapture that eager breaks hand themselves to.
    recording: False while the function warms up (breaks and callbacks run inline),
    True once stream capture has begun.
    keepalive: objects replays need alive (host callback closures and their arguments,
    the streams conditional bodies were captured on).
    in_break: an eager break is running (decorated calls inside it run inline).
    conditional_depth: how many conditional-node bodies (cgraph.while_loop / cond) are
    being captured around the current code (CUDA allows no host nodes inside them).
    """

    kind: str
    name: str
    owner: Any = None
    recording: bool = False
    keepalive: list = attrs.field(factory=list)
    in_break: bool = False
    conditional_depth: int = 0


_local = threading.local()


def active() -> ActiveCapture | None:
    """The calling thread's active capture, or None."""
    return getattr(_local, "capture", None)


def check_idle(name: str) -> None:
    """Raise NestedCaptureError if this thread is capturing (before anything is set up)."""
    current = active()
    if current is not None:
        raise NestedCaptureError(
            f"cannot start capturing {name!r}: this thread is already capturing "
            f"{current.name!r} ({current.kind}); finish that capture first (captures do not nest; "
            "a runner whose mode does not match simply runs inside the outer capture)"
        )


def enter(state: ActiveCapture) -> None:
    """Make ``state`` this thread's active capture; raises NestedCaptureError if one is active."""
    check_idle(state.name)
    _local.capture = state


def leave(state: ActiveCapture) -> None:
    """End ``state`` if it is still this thread's active capture."""
    if active() is state:
        _local.capture = None


def refuse_in_conditional(what: str) -> None:
    """Raise ArgumentError when called while a conditional body is being captured."""
    state = active()
    if state is not None and state.conditional_depth > 0:
        raise ArgumentError(f"{what} cannot run inside a while_loop or cond body captured into a graph: CUDA "
                            "allows only kernels, copies, memsets and conditionals there; move it out of the "
                            "body, or run the loop eagerly (outside a capture both run on the host)")
