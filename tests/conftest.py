"""Test set-up: tests marked `gpu` skip, with the reason, where no CUDA device is usable."""

from __future__ import annotations

import os

import pytest

from cgraph.cuda.device import gpu_available

_GPU = gpu_available()

if _GPU and os.environ.get("CGRAPH_TEST_NO_POOL", "") not in ("", "0"):
    # Under compute-sanitizer: plain cudaMalloc per array, so an out-of-bounds access is
    # caught at the array's edge instead of landing inside a pooled chunk.
    import cupy

    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
_REASON = "needs a CUDA GPU (and CuPy): none is usable here"


def pytest_collection_modifyitems(config, items):
    if _GPU:
        return
    skip = pytest.mark.skip(reason=_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
