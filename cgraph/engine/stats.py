"""Per-step records of a generation run and their summary (pure; no CuPy)."""

from __future__ import annotations

from typing import Iterable, Sequence

import attrs
import numpy as np

from cgraph.core.errors import ArgumentError


@attrs.frozen
class StepRecord:
    """One engine step: the runtime mode used, batch kind, real and padded sizes, wall seconds."""

    mode: str           # runtime mode: "none", "full" or "piecewise"
    uniform: bool       # uniform decode batch (else mixed prefill + decode)
    num_tokens: int     # real tokens
    padded_tokens: int  # tokens the step computed (graph size, or num_tokens when eager)
    num_seqs: int
    seconds: float      # host wall time: metadata in, forward, next tokens back on the host


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarize(steps: Iterable[StepRecord], generated_tokens: int) -> dict[str, float]:
    """tokens/s, decode and mixed step time p50/p99 (ms), graph hit rate, padding waste.

    Graph hit rate: share of steps that replayed a graph. Padding waste: padded tokens
    that carried no real token, as a share of all tokens computed.
    """
    steps = list(steps)
    if not steps:
        raise ArgumentError("summarize needs at least one step record")
    total = sum(s.seconds for s in steps)
    decode = [s.seconds * 1e3 for s in steps if s.uniform]
    mixed = [s.seconds * 1e3 for s in steps if not s.uniform]
    padded = sum(s.padded_tokens for s in steps)
    return {
        "tokens_per_s": generated_tokens / total if total > 0 else float("nan"),
        "decode_p50_ms": _percentile(decode, 50), "decode_p99_ms": _percentile(decode, 99),
        "mixed_p50_ms": _percentile(mixed, 50), "mixed_p99_ms": _percentile(mixed, 99),
        "graph_hit_rate": sum(s.mode != "none" for s in steps) / len(steps),
        "padding_waste": (padded - sum(s.num_tokens for s in steps)) / padded,
        "steps": len(steps), "decode_steps": len(decode), "mixed_steps": len(mixed),
    }
