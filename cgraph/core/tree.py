"""Flattening nested containers (tuples, lists, dicts) to their array leaves, JAX-pytree style.

A leaf is anything that exposes device memory through ``.data.ptr`` (a CuPy array); the
module itself never imports CuPy.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable


def array_leaves(obj: Any) -> list[tuple[str, Any]]:
    """(path, array) for every leaf that exposes device memory (has `.data.ptr`)."""
    found: list[tuple[str, Any]] = []
    _collect(obj, "", found)
    return found


def argument_leaves(args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """(path, array) for the array leaves of a call's arguments, paths as the call wrote
    them: ``args[1]``, ``args[0][2]``, ``kwargs['out']``."""
    found: list[tuple[str, Any]] = []
    for i, item in enumerate(args):
        _collect(item, f"args[{i}]", found)
    for key, item in kwargs.items():
        _collect(item, f"kwargs[{key!r}]", found)
    return found


def argument_addresses(args: tuple, kwargs: dict) -> tuple[tuple[str, int], ...]:
    """(path, device address) of every array leaf of a call's arguments."""
    return tuple((path, arr.data.ptr) for path, arr in argument_leaves(args, kwargs))


_POSITIONAL = re.compile(r"^args\[(\d+)\](.*)$")
_KEYWORD = re.compile(r"^kwargs\[('[^']*'|\"[^\"]*\")\](.*)$")


def describe_argument(fn: Callable[..., Any], path: str) -> str:
    """A path from :func:`argument_leaves` in the words of fn's signature:
    ``args[1][0]`` of ``def step(x, bufs)`` reads ``bufs[0] (positional argument 1)``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return path
    m = _POSITIONAL.match(path)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY, params[i].POSITIONAL_OR_KEYWORD):
            return f"{params[i].name}{rest} (positional argument {i})"
        return path
    m = _KEYWORD.match(path)
    if m:
        return f"{m.group(1)[1:-1]}{m.group(2)} (keyword argument)"
    return path


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
