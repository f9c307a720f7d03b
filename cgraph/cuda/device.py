"""Lazy access to CuPy for the GPU layers.

The pure core never imports this module. GPU modules call :func:`cupy` or
:func:`require_device` at the point of use, so `import cgraph` works on a machine with
neither CuPy nor a GPU, and a GPU feature used there fails with a message that says what
is missing and how to get it.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

from cgraph.core.errors import GPUUnavailableError

__all__ = ["GPUUnavailableError", "cupy", "require_device", "gpu_available", "device_name"]


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


def device_name() -> str:
    """The current CUDA device's name, or 'cpu (<machine>)' where no GPU is usable."""
    try:
        cp = require_device()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return f"cpu ({platform.machine()})"
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
