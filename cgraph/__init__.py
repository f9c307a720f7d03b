"""cgraph: capture, dispatch and replay CUDA graphs with CuPy.

The pure core (modes, descriptors, config, dispatch, padding reports, size
suggestions) is imported here eagerly and needs neither CuPy nor a GPU. The GPU names
(GraphPool, capture, GraphRunner, kernels, ...) are imported on first access, so
``import cgraph`` stays cheap and works on any machine.
"""

from __future__ import annotations

import importlib
from typing import Any

from cgraph.config import GraphConfig
from cgraph.descriptors import BatchDescriptor
from cgraph.dispatch import DispatchTable, build_dispatch_table, capture_descriptors, dispatch
from cgraph.modes import GraphMode
from cgraph.padding import padding_report
from cgraph.sizes import suggest_capture_sizes

__version__ = "0.1.0"

# GPU name -> the module that defines it (imported lazily by __getattr__).
_LAZY = {
    "GraphPool": "cgraph.pool",
    "capture": "cgraph.graph",
    "CapturedGraph": "cgraph.graph",
    "StaticBuffers": "cgraph.buffers",
    "host_callback": "cgraph.callbacks",
    "GraphRunner": "cgraph.runner",
    "batch_context": "cgraph.runner",
    "capture_phase": "cgraph.runner",
    "capture_all": "cgraph.runner",
    "BreakableCapture": "cgraph.breakable",
    "BreakableRunner": "cgraph.breakable",
    "eager_break": "cgraph.breakable",
}

__all__ = [
    "GraphMode", "BatchDescriptor", "GraphConfig", "DispatchTable", "build_dispatch_table",
    "dispatch", "capture_descriptors", "padding_report", "suggest_capture_sizes",
    *_LAZY,
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

