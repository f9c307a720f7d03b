"""Exceptions a cgraph user can meet, each naming what went wrong and how to fix it."""

from __future__ import annotations


class CaptureError(RuntimeError):
    """A capture failed; the stream is no longer capturing and nothing was registered.

    The original exception is chained as ``__cause__``.
    """


class CaptureNotAllowedError(RuntimeError):
    """A graph would be captured outside an explicit capture phase."""


class NestedCaptureError(RuntimeError):
    """A capture was started while this thread is already capturing."""


class GraphClosedError(RuntimeError):
    """A graph, runner or pool was used after close()."""


class InputMismatchError(ValueError):
    """A replay's inputs are not the arrays (addresses, shapes, dtypes) the graph was captured with."""


class HostCallbackError(RuntimeError):
    """A host callback raised; reported at the next replay or check_callbacks()."""
