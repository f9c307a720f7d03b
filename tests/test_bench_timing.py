"""cgraph.bench.timing.interleaved on the CPU, with a fake timer: every side timed once per
round, the order rotated, and a clock drift cancelling out of same-round ratios."""

from __future__ import annotations

import numpy as np

from cgraph.bench.timing import interleaved


class DriftingTimer:
    """Returns a side's true cost times a clock factor that grows with every timing."""

    def __init__(self, cost: dict, drift: float):
        self.cost, self.drift, self.calls = cost, drift, []

    def __call__(self, fn, target_s: float, reps: int, rest_s: float = 1e-3) -> float:
        assert reps == 1 and target_s > 0 and rest_s > 0
        name = fn()
        self.calls.append(name)
        return self.cost[name] * (1.0 + self.drift * len(self.calls))


def test_every_side_once_per_round_with_a_rotated_order():
    rng = np.random.default_rng()
    names = [f"side{i}" for i in range(int(rng.integers(2, 6)))]
    rounds = int(rng.integers(3, 9))
    timer = DriftingTimer({n: 1.0 for n in names}, 0.0)
    times = interleaved(timer, {n: (lambda n=n: n) for n in names}, rounds=rounds)
    assert list(times) == names and all(len(v) == rounds for v in times.values())
    for r in range(rounds):
        got = timer.calls[r * len(names):(r + 1) * len(names)]
        assert sorted(got) == sorted(names)
        assert got[0] == names[r % len(names)]


def test_same_round_ratios_cancel_a_drift_that_biases_sequential_timing():
    rng = np.random.default_rng()
    cost = {"cublas": float(rng.uniform(1, 2)), "graph": float(rng.uniform(1, 2))}
    want = cost["graph"] / cost["cublas"]
    timer = DriftingTimer(cost, drift=0.02)
    times = interleaved(timer, {n: (lambda n=n: n) for n in cost}, rounds=7)
    ratios = sorted(g / c for g, c in zip(times["graph"], times["cublas"]))
    assert abs(ratios[3] / want - 1) < 0.03  # the median is off by at most one step of drift
    sequential = DriftingTimer(cost, drift=0.02)
    first = [sequential(lambda: "cublas", 1e-3, 1) for _ in range(7)]
    second = [sequential(lambda: "graph", 1e-3, 1) for _ in range(7)]
    assert abs(np.median(second) / np.median(first) / want - 1) > 0.1  # what interleaving removes
