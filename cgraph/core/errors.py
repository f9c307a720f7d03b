"""Every exception cgraph raises, under one base class: ``except cgraph.CgraphError``.

Each class also derives from the built-in exception a Python user expects for that kind
of mistake (ValueError for a bad value, TypeError for a bad type, RuntimeError for a
state that forbids the call), so ``except ValueError`` keeps working. Messages name the
value, what was expected and how to fix the call.
"""

from __future__ import annotations


class CgraphError(Exception):
    """Base class of every exception cgraph raises."""


class ArgumentError(CgraphError, ValueError):
    """An argument has the right type but a value outside what the call accepts."""


class ArgumentTypeError(CgraphError, TypeError):
    """An argument has a type the call does not accept."""


class NotFoundError(CgraphError, KeyError):
    """A lookup by name or key found nothing (the message lists what exists)."""

    def __str__(self) -> str:  # KeyError would quote the message; show it as written
        return str(self.args[0]) if self.args else ""


class MissingFileError(CgraphError, FileNotFoundError):
    """A file the call names does not exist."""


class StateError(CgraphError, RuntimeError):
    """The object is in a state that forbids this call (e.g. replay before recording)."""


class GPUUnavailableError(CgraphError, RuntimeError):
    """CuPy is not installed, or no usable CUDA device is visible."""


class KernelCompileError(CgraphError, RuntimeError):
    """NVRTC rejected a kernel family; the message carries the compiler log."""


class CapacityError(CgraphError, RuntimeError):
    """A fixed-size resource (KV cache blocks, a memory budget) cannot hold the request."""


class CaptureError(CgraphError, RuntimeError):
    """A capture failed; the stream is no longer capturing and nothing was registered.

    The original exception is chained as ``__cause__``.
    """


class CaptureNotAllowedError(StateError):
    """A graph would be captured outside an explicit capture phase."""


class NestedCaptureError(StateError):
    """A capture was started while this thread is already capturing."""


class GraphClosedError(StateError):
    """A graph, runner or pool was used after close()."""


class InputMismatchError(CgraphError, ValueError):
    """A replay's inputs are not the arrays (addresses, shapes, dtypes) the graph was captured with."""


class HostCallbackError(CgraphError, RuntimeError):
    """A host callback raised; reported at the next replay or check_callbacks()."""


__all__ = [
    "CgraphError", "ArgumentError", "ArgumentTypeError", "NotFoundError", "MissingFileError", "StateError",
    "GPUUnavailableError", "KernelCompileError", "CapacityError", "CaptureError",
    "CaptureNotAllowedError", "NestedCaptureError", "GraphClosedError", "InputMismatchError",
    "HostCallbackError",
]
