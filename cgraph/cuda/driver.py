"""The one place cgraph calls CUDA through cuda.bindings (what CuPy does not expose).

CuPy's graph API stops at capture, instantiate, upload and launch. Updating an
executable graph in place needs the runtime API from the `cuda-bindings` package, which
the `cuda13`/`cuda12` extras install; it is imported on first use and its absence is
reported as GPUUnavailableError saying how to install it.
"""

from __future__ import annotations

import functools
from typing import Any

from cgraph.core.errors import GPUUnavailableError


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
