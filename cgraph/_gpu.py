"""Lazy access to CuPy for the GPU layer.

The pure layer (modes, descriptors, config, dispatch, planning) never imports this
module. GPU modules call :func:`cupy` at the point of use, so `import cgraph` works on
a machine with neither CuPy nor a GPU, and a GPU feature used there fails with a
message that says what is missing and how to get it.
"""

from __future__ import annotations

import functools
from typing import Any


class GPUUnavailableError(RuntimeError):
    """CuPy is not installed, or no usable CUDA device is visible."""


@functools.cache
def _import_cupy() -> Any:
    try:
        import cupy  # noqa: PLC0415 - imported lazily on purpose
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise GPUUnavailableError(
            "this cgraph feature needs CuPy, which is not installed; install it with "
            "`pip install 'cgraph-cupy[cuda13]'` (or `[cuda12]` for a CUDA 12 driver)"
        ) from exc
    return cupy


def cupy() -> Any:
    """Return the cupy module, or raise GPUUnavailableError saying how to install it."""
    return _import_cupy()


def require_device() -> Any:
    """Return cupy after checking that a CUDA device can be used."""
    cp = _import_cupy()
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CuPy raises several types here
        raise GPUUnavailableError(
            f"CuPy is installed but no CUDA device is usable ({exc}); run this on a "
            "machine with an NVIDIA GPU and a driver, or use the pure API only"
        ) from exc
    if count < 1:
        raise GPUUnavailableError(
            "CuPy sees 0 CUDA devices; run this on a machine with an NVIDIA GPU"
        )
    return cp


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    try:
        require_device()
    except GPUUnavailableError:
        return False
    return True
