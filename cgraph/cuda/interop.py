"""Zero-copy interop with torch, JAX and anything else that speaks DLPack.

cgraph's entry points (kernel launchers and their argument checks, StaticBuffers.fill,
runner inputs, cgraph.matmul) pass every array argument through :func:`as_cupy`: a GPU
array from another library becomes a CuPy view of the same device memory (no copy), so a
torch tensor or a JAX array can be used wherever a CuPy array is. Host arrays and
non-arrays pass through unchanged, so the checks downstream report them as they always did.

The other way needs no helper: CuPy arrays implement ``__dlpack__``, so
``torch.from_dlpack(x)`` and ``jax.dlpack.from_dlpack(x)`` see a cgraph output without a
copy; :func:`as_torch` is that call with torch imported for you.

Ordering: outside a capture, a conversion makes CuPy's current stream wait for the
producer's stream (the DLPack stream handshake). Inside a stream capture no such wait is
recorded (a capture cannot wait on work outside it): the producer's writes must be ordered
before the capture starts (e.g. ``torch.cuda.synchronize()`` or one shared stream).
"""

from __future__ import annotations

from typing import Any

from cgraph.cuda.device import cupy

# DLPack device types whose memory a CUDA kernel can read: CUDA, CUDA host (pinned), CUDA managed.
_CUDA_DEVICE_TYPES = frozenset({2, 3, 13})
_PASS_TYPES: set[type] = {type(None), int, float, bool, str}


class _NoSync:
    """A DLPack producer seen through a capture: exports without a stream handshake."""

    __slots__ = ("_x",)

    def __init__(self, x: Any) -> None:
        self._x = x

    def __dlpack_device__(self) -> Any:
        return self._x.__dlpack_device__()

    def __dlpack__(self, **kwargs: Any) -> Any:
        kwargs["stream"] = -1  # DLPack: -1 means "do not synchronize"
        try:
            return self._x.__dlpack__(**kwargs)
        except TypeError:  # an older producer without the keyword arguments
            return self._x.__dlpack__()


def is_foreign_device_array(x: Any) -> bool:
    """True for a GPU array that is not a CuPy array but can be viewed as one (DLPack)."""
    t = type(x)
    if t in _PASS_TYPES:
        return False
    if t.__module__.startswith(("cupy", "numpy")):  # every launch argument passes here: one set
        _PASS_TYPES.add(t)  # lookup next time (CuPy arrays, NumPy scalars), not a string test
        return False
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None or not hasattr(x, "__dlpack__"):
        return False
    try:
        kind = int(dev()[0])
    except Exception:  # noqa: BLE001 - a producer that cannot say: treat it as not ours
        return False
    return kind in _CUDA_DEVICE_TYPES


def as_cupy(x: Any) -> Any:
    """A CuPy view of `x` when it is a GPU array of another library (torch, JAX, ...), else `x`.

    The view shares x's memory (same device pointer, shape, strides and dtype): writes
    through either are seen by the other, and the view keeps x's memory alive. CuPy arrays,
    host arrays (NumPy, CPU tensors) and non-arrays are returned unchanged.
    """
    if type(x) in _PASS_TYPES or not is_foreign_device_array(x):
        return x
    cp = cupy()
    try:
        capturing = cp.cuda.runtime.streamIsCapturing(cp.cuda.get_current_stream().ptr) != 0
    except Exception:  # noqa: BLE001 - CuPy raises for an invalidated capture, still open
        capturing = True
    return cp.from_dlpack(_NoSync(x) if capturing else x)


def any_foreign(values: Any) -> bool:
    """True when any of `values` is a foreign GPU array (:func:`is_foreign_device_array`).
    Every kernel launch asks this of its arguments: a plain loop over set lookups."""
    known = _PASS_TYPES
    for x in values:
        if type(x) not in known and is_foreign_device_array(x):
            return True
    return False


def as_cupy_args(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """:func:`as_cupy` over a call's top-level positional and keyword arguments."""
    if not any_foreign(args) and not (kwargs and any_foreign(kwargs.values())):  # the runner's hot path
        return args, kwargs
    return tuple(map(as_cupy, args)), {k: as_cupy(v) for k, v in kwargs.items()}


def as_torch(x: Any) -> Any:
    """A torch tensor viewing CuPy array `x`'s memory (no copy): ``torch.from_dlpack(x)``."""
    try:
        import torch  # noqa: PLC0415 - optional, imported only here
    except ImportError as exc:
        from cgraph.core.errors import GPUUnavailableError  # noqa: PLC0415

        raise GPUUnavailableError("as_torch needs PyTorch (pip install torch); any other DLPack consumer "
                                  "can take a CuPy array directly, e.g. jax.dlpack.from_dlpack(x)") from exc
    return torch.from_dlpack(x)
