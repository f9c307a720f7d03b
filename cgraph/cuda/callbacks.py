"""host_callback: Python work in stream order, which also fires on every graph replay.

Inside a capture the callback becomes a host node of the graph, so every replay runs it.
Outside a capture it simply runs once when the stream reaches it. A callback must not call
CUDA (no CuPy operations, no synchronize): the driver runs it on its own thread while the
stream waits, and CUDA calls there can deadlock. An exception in a callback cannot travel
up the driver's thread, so it is recorded, printed to stderr at once, and raised as
HostCallbackError at the next replay, host_callback or check_callbacks() call.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Callable

from cgraph.cuda import state as _state
from cgraph.cuda.device import cupy
from cgraph.core.errors import ArgumentTypeError, HostCallbackError

_lock = threading.Lock()
#: failures not raised yet, (callback name, exception), oldest first. Replays test this list
#: directly (truthiness, no call) because it sits on their hot path.
failures: list[tuple[str, BaseException]] = []


def check_callbacks() -> None:
    """Raise HostCallbackError for the oldest unreported callback failure, clearing the rest."""
    if not failures:
        return
    with _lock:
        seen = list(failures)
        failures.clear()
    name, first = seen[0]
    extra = f" (and {len(seen) - 1} more failures)" if len(seen) > 1 else ""
    raise HostCallbackError(
        f"host callback {name!r} raised {type(first).__name__}: {first}{extra}; "
        "callbacks run on the driver's thread, so the error surfaces here"
    ) from first


def _trampoline(packed: tuple[str, Callable[..., Any], tuple]) -> None:
    name, fn, args = packed
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - must never escape into the driver
        with _lock:
            failures.append((name, exc))
        print(f"cgraph: host callback {name!r} raised:", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def host_callback(fn: Callable[..., Any], *args: Any, stream: Any = None) -> None:
    """Run fn(*args) on the host when `stream` (default: current) reaches this point.

    Inside a capture this adds a host node that fires on every replay; the capture keeps
    fn and args alive for as long as the graph can run. fn must not call CUDA.
    """
    if not callable(fn):
        raise ArgumentTypeError(f"host_callback needs a callable, got {type(fn).__name__} {fn!r}")
    _state.refuse_in_conditional("a host callback")
    check_callbacks()
    cp = cupy()
    packed = (getattr(fn, "__qualname__", repr(fn)), fn, args)
    active = _state.active()
    if active is not None:
        # The graph replays this node later: the closure must outlive the capture.
        active.keepalive.append(packed)
    target = stream if stream is not None else cp.cuda.get_current_stream()
    target.launch_host_func(_trampoline, packed)
