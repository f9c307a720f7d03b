"""GraphMode: which kinds of CUDA graph a model uses.

Three modes are *runtime* modes, the answer a dispatch gives for one batch:

- ``NONE``: run eagerly, no graph.
- ``PIECEWISE``: replay graphs of the pieces between attention calls; attention runs eagerly.
- ``FULL``: replay one graph of the whole forward pass, attention included.

Two more are *configuration* modes that pick a different runtime mode for uniform
decode batches (every request has the same small query length) and for everything
else ("mixed" batches):

- ``FULL_DECODE_ONLY``: FULL graphs for uniform decode batches, NONE for mixed batches.
- ``FULL_AND_PIECEWISE``: FULL graphs for uniform decode batches, PIECEWISE for mixed.

A configuration mode is a pair (decode part, mixed part); :meth:`GraphMode.decode_mode`
and :meth:`GraphMode.mixed_mode` return the parts, and a single mode is its own pair.
"""

from __future__ import annotations

import enum

from cgraph.core.errors import ArgumentError, ArgumentTypeError


class GraphMode(enum.Enum):
    """A graph mode; see the module docstring. Parse names with :meth:`GraphMode.parse`."""

    NONE = "none"
    PIECEWISE = "piecewise"
    FULL = "full"
    FULL_DECODE_ONLY = "full_decode_only"
    FULL_AND_PIECEWISE = "full_and_piecewise"

    @classmethod
    def parse(cls, value: "GraphMode | str") -> "GraphMode":
        """Return the mode for a GraphMode or a case-insensitive name such as ``"full"``.

        Dashes and spaces count as underscores, so ``"full-and-piecewise"`` works too.
        """
        if isinstance(value, GraphMode):
            return value
        if not isinstance(value, str):
            raise ArgumentTypeError(
                f"graph mode must be a GraphMode or its name, got {value!r} "
                f"({type(value).__name__}); pass e.g. GraphMode.FULL or 'full'"
            )
        key = value.strip().lower().replace("-", "_").replace(" ", "_")
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ArgumentError(
                f"unknown graph mode {value!r}; expected one of: {names} (case-insensitive)"
            ) from None

    def decode_mode(self) -> "GraphMode":
        """The runtime mode used for uniform decode batches."""
        return _PARTS[self][0]

    def mixed_mode(self) -> "GraphMode":
        """The runtime mode used for mixed (prefill or non-uniform) batches."""
        return _PARTS[self][1]

    def separate_routine(self) -> bool:
        """True for the pair modes, which treat uniform decode batches separately."""
        return self in (GraphMode.FULL_DECODE_ONLY, GraphMode.FULL_AND_PIECEWISE)

    def has_mode(self, mode: "GraphMode | str") -> bool:
        """True if ``mode`` is this mode or one of its two parts.

        ``FULL_AND_PIECEWISE.has_mode(FULL)`` and ``FULL_DECODE_ONLY.has_mode(NONE)`` are
        True; ``FULL.has_mode(PIECEWISE)`` is False.
        """
        mode = GraphMode.parse(mode)
        return mode is self or mode in _PARTS[self]

    def requires_piecewise(self) -> bool:
        """True if some batches replay PIECEWISE graphs (the model must be split)."""
        return self.has_mode(GraphMode.PIECEWISE)

    def has_full_graphs(self) -> bool:
        """True if some batches replay FULL graphs."""
        return self.has_mode(GraphMode.FULL)

    def is_runtime_mode(self) -> bool:
        """True for NONE, PIECEWISE and FULL: the modes a dispatch can return."""
        return not self.separate_routine()

    def __str__(self) -> str:
        return self.name


_PARTS: dict[GraphMode, tuple[GraphMode, GraphMode]] = {
    GraphMode.NONE: (GraphMode.NONE, GraphMode.NONE),
    GraphMode.PIECEWISE: (GraphMode.PIECEWISE, GraphMode.PIECEWISE),
    GraphMode.FULL: (GraphMode.FULL, GraphMode.FULL),
    GraphMode.FULL_DECODE_ONLY: (GraphMode.FULL, GraphMode.NONE),
    GraphMode.FULL_AND_PIECEWISE: (GraphMode.FULL, GraphMode.PIECEWISE),
}
