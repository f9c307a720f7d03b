"""Per-step records of a generation run and their summary (pure; no CuPy)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import attrs
import numpy as np

from cgraph.core.errors import ArgumentError


@attrs.frozen
class StepRecord:
    """One engine step.

    mode: the runtime mode used ("none", "full" or "piecewise"); uniform: a uniform
    decode batch (else mixed prefill + decode); num_tokens: real tokens; padded_tokens:
    tokens computed (graph size, or num_tokens when eager); num_seqs: sequences.
    seconds: host time spent on the step (scheduling, metadata, launches; in the
    synchronous loop also the wait for its tokens).
    gpu_seconds: device time of the step's forward (graph replay or eager launches).
    gap_seconds: device idle time between the previous step's end and this step's first
    operation (0 when the host kept the GPU fed).
    period_seconds: device time from the previous step's end to this step's end: what the
    step cost in the stream of steps. Each is NaN where it was not measured.
    steps: decode steps the launch ran (more than 1 for a multi-step decode launch; the
    other fields then describe its first step, the times the whole launch).
    """

    mode: str
    uniform: bool
    num_tokens: int
    padded_tokens: int
    num_seqs: int
    seconds: float
    gpu_seconds: float = math.nan
    gap_seconds: float = math.nan
    period_seconds: float = math.nan
    steps: int = 1


def _percentile(values: Sequence[float], q: float) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(steps: Iterable[StepRecord], generated_tokens: int,
              wall_seconds: float | None = None) -> dict[str, float]:
    """tokens/s, step times (ms: host, GPU, idle gap; decode and mixed p50/p99), graph hit
    rate, padding waste.

    tokens/s divides by `wall_seconds` when given (the run's wall clock: with overlapped
    steps the host times add up to less than it), else by the sum of the host times.
    Graph hit rate: share of steps that replayed a graph. Padding waste: padded tokens that
    carried no real token, as a share of all tokens computed.
    """
    steps = list(steps)
    if not steps:
        raise ArgumentError("summarize needs at least one step record; run at least one step")
    total = wall_seconds if wall_seconds is not None else sum(s.seconds for s in steps)
    decode = [s for s in steps if s.uniform]
    mixed = [s for s in steps if not s.uniform]
    padded = sum(s.padded_tokens for s in steps)
    ms = lambda group, field: [getattr(s, field) * 1e3 for s in group]  # noqa: E731
    return {
        "tokens_per_s": generated_tokens / total if total > 0 else float("nan"),
        "wall_s": total,
        "decode_p50_ms": _percentile(ms(decode, "seconds"), 50),
        "decode_p99_ms": _percentile(ms(decode, "seconds"), 99),
        "mixed_p50_ms": _percentile(ms(mixed, "seconds"), 50),
        "mixed_p99_ms": _percentile(ms(mixed, "seconds"), 99),
        "decode_gpu_p50_ms": _percentile(ms(decode, "gpu_seconds"), 50),
        "decode_gap_p50_ms": _percentile(ms(decode, "gap_seconds"), 50),
        "decode_period_p50_ms": _percentile(ms(decode, "period_seconds"), 50),
        "gpu_busy": (sum(s.gpu_seconds for s in steps if not math.isnan(s.gpu_seconds)) / total
                     if total > 0 else float("nan")),
        "graph_hit_rate": sum(s.mode != "none" for s in steps) / len(steps),
        "padding_waste": (padded - sum(s.num_tokens for s in steps)) / padded,
        "steps": len(steps), "decode_steps": len(decode), "mixed_steps": len(mixed),
    }
