"""Benchmark: cgraph.core.dispatch against a plain implementation of the same rules.

`python -m cgraph.bench.dispatch` times both on the same random batches in one run, over
the default table (51 capture sizes, max_num_seqs=256), without LoRA and with
max_loras=4, and writes notebooks/results/dispatch.{json,md}. Both answers are checked
equal on every input first. Per-call times include the Python loop that makes the
calls (the same loop for both), so the ratio understates the gap slightly.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from cgraph.bench._plain_dispatch import PlainDispatcher
from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.config import GraphConfig
from cgraph.core.dispatch import build_dispatch_table, dispatch
from cgraph.core.modes import GraphMode


def random_batches(cfg: GraphConfig, count: int, rng: random.Random) -> list[tuple]:
    """(num_tokens, uniform_decode, has_lora, disable_full, num_active_loras) tuples.

    Sizes are uniform over 1..max_capture_size + 25% (so some run eagerly); half the
    batches are uniform decode; with LoRA, 3/4 of batches carry 1..max_loras adapters;
    1 in 10 disables FULL.
    """
    top = cfg.max_capture_size + cfg.max_capture_size // 4
    out = []
    for _ in range(count):
        has_lora = cfg.max_loras > 0 and rng.random() < 0.75
        loras = rng.randint(1, cfg.max_loras) if has_lora else 0
        out.append((rng.randint(1, top), rng.random() < 0.5, has_lora, rng.random() < 0.1, loras))
    return out


def _time_per_call(call, batches, repeats: int) -> list[float]:
    # One sample: ns per call averaged over the whole batch list.
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for args in batches:
            call(*args)
        samples.append((time.perf_counter_ns() - start) / len(batches))
    return samples


def measure(mode: GraphMode, max_loras: int, count: int, repeats: int, seed: int) -> dict:
    cfg = GraphConfig(mode, max_num_seqs=256, max_loras=max_loras)
    table = build_dispatch_table(cfg)
    plain = PlainDispatcher(cfg)
    batches = random_batches(cfg, count, random.Random(seed))
    for args in batches:  # same answers (also builds every row the timing will use)
        assert dispatch(table, *args) == plain.dispatch(*args), args

    def fast(n, u, h, d, k):
        return dispatch(table, n, u, h, d, k)

    fast_ns = _time_per_call(fast, batches, repeats)
    plain_ns = _time_per_call(plain.dispatch, batches, repeats)
    cache = table.cache_info()
    fast_med, plain_med = statistics.median(fast_ns), statistics.median(plain_ns)
    return {
        "mode": mode.name,
        "max_loras": max_loras,
        "capture_sizes": len(cfg.capture_sizes),
        "keys": len(table.full_keys) + len(table.piecewise_keys),
        "cgraph_ns": round(fast_med, 1),
        "plain_ns": round(plain_med, 1),
        "speedup": round(plain_med / fast_med, 2),
        "rows": cache["rows"],
        "row_kib": round(cache["bytes"] / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="random batches per run")
    parser.add_argument("--repeats", type=int, default=15, help="timed passes (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    rows = [
        measure(mode, loras, args.calls, args.repeats, args.seed)
        for mode in (GraphMode.FULL_AND_PIECEWISE, GraphMode.PIECEWISE, GraphMode.FULL)
        for loras in (0, 4)
    ]
    write_results(
        "dispatch",
        rows,
        title="Dispatch: median ns per call, cgraph vs plain reference",
        notes=[
            f"{args.calls} random batches x {args.repeats} passes; median of the passes; "
            f"Python {sys.version.split()[0]}.",
            "Batches: num_tokens uniform in 1..640 (some above the 512 maximum), half uniform "
            "decode, 10% disable_full, with LoRA 75% carry 1..4 adapters.",
            "plain: key sets, linear-scan padding, descriptors built per call; cgraph: "
            "precomputed rows (row_kib: memory of the row tuples; the answers they hold are shared).",
        ],
        extra={"calls": args.calls, "repeats": args.repeats, "seed": args.seed}, out_dir=args.out
    )


if __name__ == "__main__":
    main()
