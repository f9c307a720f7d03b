"""The one place cgraph calls CUDA through cuda.bindings (what CuPy does not expose).

CuPy's graph API stops at capture, instantiate, upload and launch, and its kernel launch
takes no launch attributes. Updating an executable graph in place and launching a kernel
with programmatic dependent launch need the runtime and driver APIs of the
`cuda-bindings` package, which the `cuda13`/`cuda12` extras install; it is imported on
first use and its absence is reported as GPUUnavailableError saying how to install it.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from cgraph.core.errors import ArgumentTypeError, CaptureError, GPUUnavailableError


@functools.cache
def cudart() -> Any:
    """cuda.bindings.runtime, or GPUUnavailableError saying how to install it."""
    try:
        from cuda.bindings import runtime  # noqa: PLC0415 - optional, GPU-only
    except ImportError as exc:
        raise GPUUnavailableError(
            "this feature needs the cuda-bindings package (cuda.bindings.runtime); install it "
            "with `pip install 'cgraph-cupy[cuda13]'` (or `[cuda12]`)"
        ) from exc
    return runtime


def exec_update(exec_handle: int, template: int) -> str | None:
    """Copy the node parameters of the graph ``template`` into the executable graph
    ``exec_handle`` (cudaGraphExecUpdate). Returns None on success, else CUDA's reason
    (the topologies differ); the executable graph is then unusable."""
    rt = cudart()
    result = rt.cudaGraphExecUpdate(exec_handle, rt.cudaGraph_t(init_value=template))
    err = result[0]
    if err == rt.cudaError_t.cudaSuccess:
        return None
    return f"{err.name}: {result[1:]}"


@functools.cache
def _driver() -> Any:
    try:
        from cuda.bindings import driver  # noqa: PLC0415 - optional, GPU-only
    except ImportError as exc:
        raise GPUUnavailableError(
            "programmatic dependent launch needs the cuda-bindings package (cuda.bindings.driver); "
            "install it with `pip install 'cgraph-cupy[cuda13]'` (or `[cuda12]`), or turn it off with "
            "cgraph.kernels.set_programmatic_launch(False)"
        ) from exc
    return driver


def _kernel_arg(value: Any) -> Any:
    """A ctypes object holding one kernel argument as the kernel takes it."""
    if hasattr(value, "data") and hasattr(value.data, "ptr"):  # a CuPy array: its device pointer
        return ctypes.c_void_p(int(value.data.ptr))
    kind = getattr(value, "dtype", None)
    if kind is not None and kind.kind == "V":  # a by-value struct (a TMA descriptor)
        raw = bytes(value.tobytes())
        return (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
    ctype = _CTYPES.get(str(kind))
    if ctype is None:
        raise ArgumentTypeError(f"kernel argument of type {type(value).__name__} ({kind}) has no ctypes form")
    return ctype(value.item())


_CTYPES = {"int32": ctypes.c_int32, "int64": ctypes.c_int64, "uint64": ctypes.c_uint64, "float32": ctypes.c_float,
           "uint32": ctypes.c_uint32}


def launch_programmatic(function_ptr: int, grid: tuple[int, ...], block: int, args: tuple, smem: int,
                        stream_ptr: int) -> None:
    """Launch a kernel (a CUfunction address) with the programmatic stream serialization
    attribute (cuLaunchKernelEx): a stream capture then records a programmatic edge from
    the kernel before it, so this kernel may be scheduled while that one drains (its
    griddepcontrol.wait orders its memory accesses; kernels/common.cuh, CG_PDL_ENTRY)."""
    cu = _driver()
    gx, gy, gz = (tuple(grid) + (1, 1))[:3]
    cfg = cu.CUlaunchConfig()
    cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = int(gx), int(gy), int(gz)
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = int(block), 1, 1
    cfg.sharedMemBytes = int(smem)
    cfg.hStream = cu.CUstream(int(stream_ptr))
    attr = cu.CUlaunchAttribute()
    attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    attr.value.programmaticStreamSerializationAllowed = 1
    cfg.attrs = [attr]
    cfg.numAttrs = 1
    held = [_kernel_arg(a) for a in args]  # alive until the launch has copied them
    params = (ctypes.c_void_p * max(1, len(held)))(*[ctypes.addressof(h) for h in held])
    err, = cu.cuLaunchKernelEx(cfg, cu.CUfunction(int(function_ptr)), ctypes.addressof(params), 0)
    if err != cu.CUresult.CUDA_SUCCESS:
        raise CaptureError(f"cuLaunchKernelEx (programmatic launch) failed: {getattr(err, 'name', err)}")


def edge_kinds(graph_handle: int) -> tuple[int, int]:
    """(programmatic edges, all edges) of a CUDA graph (a cudaGraph_t address), top level."""
    rt = cudart()
    graph = rt.cudaGraph_t(init_value=int(graph_handle))
    err, _, _, _, count = rt.cudaGraphGetEdges(graph, 0)
    if err != rt.cudaError_t.cudaSuccess or not count:
        return 0, 0
    err, _, _, data, count = rt.cudaGraphGetEdges(graph, count)
    if err != rt.cudaError_t.cudaSuccess:
        return 0, 0
    programmatic = rt.cudaGraphDependencyType.cudaGraphDependencyTypeProgrammatic
    return sum(1 for d in data[:count] if d.type == programmatic), int(count)
