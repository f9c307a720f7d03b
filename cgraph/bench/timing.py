"""Time measurement helpers shared by the benchmarks.

Paths that are compared are measured interleaved, round by round, so drift in clocks or
host load hits every path alike; each figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping


def host_us(calls: Mapping[str, Callable[[], Any]], sync: Callable[[], Any], *, batch: int = 100,
            rounds: int = 60, warm: int = 3) -> dict[str, float]:
    """Median host microseconds per call for each path: `batch` calls back to back, synced between.

    Batches stay well under the driver's launch queue, so launches never wait for the GPU
    and the figure is the host cost of issuing the work.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warm + rounds):
        for name, call in calls.items():
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                call()
            elapsed = (time.perf_counter_ns() - t0) / batch / 1e3
            sync()
            if r >= warm:
                samples[name].append(elapsed)
    return {name: statistics.median(s) for name, s in samples.items()}


def wall_us(calls: Mapping[str, Callable[[], Any]], sync: Callable[[], Any], *, rounds: int = 200,
            warm: int = 10) -> dict[str, float]:
    """Median wall microseconds of one call followed by a sync, for each path (interleaved)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warm + rounds):
        for name, call in calls.items():
            t0 = time.perf_counter_ns()
            call()
            sync()
            if r >= warm:
                samples[name].append((time.perf_counter_ns() - t0) / 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}


def interleaved(timer: Callable[..., float], sides: Mapping[str, Callable[[], Any]], rounds: int = 7,
                target_s: float = 0.005, rest_s: float = 0.01) -> dict[str, list[float]]:
    """GPU seconds per call of every side, one figure per round: each round times every side
    once with `timer` (a cgraph.bench.kernels.Timer: timer(fn, target_s=, reps=1, rest_s=)),
    starting one side later than the round before, so a drift of the GPU's clock falls on
    all sides alike and a ratio of two sides within a round compares like with like. Every
    side rests the same rest_s before it is timed (unless its own launches take longer to
    issue): under power-bound work the clock depends on how long the GPU idled first."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timer(sides[name], target_s=target_s, reps=1, rest_s=rest_s))
    return times
