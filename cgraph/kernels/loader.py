"""Compiled kernels for the current device, loaded from the cubin cache.

The first kernel requested on a device compiles every missing part of every family for
that device's target at once, in parallel (:func:`cgraph.kernels.cubin_cache.precompile`,
which prints its progress); afterwards each part's cubin is loaded as its own
``cupy.RawModule(path=...)`` on first use.
"""

from __future__ import annotations

import threading
from typing import Any

from cgraph.core.errors import ArgumentError, GPUUnavailableError
from cgraph.cuda.device import cupy, require_device
from cgraph.kernels.cubin_cache import cubin_path, precompile
from cgraph.kernels.families import check_arch, part_of

_lock = threading.Lock()
_prepared: set[int] = set()  # architectures whose cubins were compiled or checked in this process
_modules: dict[tuple[int, str, int], Any] = {}
_kernels: dict[tuple[int, str, str], Any] = {}
_smem: dict[tuple[int, str, str], int] = {}


def device_arch() -> tuple[int, int]:
    """(device id, compute capability as an int, e.g. 90) of the current device."""
    cp = require_device()
    dev = cp.cuda.Device()
    return dev.id, int(dev.compute_capability)


def _current_device() -> int:
    return cupy().cuda.runtime.getDevice()  # one cheap runtime call per launch


def get_kernel(family: str, name: str, *, dynamic_smem: int = 0) -> Any:
    """The compiled kernel `name` of `family` for the current device (cached).

    `dynamic_smem` raises the kernel's dynamic shared-memory limit (needed above 48 KB);
    done here, outside any launch, so that launches stay capturable.
    """
    key = (_current_device(), family, name)
    kern = _kernels.get(key)
    if kern is not None and _smem.get(key, 0) >= dynamic_smem:
        return kern
    with _lock:
        kern = _kernels.get(key)
        if kern is None:
            dev, arch = device_arch()
            part = part_of(family, name)
            mod = _modules.get((dev, family, part))
            if mod is None:
                mod = _modules[(dev, family, part)] = _load(family, arch, part)
            kern = _kernels[key] = mod.get_function(name)
        if dynamic_smem > max(_smem.get(key, 0), 48 * 1024):
            kern.max_dynamic_shared_size_bytes = dynamic_smem
        _smem[key] = max(_smem.get(key, 0), dynamic_smem)
    return kern


def _load(family: str, arch: int, part: int) -> Any:
    try:
        check_arch(arch)
    except ArgumentError as exc:
        raise GPUUnavailableError(f"this GPU (compute capability {arch // 10}.{arch % 10}) cannot run "
                                  f"cgraph's kernels: {exc}") from exc
    if arch not in _prepared:
        precompile(arch)  # a cold cache compiles every family of this target at once, in parallel
        _prepared.add(arch)
    return require_device().RawModule(path=str(cubin_path(family, arch, part)))
