"""Flattening nested containers (tuples, lists, dicts) to their array leaves, JAX-pytree style."""

from __future__ import annotations

from typing import Any


def array_leaves(obj: Any) -> list[tuple[str, Any]]:
    """(path, array) for every leaf that exposes device memory (has `.data.ptr`)."""
    found: list[tuple[str, Any]] = []
    _collect(obj, "", found)
    return found


def _collect(node: Any, path: str, found: list[tuple[str, Any]]) -> None:
    # A module-level function, not a recursive closure: a closure that refers to itself
    # forms a reference cycle that would keep `found` (and its arrays) alive until the GC.
    if isinstance(node, (tuple, list)):
        for i, item in enumerate(node):
            _collect(item, f"{path}[{i}]", found)
    elif isinstance(node, dict):
        for key, item in node.items():
            _collect(item, f"{path}[{key!r}]", found)
    elif hasattr(node, "data") and hasattr(getattr(node, "data"), "ptr"):
        found.append((path, node))
