"""Encoder budget graphs against eager execution on mixed-resolution images.

`python -m cgraph.bench.encoder [--n 256] [--reps 3]`

For each workload (output tokens per image spread log-uniformly), measured side by side
in one run on pre-unfolded images (unfolding is excluded from every method):
- graphs (powers of two): EncoderGraphManager with generate_budgets(min, max);
- graphs (suggested): the same number of graphs, budgets from suggest_budgets_for_workload;
- eager per image: the encoder run on one image at a time (no padding);
- eager packed batch: all images in one varlen forward (no padding, one launch sequence);
- eager padded batch: all images padded to the largest one, one forward (the classic
  static batch; timed only when it fits --padded-limit rows, its waste is always reported).
Padding waste = share of computed output tokens that are padding.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.budgets import (
    generate_budgets,
    padding_stats,
    plan_batches,
    suggest_budgets_for_workload,
)
from cgraph.encoder.workload import grid_tokens, make_images, mixed_grids

SPEC = dict(channels=3, patch=8, hidden=128, heads=2, layers=2, mlp=256, merger=256,
            out_dim=256, max_grid=128)

WORKLOADS = (
    # name, min tokens, max tokens per image, min budget, max budget, max batch
    ("mixed 16..4096", 16, 4096, 64, 4096, 32),
    ("small 16..256", 16, 256, 64, 2048, 32),
)


def _time(cp: Any, fn: Callable[[], Any], reps: int) -> float:
    """Median seconds per call, with a warm-up call first; the device is idle between calls."""
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _padded_batch_fn(cp: Any, model: Any, prepared: list[Any]) -> tuple[Callable[[], Any], int]:
    """One forward over all images each padded to the largest patch count."""
    longest = max(p.num_patches for p in prepared)
    n = len(prepared)
    patches = cp.zeros((n * longest, model.spec.patch_dim), model.dtype)
    positions = cp.zeros(n * longest, cp.int32)
    for i, p in enumerate(prepared):
        patches[i * longest : i * longest + p.num_patches] = p.patches
        positions[i * longest : i * longest + p.num_patches] = cp.asarray(p.positions)
    cu = cp.arange(0, n * longest + 1, longest, dtype=cp.int32)
    return (lambda: model.forward(patches, positions, cu, longest)), n * longest


def run(n: int, reps: int, padded_limit: int, seed: int) -> list[dict]:
    from cgraph.cuda.device import require_device
    from cgraph.encoder.manager import EncoderGraphManager
    from cgraph.encoder.model import EncoderSpec, VisionEncoder

    cp = require_device()
    spec = EncoderSpec(**SPEC)
    model = VisionEncoder(spec, seed=0)
    rows: list[dict] = []
    for name, lo, hi, min_budget, max_budget, max_batch in WORKLOADS:
        grids = mixed_grids(n, lo, hi, seed=seed, max_side=spec.max_grid // 2)
        tokens = grid_tokens(grids)
        prepared = [model.prepare(cp.asarray(im)) for im in make_images(grids, spec.channels, spec.patch, seed=seed)]
        pow2 = generate_budgets(min_budget, max_budget)
        suggested = suggest_budgets_for_workload(tokens, max_budget, max_batch, len(pow2))
        real = sum(tokens)

        def row(method: str, seconds: float | None, waste: float, graphs: int | str = "-", **extra: Any) -> dict:
            return {"workload": name, "method": method,
                    "ms_per_pass": None if seconds is None else seconds * 1e3,
                    "images_per_s": None if seconds is None else n / seconds,
                    "padding_waste": waste, "graphs": graphs, **extra}

        t_eager = _time(cp, lambda: [model.encode(p) for p in prepared], reps)
        t_packed = _time(cp, lambda: model.encode_batch(prepared), reps)
        found = []
        for label, budgets in (("graphs, powers of two", pow2), ("graphs, suggest_budgets", suggested)):
            with EncoderGraphManager(model, budgets, max_batch) as mgr:
                # correctness guard for the numbers below: graph outputs equal eager ones
                check = mgr.execute(prepared[:8])
                for p, o in zip(prepared[:8], check):
                    ref = model.encode(p)
                    err = float(cp.abs(o.astype(cp.float32) - ref.astype(cp.float32)).max())
                    if not err <= 5e-2:
                        raise RuntimeError(f"{label}: graph output differs from eager by {err}")
                mgr.reset_stats()
                t = _time(cp, lambda: mgr.execute(prepared), reps)
                s = mgr.stats
                plan_waste = padding_stats(plan_batches(tokens, budgets, max_batch)).waste
                assert abs(plan_waste - s.padding_waste) < 1e-9 or s.misses  # stats agree with the plan
                found.append(row(label, t, s.padding_waste, len(budgets),
                                 budgets=" ".join(map(str, budgets)), hit_rate=s.hit_rate,
                                 replays_per_pass=s.replays / (reps + 1)))
        longest_tokens = max(tokens)
        padded_waste = 1 - real / (n * longest_tokens)
        t_padded = None
        if n * longest_tokens * 4 <= padded_limit:
            fn, _ = _padded_batch_fn(cp, model, prepared)
            t_padded = _time(cp, fn, max(1, reps // 2))
        rows.append(row("eager, one image at a time", t_eager, 0.0))
        rows.append(row("eager, one packed varlen batch", t_packed, 0.0))
        rows.append(row("eager, one padded batch", t_padded, padded_waste))
        rows.extend(found)
        for r in rows[-5:]:
            r["speedup_vs_eager_per_image"] = None if r["ms_per_pass"] is None else t_eager * 1e3 / r["ms_per_pass"]
        print(f"[{name}] {n} images, {real} output tokens, {sum(4 * t for t in tokens)} patches", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--padded-limit", type=int, default=2_000_000,
                    help="time the padded batch only when it has at most this many patch rows")
    ap.add_argument("--seed", type=int, default=0)
    add_out_argument(ap)
    a = ap.parse_args(argv)
    rows = run(a.n, a.reps, a.padded_limit, a.seed)
    cols = ["workload", "method", "ms_per_pass", "images_per_s", "speedup_vs_eager_per_image",
            "padding_waste", "graphs", "hit_rate", "budgets"]
    write_results(
        "encoder", rows, columns=cols,
        title="Encoder budget graphs vs eager on mixed-resolution images",
        notes=[
            f"{a.n} images per workload, output tokens log-uniform in the range; model {SPEC}",
            "ms_per_pass: median of the reps, device synchronised; images pre-unfolded for every method",
            "eager padded batch: every image padded to the largest (left blank where over --padded-limit)",
            "graphs: greedy smallest-first packing, max batch 32; suggest_budgets uses as many graphs as powers of two",
            "target: graphs >= 2x eager one image at a time",
        ],
        extra={"args": vars(a)}, out_dir=a.out
    )


if __name__ == "__main__":
    main()
