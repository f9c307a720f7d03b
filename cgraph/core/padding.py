"""padding_report: how a workload's batches would use a dispatch table's graphs.

For each batch the report dispatches once and counts, per runtime mode, how many
batches landed there and how many tokens were real versus computed (padded). A batch
that runs eagerly (NONE) computes exactly its real tokens.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from cgraph.core.checks import check_bool, check_int
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import DispatchTable, dispatch
from cgraph.core.modes import GraphMode

_RUNTIME_MODES = (GraphMode.FULL, GraphMode.PIECEWISE, GraphMode.NONE)


def _ratio(waste: int, padded: int) -> float:
    return waste / padded if padded else 0.0


@attrs.frozen
class ModeUsage:
    """Batches dispatched to one runtime mode and their tokens."""

    mode: GraphMode
    batches: int
    real_tokens: int
    padded_tokens: int

    @property
    def waste_tokens(self) -> int:
        """Padding tokens computed for nothing."""
        return self.padded_tokens - self.real_tokens

    @property
    def waste_ratio(self) -> float:
        """Padding as a fraction of computed tokens (0.0 when nothing ran)."""
        return _ratio(self.waste_tokens, self.padded_tokens)


@attrs.frozen
class GraphUsage:
    """Batches that replayed one graph (one key of one runtime mode)."""

    mode: GraphMode
    descriptor: BatchDescriptor
    batches: int
    real_tokens: int

    @property
    def padded_tokens(self) -> int:
        return self.batches * self.descriptor.num_tokens


@attrs.frozen
class PaddingReport:
    """Per-mode usage (FULL, PIECEWISE, NONE, in that order) and per-graph hits.

    ``graphs`` lists every graph hit at least once, largest first; ``report[mode]``
    returns that mode's :class:`ModeUsage`.
    """

    modes: tuple[ModeUsage, ...]
    graphs: tuple[GraphUsage, ...]

    def __getitem__(self, mode: GraphMode | str) -> ModeUsage:
        mode = GraphMode.parse(mode)
        for usage in self.modes:
            if usage.mode is mode:
                return usage
        raise KeyError(f"{mode.name} is not a runtime mode; use FULL, PIECEWISE or NONE")

    @property
    def batches(self) -> int:
        return sum(u.batches for u in self.modes)

    @property
    def graph_batches(self) -> int:
        """Batches that replayed a graph (FULL or PIECEWISE)."""
        return self.batches - self[GraphMode.NONE].batches

    @property
    def hit_rate(self) -> float:
        """Fraction of batches that replayed a graph (0.0 for no batches)."""
        return self.graph_batches / self.batches if self.batches else 0.0

    @property
    def real_tokens(self) -> int:
        return sum(u.real_tokens for u in self.modes)

    @property
    def padded_tokens(self) -> int:
        return sum(u.padded_tokens for u in self.modes)

    @property
    def waste_ratio(self) -> float:
        """Padding as a fraction of all computed tokens."""
        return _ratio(self.padded_tokens - self.real_tokens, self.padded_tokens)


def _batch_facts(batch: Any) -> tuple[int, bool, bool, int]:
    # (num_tokens, uniform, has_lora, num_active_loras) from one accepted batch form.
    if isinstance(batch, BatchDescriptor):
        return batch.num_tokens, batch.uniform, batch.has_lora, batch.num_active_loras
    if isinstance(batch, tuple) and len(batch) == 2:
        return (check_int(batch[0], "batch num_tokens", 1), check_bool(batch[1], "batch uniform"),
                False, 0)
    if isinstance(batch, tuple):
        raise ValueError(
            f"a batch tuple must be (num_tokens, uniform), got {batch!r}; use a BatchDescriptor "
            "to give LoRA facts"
        )
    return check_int(batch, "batch num_tokens", 1,
                     hint="or a (num_tokens, uniform) tuple, or a BatchDescriptor"), False, False, 0


def padding_report(
    table: DispatchTable, batches: Iterable[Any], *, disable_full: bool = False
) -> PaddingReport:
    """Dispatch every batch and tally graph use and padding.

    Each batch is one of: an int (num_tokens of a mixed batch without LoRA); a tuple
    ``(num_tokens, uniform_decode)``; or a :class:`BatchDescriptor`, whose num_tokens,
    uniform, has_lora and num_active_loras are used (num_reqs is ignored).
    ``disable_full`` applies to every batch.
    """
    if not isinstance(table, DispatchTable):
        raise TypeError(
            f"padding_report expects a DispatchTable, got {type(table).__name__}; "
            "build one with build_dispatch_table(GraphConfig(...))"
        )
    disable_full = check_bool(disable_full, "disable_full")
    counts = {m: [0, 0, 0] for m in _RUNTIME_MODES}  # batches, real, padded
    per_graph: dict[tuple[GraphMode, BatchDescriptor], list[int]] = {}
    for batch in batches:
        n, uniform, has_lora, n_loras = _batch_facts(batch)
        mode, desc = dispatch(table, n, uniform, has_lora, disable_full, n_loras)
        tally = counts[mode]
        tally[0] += 1
        tally[1] += n
        tally[2] += desc.num_tokens  # NONE's descriptor carries the real count
        if mode is not GraphMode.NONE:
            hit = per_graph.setdefault((mode, desc), [0, 0])
            hit[0] += 1
            hit[1] += n
    modes = tuple(ModeUsage(m, *counts[m]) for m in _RUNTIME_MODES)
    graphs = tuple(
        GraphUsage(mode, desc, b, real)
        for (mode, desc), (b, real) in sorted(
            per_graph.items(),
            key=lambda kv: (kv[0][1].num_tokens, kv[0][0].value, kv[0][1].uniform,
                            kv[0][1].num_active_loras),
            reverse=True,
        )
    )
    return PaddingReport(modes, graphs)
