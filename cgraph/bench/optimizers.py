"""Benchmark: the bucketing optimiser and the worst config/table build inside the limits.

`python -m cgraph.bench.optimizers` (CPU only) times, median of --runs runs:

- suggest_capture_sizes on 8192 distinct batch sizes with 51 graphs, and suggest_budgets
  on 2000 distinct token counts with 32 graphs (moderate counts, the int64 path), side by
  side with the previous implementations (the "baseline" rows: the pre-merge code of
  cgraph/core/buckets.py and cgraph/core/budgets.py, copied below; --baseline-runs of
  them, 1 by default since each takes many seconds); every pair is checked to reach the
  same padding;
- the same decoder case with counts up to 10**30 (the exact Python-int path; the baseline
  overflows int64 there, so it has no row);
- GraphConfig, build_dispatch_table and the first dispatch of a new flag combination
  (which builds a dispatch row) for the largest configs GraphConfig accepts: every size up
  to MAX_CAPTURE_SIZE, and MAX_KEYS_PER_MODE keys spread over MAX_LORAS adapter counts.

Results go to --out as optimizers.{json,md}.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.buckets import bucket_usage, suggest_capture_sizes
from cgraph.core.budgets import suggest_budgets
from cgraph.core.config import MAX_CAPTURE_SIZE, MAX_KEYS_PER_MODE, MAX_LORAS, GraphConfig
from cgraph.core.dispatch import build_dispatch_table, dispatch


# ----------------------------------------------------------------------------- baseline
# BASELINE, not library code: the optimisers as they were before the bucketing core was
# merged (git history of cgraph/core/buckets.py and cgraph/core/budgets.py), their
# argument checks left out. Kept only to measure the before/after ratio.

def baseline_suggest_capture_sizes(hist: dict[int, int], max_graphs: int) -> tuple[int, ...]:
    """The old vectorised O(k m^2) DP in int64 blocks of 512 rows (overflows on huge counts)."""
    block = 512
    sizes = np.asarray(sorted(hist), dtype=np.int64)
    weights = np.asarray([hist[s] for s in sizes.tolist()], dtype=np.int64)
    m = len(sizes)
    k_max = min(max_graphs, m)
    big = np.iinfo(np.int64).max // 4
    prefix = np.cumsum(weights)
    cost = sizes * prefix
    parents = []
    for _ in range(1, k_max):
        new = np.full(m, big, dtype=np.int64)
        parent = np.full(m, -1, dtype=np.int64)
        for lo in range(1, m, block):
            hi = min(m, lo + block)
            rows = np.arange(lo, hi)
            cand = cost[None, :hi] + sizes[rows, None] * (prefix[rows, None] - prefix[None, :hi])
            cand = np.where(np.arange(hi)[None, :] < rows[:, None], cand, big)
            cand = np.where(cost[None, :hi] >= big, big, cand)
            best = np.argmin(cand, axis=1)
            new[lo:hi] = cand[np.arange(hi - lo), best]
            parent[lo:hi] = best
        cost = new
        parents.append(parent)
    chosen = [m - 1]
    for parent in reversed(parents):
        chosen.append(int(parent[chosen[-1]]))
    return tuple(int(sizes[i]) for i in reversed(chosen))


def baseline_suggest_budgets(hist: dict[int, int], max_graphs: int) -> tuple[int, ...]:
    """The old pure-Python O(k m^2) DP (max_budget None: the largest count is kept)."""
    sizes = sorted(hist)
    counts = [hist[s] for s in sizes]
    m = len(sizes)
    pc, pt = [0] * (m + 1), [0] * (m + 1)
    for i, (s, c) in enumerate(zip(sizes, counts)):
        pc[i + 1] = pc[i] + c
        pt[i + 1] = pt[i] + c * s

    def cost(i: int, j: int) -> int:
        return sizes[j] * (pc[j + 1] - pc[i]) - (pt[j + 1] - pt[i])

    k_max = min(max_graphs, m)
    inf = float("inf")
    best = [[inf] * m for _ in range(k_max + 1)]
    back = [[-1] * m for _ in range(k_max + 1)]
    for j in range(m):
        best[1][j] = cost(0, j)
    for k in range(2, k_max + 1):
        for j in range(k - 1, m):
            for i in range(k - 2, j):
                v = best[k - 1][i] + cost(i + 1, j)
                if v < best[k][j]:
                    best[k][j], back[k][j] = v, i
    k_best = min(range(1, k_max + 1), key=lambda k: (best[k][m - 1], k))
    chosen, j, k = [], m - 1, k_best
    while k >= 1 and j >= 0:
        chosen.append(sizes[j])
        j, k = back[k][j], k - 1
    return tuple(sorted(chosen))


# ----------------------------------------------------------------------------- timing
def _median_s(call: Callable[[], Any], runs: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def _histogram(rng: random.Random, distinct: int, top: int, max_count: int) -> dict[int, int]:
    return {n: rng.randint(1, max_count) for n in rng.sample(range(1, top + 1), distinct)}


def optimiser_rows(runs: int, baseline_runs: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    cases = [
        ("suggest_capture_sizes", _histogram(rng, 8192, 8 * 8192, 1000), 51,
         suggest_capture_sizes, baseline_suggest_capture_sizes),
        ("suggest_budgets", _histogram(rng, 2000, 16384, 1000), 32,
         suggest_budgets, baseline_suggest_budgets),
        ("suggest_capture_sizes, counts <= 10**30", _histogram(rng, 8192, 8 * 8192, 10**30), 51,
         suggest_capture_sizes, None),
    ]
    rows = []
    for label, hist, graphs, new, old in cases:
        new_s, ladder = _median_s(lambda: new(hist, graphs), runs)
        padding = bucket_usage(ladder, hist).padding_tokens
        row = {"step": label, "sizes": len(hist), "graphs": graphs, "runs": runs,
               "median_s": round(new_s, 4), "baseline_s": "", "speedup": "", "same_padding": ""}
        if old is not None and baseline_runs > 0:
            old_s, old_ladder = _median_s(lambda: old(hist, graphs), baseline_runs)
            row.update(baseline_s=round(old_s, 3), speedup=round(old_s / new_s, 1),
                       same_padding=bucket_usage(old_ladder, hist).padding_tokens == padding)
        rows.append(row)
    return rows


def _build_steps(label: str, make: Callable[[], GraphConfig], flags: list[tuple], runs: int) -> list[dict]:
    # Each step timed on fresh objects: a config, its table, then rows built by dispatch.
    times: dict[str, list[float]] = {}
    keys = 0
    for _ in range(runs):
        start = time.perf_counter()
        cfg = make()
        built = time.perf_counter()
        table = build_dispatch_table(cfg)
        times.setdefault("GraphConfig", []).append(built - start)
        times.setdefault("build_dispatch_table", []).append(time.perf_counter() - built)
        keys = len(table.full_keys) + len(table.piecewise_keys)
        for args in flags:
            start = time.perf_counter()
            dispatch(table, *args)  # first call of this flag combination: builds its row
            times.setdefault(f"first dispatch{args}", []).append(time.perf_counter() - start)
    return [{"step": f"{label}: {name}", "sizes": len(cfg.capture_sizes), "graphs": keys,
             "runs": runs, "median_s": round(statistics.median(t), 4), "baseline_s": "",
             "speedup": "", "same_padding": ""} for name, t in times.items()]


def limit_rows(runs: int) -> list[dict]:
    every_size = lambda: GraphConfig(  # noqa: E731 - one expression per case
        "full_and_piecewise", capture_sizes=range(1, MAX_CAPTURE_SIZE + 1),
        max_num_seqs=MAX_CAPTURE_SIZE, max_num_batched_tokens=MAX_CAPTURE_SIZE)
    per_size = MAX_KEYS_PER_MODE // (MAX_LORAS + 1)
    every_lora = lambda: GraphConfig(  # noqa: E731
        "full_and_piecewise", capture_sizes=range(1, per_size + 1), max_num_seqs=per_size,
        max_loras=MAX_LORAS)
    top_only = lambda: GraphConfig(  # noqa: E731
        "full_and_piecewise", capture_sizes=[MAX_CAPTURE_SIZE], max_num_seqs=MAX_CAPTURE_SIZE,
        max_num_batched_tokens=MAX_CAPTURE_SIZE, max_loras=MAX_LORAS)
    return (_build_steps(f"{MAX_CAPTURE_SIZE} sizes", every_size,
                         [(5, True, False, False, 0), (5, False, False, False, 0)], runs)
            + _build_steps(f"{per_size} sizes x {MAX_LORAS} LoRA", every_lora,
                           [(5, True, True, False, MAX_LORAS), (5, False, True, False, 1)], runs)
            + _build_steps(f"size {MAX_CAPTURE_SIZE} x {MAX_LORAS} LoRA", top_only,
                           [(5, True, True, False, MAX_LORAS)], runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per step (median reported)")
    parser.add_argument("--baseline-runs", type=int, default=1,
                        help="runs of each baseline (0 skips them; each takes many seconds)")
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.baseline_runs < 0:
        parser.error("--runs must be >= 1 and --baseline-runs >= 0")
    rows = optimiser_rows(args.runs, args.baseline_runs, args.seed) + limit_rows(args.runs)
    write_results(
        "optimizers",
        rows,
        title="Bucketing optimiser and worst-case config/table builds: median seconds",
        notes=[
            f"Median of {args.runs} runs (baseline: {args.baseline_runs}); one CPU core, "
            f"Python {sys.version.split()[0]}, NumPy {np.__version__}; seed {args.seed}.",
            "Histograms: distinct sizes drawn uniformly (decoder from 1..65536, encoder from "
            "1..16384), counts uniform in 1..1000 (last optimiser row: 1..10**30).",
            "baseline: the pre-merge optimisers (O(k m^2): int64 NumPy blocks for the decoder, "
            "pure Python for the encoder), copied into this file; same_padding: both reach "
            "the same padded tokens.",
            f"Limits: MAX_CAPTURE_SIZE={MAX_CAPTURE_SIZE}, MAX_LORAS={MAX_LORAS}, "
            f"MAX_KEYS_PER_MODE={MAX_KEYS_PER_MODE}; graphs = keys of the dispatch table.",
        ],
        extra={"runs": args.runs, "baseline_runs": args.baseline_runs, "seed": args.seed},
        out_dir=args.out,
    )


if __name__ == "__main__":
    main()
