"""Argument checks shared by the pure core.

Every check either returns the value in its canonical Python type or raises an
:class:`~cgraph.core.errors.ArgumentTypeError` (a TypeError) or
:class:`~cgraph.core.errors.ArgumentError` (a ValueError) whose message names the
argument, the value it got, what was expected and how to fix the call. NumPy integers and
booleans are accepted and turned into plain ``int``/``bool`` so they hash and compare like
Python ones.

Besides scalars, three collection forms recur across the core and are checked here once:

- a *sequence of ints* (one entry per item, order meaningful): :func:`check_int_sequence`;
- a *ladder of sizes* (capture sizes, token budgets): :func:`check_sizes`;
- *counts*: a mapping ``{key: count}`` always means counts (how many batches or items have
  that key), any other iterable lists the observed keys one entry each:
  :func:`check_counts`, and for integer sizes :func:`check_histogram`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Set
from typing import Any, Callable

from cgraph.core.errors import ArgumentError, ArgumentTypeError


def _is_numpy_bool(value: Any) -> bool:
    # Detected by type name so the pure core never needs to import numpy here.
    cls = type(value)
    return cls.__module__ == "numpy" and cls.__name__ in ("bool_", "bool")


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(
    value: Any, name: str, minimum: int | None = None, maximum: int | None = None, *, hint: str = ""
) -> int:
    """Return ``value`` as an int, rejecting bools, floats and anything not integral.

    ``minimum`` and ``maximum`` (inclusive) are checked after the type. ``hint`` is
    appended to the message and should say how to fix the call.
    """
    if type(value) is not int:  # fast path first: plain ints are the common case
        if isinstance(value, bool) or _is_numpy_bool(value) or not isinstance(value, numbers.Integral):
            raise ArgumentTypeError(
                f"{name} must be an int{_bounds(minimum, maximum)}, got {value!r} "
                f"({type(value).__name__}); pass a plain integer{', ' + hint if hint else ''}"
            )
        value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ArgumentError(
            f"{name} must be an int{_bounds(minimum, maximum)}, got {value}"
            f"{'; ' + hint if hint else ''}"
        )
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a bool; only bool (or numpy.bool_) is accepted, not 0/1."""
    if value is True or value is False:
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise ArgumentTypeError(
        f"{name} must be a bool, got {value!r} ({type(value).__name__}); pass True or False"
    )


def check_instance(value: Any, cls: type, name: str, *, hint: str) -> Any:
    """Return ``value`` if it is a ``cls``; else ArgumentTypeError ending with ``hint``."""
    if not isinstance(value, cls):
        article = "an" if cls.__name__[:1] in "AEIOU" else "a"
        raise ArgumentTypeError(
            f"{name} must be {article} {cls.__name__}, got {_short(value)} "
            f"({type(value).__name__}); {hint}"
        )
    return value


def _short(value: Any, limit: int = 80) -> str:
    # Messages quote the value, but a 10**6-entry list must not flood the terminal.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _iterable(value: Any, name: str, expected: str, example: str) -> Iterable[Any]:
    # The iterables the collection checks accept: not text (a str iterates characters).
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(
            f"{name} must be {expected}, got {_short(value)} ({type(value).__name__}); "
            f"pass e.g. {example}"
        )
    return value


def check_int_sequence(
    value: Any, name: str, minimum: int | None = None, *, hint: str = ""
) -> tuple[int, ...]:
    """``value`` as a tuple of ints, one per item, in the given order.

    Positions are meaningful (results refer to items by index), so a mapping or a set is
    refused: neither says which item is which. Each entry goes through :func:`check_int`
    with ``minimum``; the message names the entry's index.
    """
    expected = "a sequence of ints (one entry per item)"
    _iterable(value, name, expected, "[16, 64, 64]")
    if isinstance(value, Mapping):
        raise ArgumentTypeError(
            f"{name} must be {expected}, got a mapping {_short(value)}; to expand a histogram "
            f"{{size: count}} pass [size for size, count in hist.items() for _ in range(count)]"
        )
    if isinstance(value, Set):
        raise ArgumentTypeError(
            f"{name} must be {expected}, got a set {_short(value)}, which has no order; "
            "pass a list or tuple"
        )
    return tuple(check_int(v, f"{name}[{i}]", minimum, hint=hint) for i, v in enumerate(value))


def check_sizes(
    value: Any, name: str, *, sort: bool = False, maximum: int | None = None, hint: str = ""
) -> tuple[int, ...]:
    """A ladder of sizes: a non-empty, strictly ascending tuple of ints >= 1.

    With ``sort`` the entries may come in any order and repeat (a set of sizes); without
    it they must already be strictly ascending (a ladder as written), so that an unsorted
    ladder is refused rather than silently misread. ``maximum`` bounds every entry.
    """
    entries = _iterable(value, name, "an iterable of ints >= 1", "(64, 256, 1024)")
    if isinstance(entries, Mapping):
        raise ArgumentTypeError(
            f"{name} must be an iterable of sizes, got a mapping {_short(value)}; pass its "
            "sizes, e.g. sorted(mapping)"
        )
    sizes = [check_int(s, f"{name} entry", 1, maximum, hint=hint) for s in entries]
    if not sizes:
        raise ArgumentError(f"{name} is empty; pass at least one size{', ' + hint if hint else ''}")
    ordered = sorted(set(sizes))
    if sort:
        return tuple(ordered)
    if ordered != sizes:
        raise ArgumentError(
            f"{name} must be strictly ascending without repeats, got {_short(tuple(sizes))}; "
            f"pass {_short(tuple(ordered))}"
        )
    return tuple(sizes)


def check_counts(value: Any, name: str, *, example: str) -> list[tuple[Any, int]]:
    """(key, count) pairs from the two forms a workload may take.

    A mapping means ``{key: count}``: each count (an int >= 0) says how many batches or
    items have that key. Any other iterable (not a str) lists observed keys, each counted
    once. Keys are returned unchecked (the caller knows their form); counts are checked.
    ``example`` shows an accepted value in the error message.
    """
    _iterable(value, name, "a mapping {key: count} or an iterable of observed keys", example)
    if not isinstance(value, Mapping):
        return [(key, 1) for key in value]
    return [
        (key, check_int(count, f"{name} count for {key!r}", 0,
                        hint="a mapping holds counts (how many batches or items have each "
                             "key): scale probabilities to counts, e.g. round(p * 10**6)"))
        for key, count in value.items()
    ]


def check_histogram(value: Any, name: str) -> dict[int, int]:
    """``{size: count > 0}`` in ascending size order, from a mapping or observed sizes.

    A mapping is ``{size: count}`` (counts are ints >= 0; zeros are dropped and equal
    sizes merged); any other iterable is a list of observed sizes. Sizes are ints >= 1.
    The result may be empty; callers that need an observation say so.
    """
    merged: dict[int, int] = {}
    for size, count in check_counts(value, name, example="{1: 40, 8: 3} or [1, 1, 8]"):
        size = check_int(size, f"{name} size", 1, hint="sizes are token counts")
        if count:
            merged[size] = merged.get(size, 0) + count
    return dict(sorted(merged.items()))


def int_converter(
    name: str, minimum: int | None = None, maximum: int | None = None, *, hint: str = ""
) -> Callable[[Any], int]:
    """An attrs converter running :func:`check_int` with a fixed name and bounds."""

    def convert(value: Any) -> int:
        return check_int(value, name, minimum, maximum, hint=hint)

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
