"""Kernel launch policy shared by the launchers: dtype tags, vector widths, thread counts,
device facts, grid limits and the launch itself.

Launches allocate nothing, never synchronize and read no device value on the host, so
every launcher can be captured into a CUDA graph.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import numpy as np

from cgraph.core.errors import ArgumentError
from cgraph.cuda import state as _state
from cgraph.cuda.device import cupy
from cgraph.cuda.driver import launch_programmatic
from cgraph.cuda.interop import any_foreign, as_cupy
from cgraph.kernels.loader import get_kernel

#: dtype name -> the suffix of its kernels' names.
TAGS = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}
#: bytes moved by one vector load or store of the vector kernels (uint4).
VECTOR_BYTES = 16
#: CUDA's grid limits (x, y, z).
GRID_LIMITS = (2**31 - 1, 65535, 65535)
I32, I64, F32 = np.int32, np.int64, np.float32

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


def tag(dtype: str) -> str:
    """The kernel-name suffix of a dtype ("f16", "bf16", "f32")."""
    return TAGS[dtype]


def vector_width(dtype: str) -> int:
    """Elements per 16-byte vector access: 8 for fp16/bf16, 4 for fp32."""
    return VECTOR_BYTES // _ITEMSIZE[dtype]


def threads_for(work: int, cap: int = 256) -> int:
    """Threads per block for `work` items: whole warps, at least one, at most `cap`."""
    return int(min(cap, max(32, -(-work // 32) * 32)))


def current_stream(stream: Any) -> Any:
    """`stream`, or CuPy's current stream when None."""
    return stream if stream is not None else cupy().cuda.get_current_stream()


_PROGRAMMATIC = {"on": os.environ.get("CGRAPH_PDL", "1") != "0"}


def set_programmatic_launch(enabled: bool) -> bool:
    """Turn programmatic dependent launch inside captures on or off; returns the previous
    setting. On by default (environment: CGRAPH_PDL=0 turns it off); it applies to graphs
    captured afterwards, on devices of compute capability 9.0 and newer."""
    previous = _PROGRAMMATIC["on"]
    _PROGRAMMATIC["on"] = bool(enabled)
    return previous


def programmatic_launch() -> bool:
    """Whether kernels captured now are launched with programmatic dependent launch: the
    setting is on, the device has it (compute capability 9.0+), and a capture is recording
    outside an eager break. Eager launches never use it: they gain nothing from it and the
    plain launch costs the host less."""
    if not _PROGRAMMATIC["on"]:
        return False
    capture = _state.active()
    return capture is not None and capture.recording and not capture.in_break and device_facts().clusters


def launch(family: str, name: str, grid: tuple[int, ...], block: int, args: tuple, stream: Any,
           smem: int = 0) -> None:
    """Launch kernel `name` of `family`; a grid outside CUDA's limits raises ArgumentError
    naming the size (the launch would fail with cudaErrorInvalidConfiguration). Inside a
    capture the launch is programmatic where :func:`programmatic_launch` says so; the
    kernel computes the same either way."""
    grid = tuple(int(g) for g in grid)
    for axis, (g, limit) in enumerate(zip(grid, GRID_LIMITS)):
        if not 1 <= g <= limit:
            raise ArgumentError(f"{name}: grid dimension {'xyz'[axis]} would be {g}, outside [1, {limit}]; "
                                "the arguments are too large for one launch (split the batch)")
    kern = get_kernel(family, name, dynamic_smem=smem)
    if any_foreign(args):  # torch / JAX arrays: CuPy views, no copy
        args = tuple(map(as_cupy, args))
    stream = current_stream(stream)
    if programmatic_launch():
        launch_programmatic(kern.kernel.ptr, grid, int(block), args, int(smem), stream.ptr)
    else:
        kern(grid, (int(block),), args, shared_mem=int(smem), stream=stream)


@attrs.frozen
class DeviceFacts:
    """What the launch policies need to know about the current device."""

    sm_count: int
    clusters: bool  # thread-block clusters (compute capability 9.0+)
    wgmma: bool  # runs the sm_90a wgmma kernels (compute capability exactly 9.0)


_FACTS: dict[int, DeviceFacts] = {}


def device_facts() -> DeviceFacts:
    """Facts of the current device (cached per device)."""
    dev = cupy().cuda.Device()
    facts = _FACTS.get(dev.id)
    if facts is None:
        cc = int(dev.compute_capability)
        facts = _FACTS[dev.id] = DeviceFacts(int(dev.attributes["MultiProcessorCount"]), cc >= 90, cc == 90)
    return facts
