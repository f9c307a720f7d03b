"""cgraph: capture, dispatch and replay CUDA graphs with CuPy.

Layers, each importing only those below it:

- ``cgraph.core``: the pure core (modes, descriptors, config, dispatch, bucketing of
  capture sizes and encoder budgets, encoder planning, errors). Imported here eagerly;
  needs neither CuPy nor a GPU.
- ``cgraph.cuda``: pools, the capture session, captured graphs, buffers, callbacks,
  runners, breakable captures. Its names are imported on first access, so
  ``import cgraph`` stays cheap and works on any machine.
- ``cgraph.kernels``: the raw CUDA kernels and their launchers.
- ``cgraph.models``, ``cgraph.engine``, ``cgraph.encoder``: applications built on them.
- ``cgraph.bench``, ``cgraph.demo``, ``cgraph.notebook``: tools; no library module
  imports them.
"""

from __future__ import annotations

import importlib
from typing import Any

from cgraph.core.buckets import suggest_capture_sizes
from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import DispatchTable, build_dispatch_table, capture_descriptors, dispatch
from cgraph.core import errors as _errors
from cgraph.core.errors import *  # noqa: F403 - every cgraph exception is public API
from cgraph.core.modes import GraphMode
from cgraph.core.padding import padding_report
from cgraph.core.sampling import SamplingParams

__version__ = "0.1.0"

# GPU name -> the module that defines it (imported lazily by __getattr__).
_LAZY = {
    "GraphPool": "cgraph.cuda.pool",
    "capture": "cgraph.cuda.graph",
    "CapturedGraph": "cgraph.cuda.graph",
    "StaticBuffers": "cgraph.cuda.buffers",
    "host_callback": "cgraph.cuda.callbacks",
    "GraphRunner": "cgraph.cuda.runner",
    "LazyCapture": "cgraph.cuda.runner",
    "batch_context": "cgraph.cuda.context",
    "current_batch": "cgraph.cuda.context",
    "capture_phase": "cgraph.cuda.context",
    "capture_all": "cgraph.cuda.tables",
    "estimate_graph_memory": "cgraph.cuda.tables",
    "BreakableCapture": "cgraph.cuda.breakable",
    "BreakableRunner": "cgraph.cuda.breakable",
    "capture_breakable": "cgraph.cuda.breakable",
    "eager_break": "cgraph.cuda.breakable",
    "while_loop": "cgraph.kernels.control",
    "cond": "cgraph.kernels.control",
    "Generator": "cgraph.kernels.random",
    "matmul": "cgraph.cuda.blas",
    "as_cupy": "cgraph.cuda.interop",
}

__all__ = [
    "GraphMode", "BatchDescriptor", "GraphConfig", "DispatchTable", "build_dispatch_table",
    "dispatch", "capture_descriptors", "padding_report", "suggest_capture_sizes", "SamplingParams",
    *_errors.__all__, *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name == "kernels":
        # Submodule attribute: import it (importing also binds it on this package).
        return importlib.import_module("cgraph.kernels")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
