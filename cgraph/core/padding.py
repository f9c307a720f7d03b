"""padding_report: how a workload's batches would use a dispatch table's graphs.

The report dispatches each distinct batch once and tallies, per runtime mode and per
graph, a :class:`~cgraph.core.buckets.TokenUsage`: how many batches landed there and how
many tokens were real versus computed (padded). A batch that runs eagerly (NONE)
computes exactly its real tokens. The report itself is the usage of all batches.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

import attrs

from cgraph.core.buckets import TokenUsage
from cgraph.core.checks import check_bool, check_counts, check_instance, check_int
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import DispatchTable, dispatch
from cgraph.core.errors import ArgumentError, ArgumentTypeError, NotFoundError
from cgraph.core.modes import GraphMode

_RUNTIME_MODES = (GraphMode.FULL, GraphMode.PIECEWISE, GraphMode.NONE)
Batch = int | tuple[int, bool] | BatchDescriptor


@attrs.frozen
class _DecoderUsage(TokenUsage):
    """TokenUsage with the names the decoder's report had before it shared the type.

    Kept because notebooks/_sources/02_dispatch.py reads them; new code should use
    ``computed_tokens`` and ``waste``.
    """

    @property
    def padded_tokens(self) -> int:
        """Old name of ``computed_tokens``."""
        return self.computed_tokens

    @property
    def waste_ratio(self) -> float:
        """Old name of ``waste``."""
        return self.waste


@attrs.frozen
class ModeUsage(_DecoderUsage):
    """The usage of the batches dispatched to one runtime mode."""

    mode: GraphMode = attrs.field(kw_only=True)


@attrs.frozen
class GraphUsage(TokenUsage):
    """The usage of the batches that replayed one graph (one key of one runtime mode)."""

    mode: GraphMode = attrs.field(kw_only=True)
    descriptor: BatchDescriptor = attrs.field(kw_only=True)


@attrs.frozen
class PaddingReport(_DecoderUsage):
    """The usage of every batch, per runtime mode and per graph.

    ``modes`` holds FULL, PIECEWISE and NONE in that order (``report[mode]`` returns
    one); ``graphs`` lists every graph hit at least once, largest first.
    """

    modes: tuple[ModeUsage, ...] = attrs.field(kw_only=True)
    graphs: tuple[GraphUsage, ...] = attrs.field(kw_only=True)

    def __getitem__(self, mode: GraphMode | str) -> ModeUsage:
        mode = GraphMode.parse(mode)
        for usage in self.modes:
            if usage.mode is mode:
                return usage
        raise NotFoundError(f"{mode.name} is not a runtime mode; use FULL, PIECEWISE or NONE")

    @property
    def graph_batches(self) -> int:
        """Batches that replayed a graph (FULL or PIECEWISE)."""
        return self.batches - self[GraphMode.NONE].batches

    @property
    def hit_rate(self) -> float:
        """Fraction of batches that replayed a graph (0.0 for no batches)."""
        return self.graph_batches / self.batches if self.batches else 0.0


_BATCH_FORMS = "an int num_tokens, a (num_tokens, uniform) tuple or a BatchDescriptor"


def _batch_facts(batch: Any) -> tuple[int, bool, bool, int]:
    # (num_tokens, uniform, has_lora, num_active_loras) from one accepted batch form.
    if isinstance(batch, BatchDescriptor):
        return batch.num_tokens, batch.uniform, batch.has_lora, batch.num_active_loras
    if isinstance(batch, tuple) and len(batch) == 2:
        return (check_int(batch[0], "batch num_tokens", 1), check_bool(batch[1], "batch uniform"),
                False, 0)
    if isinstance(batch, tuple):
        raise ArgumentError(
            f"a batch tuple must be (num_tokens, uniform), got {batch!r}; use a BatchDescriptor "
            "to give LoRA facts"
        )
    return check_int(batch, "batch num_tokens", 1,
                     hint="or a (num_tokens, uniform) tuple, or a BatchDescriptor"), False, False, 0


def padding_report(
    table: DispatchTable, batches: Iterable[Batch] | Mapping[Batch, int], *, disable_full: bool = False
) -> PaddingReport:
    """Dispatch every batch and tally graph use and padding.

    ``batches`` is an iterable of batches, or a mapping ``{batch: count}`` (how many
    batches of that form ran; counts are ints >= 0), the histogram form
    ``suggest_capture_sizes`` reads too. A batch is one of: an int (num_tokens of a mixed
    batch without LoRA); a tuple ``(num_tokens, uniform_decode)``; or a
    :class:`BatchDescriptor`, whose num_tokens, uniform, has_lora and num_active_loras
    are used (num_reqs is ignored). ``disable_full`` applies to every batch.
    """
    check_instance(table, DispatchTable, "padding_report's table",
                   hint="build one with build_dispatch_table(GraphConfig(...))")
    disable_full = check_bool(disable_full, "disable_full")
    if isinstance(batches, BatchDescriptor):  # one batch, not a collection of them
        raise ArgumentTypeError(
            f"batches must be a collection of batches, got one BatchDescriptor {batches!r}; "
            "pass [descriptor]"
        )
    facts: Counter[tuple[int, bool, bool, int]] = Counter()
    for batch, count in check_counts(batches, "batches", example="[3, (5, True)] or {3: 100, 700: 2}"):
        facts[_batch_facts(batch)] += count
    modes = {m: [0, 0, 0] for m in _RUNTIME_MODES}  # batches, real, computed
    per_graph: dict[tuple[GraphMode, BatchDescriptor], list[int]] = {}
    for (n, uniform, has_lora, n_loras), count in facts.items():
        if not count:
            continue
        mode, desc = dispatch(table, n, uniform, has_lora, disable_full, n_loras)
        tallies = [modes[mode]]
        if mode is not GraphMode.NONE:
            tallies.append(per_graph.setdefault((mode, desc), [0, 0, 0]))
        for tally in tallies:  # NONE's descriptor carries the real count: computed == real
            tally[0] += count
            tally[1] += count * n
            tally[2] += count * desc.num_tokens
    mode_usage = tuple(ModeUsage(*modes[m], mode=m) for m in _RUNTIME_MODES)
    graphs = tuple(
        GraphUsage(*tally, mode=mode, descriptor=desc)
        for (mode, desc), tally in sorted(
            per_graph.items(),
            key=lambda kv: (kv[0][1].num_tokens, kv[0][0].value, kv[0][1].uniform,
                            kv[0][1].has_lora, kv[0][1].num_active_loras),
            reverse=True,
        )
    )
    totals = [sum(u[i] for u in modes.values()) for i in range(3)]
    return PaddingReport(*totals, modes=mode_usage, graphs=graphs)
