"""Encoder data parallel on several GPUs: `python -m cgraph.bench.encoder_dp --check|--bench`.

--check: every rank encodes the same images data-parallel; rank 0 returns its outputs and
this process compares them with one GPU's budget-graph outputs.
--bench: throughput of WORLD GPUs against one (rank 0 alone first, the others waiting).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cgraph.bench.report import add_out_argument, write_results
from cgraph.cuda.device import require_device
from cgraph.cuda.ranks import launch

BENCH_SPEC = dict(channels=3, patch=8, hidden=128, heads=2, layers=2, mlp=256, merger=256,
                  out_dim=256, max_grid=128)


def build(args: dict) -> tuple[Any, list[Any], Any]:
    """The model (seed 7: identical weights on every rank), its images and a budget manager."""
    cp = require_device()
    from cgraph.core.budgets import generate_budgets
    from cgraph.encoder.manager import EncoderGraphManager
    from cgraph.encoder.model import EncoderSpec, VisionEncoder
    from cgraph.encoder.workload import make_images, mixed_grids

    spec = EncoderSpec(**BENCH_SPEC)
    model = VisionEncoder(spec, seed=7)
    grids = mixed_grids(args["n"], 16, args["max_tokens"], seed=args["seed"], max_side=spec.max_grid // 2)
    images = [model.prepare(cp.asarray(h)) for h in make_images(grids, spec.channels, spec.patch,
                                                                 seed=args["seed"])]
    manager = EncoderGraphManager(model, generate_budgets(args["min_budget"], args["max_tokens"]),
                                  args["max_batch"])
    return model, images, manager


def worker(comm: Any, rank: int, world: int, args: dict) -> dict:
    """One rank of the check or the benchmark (module level: spawn pickles it by name)."""
    cp = require_device()
    from cgraph.encoder.data_parallel import DataParallelEncoder

    model, images, manager = build(args)
    dp = DataParallelEncoder(model, manager.execute, comm, rank, world)
    try:
        if args["mode"] == "check":
            outs = dp.execute(images)
            cp.cuda.Device().synchronize()
            return {"outputs": [cp.asnumpy(o) for o in outs] if rank == 0 else None,
                    "local_items": len(dp.plan(images).local_items(rank))}
        reps = args["reps"]
        dp.barrier()
        single_s = None
        if rank == 0:  # single-GPU throughput first, the other ranks wait at the barrier
            manager.execute(images)
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                manager.execute(images)
            cp.cuda.Device().synchronize()
            single_s = (time.perf_counter() - t0) / reps
        dp.barrier()
        dp.execute(images)
        dp.barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            dp.execute(images)
        cp.cuda.Device().synchronize()
        dp.barrier()
        plan = dp.plan(images)
        return {"single_s": single_s, "dp_s": (time.perf_counter() - t0) / reps,
                "rank_tokens": list(plan.rank_tokens), "n": len(images),
                "tokens": int(np.sum([im.tokens for im in images]))}
    finally:
        manager.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="DP outputs equal single-GPU outputs")
    g.add_argument("--bench", action="store_true", help="throughput of WORLD GPUs against one")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--n", type=int, default=None, help="images (check: 48, bench: 256)")
    ap.add_argument("--max-tokens", type=int, default=None, help="largest image/budget (check 1024, bench 4096)")
    ap.add_argument("--min-budget", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    add_out_argument(ap)
    a = ap.parse_args(argv)
    cp = require_device()
    visible = cp.cuda.runtime.getDeviceCount()
    if visible < a.world:
        print(f"FAIL: --world {a.world} needs {a.world} GPUs, {visible} visible")
        return 2
    mode = "check" if a.check else "bench"
    args = dict(mode=mode, n=a.n or (48 if a.check else 256),
                max_tokens=a.max_tokens or (1024 if a.check else 4096), min_budget=a.min_budget,
                max_batch=a.max_batch, reps=a.reps, seed=a.seed)
    results = launch(worker, a.world, args)
    errors = [r for r in results if "error" in r]
    if errors or len(results) < a.world:
        for r in errors:
            print(f"rank {r['rank']} failed: {r['error']}\n{r['traceback']}", file=sys.stderr)
        print(f"FAIL: {len(results) - len(errors)}/{a.world} ranks finished")
        return 1
    if a.check:
        _, images, manager = build(args)
        single = [cp.asnumpy(o) for o in manager.execute(images)]
        manager.close()
        dp = results[0]["outputs"]
        worst = max(float(np.abs(x.astype(np.float32) - y.astype(np.float32)).max())
                    for x, y in zip(dp, single))
        ok = len(dp) == len(single) and all(x.shape == y.shape for x, y in zip(dp, single)) and worst <= 2e-2
        print(f"{'PASS' if ok else 'FAIL'}: data-parallel encoder on {a.world} GPUs, {args['n']} images, "
              f"max |dp - single| = {worst:.3g}, rank 0 encoded {results[0]['local_items']} images")
        return 0 if ok else 1
    single = results[0]["single_s"]
    dp = max(r["dp_s"] for r in results)
    n, tokens = results[0]["n"], results[0]["tokens"]
    rows = [
        {"setup": "1 GPU, budget graphs", "ms_per_pass": single * 1e3, "images_per_s": n / single,
         "speedup": 1.0},
        {"setup": f"{a.world} GPUs, DP + graphs + all-gather", "ms_per_pass": dp * 1e3,
         "images_per_s": n / dp, "speedup": single / dp},
    ]
    write_results("encoder_dp", rows, title=f"Encoder data parallel: {a.world} GPUs vs 1", out_dir=a.out,
                  notes=[f"{n} images, {tokens} output tokens per pass, max {args['max_tokens']} tokens/image",
                         f"per-rank tokens: {results[0]['rank_tokens']}",
                         "target: >= 1.8x throughput on 2 GPUs"])
    print(f"{'PASS' if single / dp >= 1.8 else 'BELOW TARGET'}: {a.world} GPUs {single / dp:.2f}x the "
          f"throughput of 1 GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
