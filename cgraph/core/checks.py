"""Argument checks shared by the pure core.

Every check either returns the value in its canonical Python type or raises a
TypeError/ValueError whose message names the argument, the value it got, what was
expected and how to fix the call. NumPy integers and booleans are accepted and turned
into plain ``int``/``bool`` so they hash and compare like Python ones.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable


def _is_numpy_bool(value: Any) -> bool:
    # Detected by type name so the pure core never needs to import numpy here.
    cls = type(value)
    return cls.__module__ == "numpy" and cls.__name__ in ("bool_", "bool")


def check_int(value: Any, name: str, minimum: int | None = None, *, hint: str = "") -> int:
    """Return ``value`` as an int, rejecting bools, floats and anything not integral.

    ``minimum`` (inclusive) is checked after the type. ``hint`` is appended to the
    message and should say how to fix the call.
    """
    if type(value) is not int:  # fast path first: plain ints are the common case
        if isinstance(value, bool) or _is_numpy_bool(value) or not isinstance(value, numbers.Integral):
            bound = f" >= {minimum}" if minimum is not None else ""
            raise TypeError(
                f"{name} must be an int{bound}, got {value!r} ({type(value).__name__}); "
                f"pass a plain integer{', ' + hint if hint else ''}"
            )
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(
            f"{name} must be an int >= {minimum}, got {value}"
            f"{'; ' + hint if hint else ''}"
        )
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a bool; only bool (or numpy.bool_) is accepted, not 0/1."""
    if value is True or value is False:
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise TypeError(
        f"{name} must be a bool, got {value!r} ({type(value).__name__}); pass True or False"
    )


def int_converter(name: str, minimum: int | None = None, *, hint: str = "") -> Callable[[Any], int]:
    """An attrs converter running :func:`check_int` with a fixed name and bound."""

    def convert(value: Any) -> int:
        return check_int(value, name, minimum, hint=hint)

    return convert


def optional_int_converter(name: str, minimum: int | None = None, *, hint: str = "") -> Callable[[Any], int | None]:
    """Like :func:`int_converter`, letting None through unchanged."""

    def convert(value: Any) -> int | None:
        return None if value is None else check_int(value, name, minimum, hint=hint)

    return convert


def bool_converter(name: str) -> Callable[[Any], bool]:
    """An attrs converter running :func:`check_bool` with a fixed name."""

    def convert(value: Any) -> bool:
        return check_bool(value, name)

    return convert
