"""Encoder budget graphs against eager execution: all images at once, and serving-shaped steps.

`python -m cgraph.bench.encoder [--n 256] [--reps 3] [--steps 200] [--big-steps 40] [--models bench,qwen2.5-vl]`

Methods, measured side by side in one run on pre-unfolded images (unfolding is excluded):
- eager, one image at a time: the encoder over each image alone (no padding);
- eager packed: all images of a pass / step in one varlen forward (no padding);
- graphs: EncoderGraphManager.execute (packing, staging, replays, output copies).
Workloads:
- "all N at once" (bench model): N images, tokens log-uniform in a range, encoded in one
  call (the earlier benchmark, with more budget ladders);
- "serving" (each model): a stream of steps, each encoding the 1..8 new images of that
  step (tokens log-uniform in 64..1024: 224x224 to 896x896 pixels at 14x14 patches and a
  2x2 merger); per-step latency p50 / p99 and images/s. Budgets are suggested from a
  calibration stream with another seed; "host patches" rows start from NumPy patches
  (pinned staging for the graphs, pageable upload for eager).
The breakdown table (encoder_breakdown.{json,md}) gives per step of each path where the
time goes: host staging, replay launch, replay GPU time, output handling; for eager, the
host time to issue the kernels against their GPU time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from cgraph.bench import _encoder_serving as S
from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.budgets import generate_budgets, plan_batches, suggest_budgets, suggest_budgets_for_workload
from cgraph.encoder.workload import grid_tokens, mixed_grids, serving_steps

ALL_AT_ONCE = (
    # name, min tokens, max tokens per image, ladders: (label, min budget, max budget, max batch)
    ("mixed 16..4096", 16, 4096, (("powers of two 64..4096", 64, 4096, 32),
                                  ("suggested, max 4096", None, 4096, 32),
                                  ("suggested, max 16384", None, 16384, 64),
                                  ("suggested, max 32768", None, 32768, 64))),
    ("small 16..256", 16, 256, (("powers of two 64..2048", 64, 2048, 32),
                                ("suggested, max 2048", None, 2048, 32),
                                ("suggested, max 8192", None, 8192, 64))),
)
SERVING = dict(min_images=1, max_images=8, min_tokens=64, max_tokens=1024)
SERVING_MAX_BUDGET, SERVING_GRAPHS = 8192, 24
HOST = ", host patches"


def _row(model: str, workload: str, method: str, times: list[float], images: int, **extra: Any) -> dict:
    total = sum(times)
    return {"model": model, "workload": workload, "method": method,
            "ms_p50": statistics.median(times) * 1e3, "ms_p99": S.percentile(times, 99) * 1e3,
            "images_per_s": images / total if total else None, **extra}


def _speedups(rows: list[dict]) -> None:
    """vs_packed_p50 / p99: eager packed's latency over each row's (same model, workload,
    input side: a "host patches" row against eager packed from host patches);
    speedup_vs_eager_per_image: eager one image at a time (p50) over the row's p50, which
    is also ms_per_pass (the columns of the earlier results, read by notebook 05)."""
    key = lambda r: (r["model"], r["workload"], r["method"].endswith(HOST))  # noqa: E731
    packed = {key(r): r for r in rows if r["method"].startswith("eager packed")}
    single = {(r["model"], r["workload"]): r for r in rows if r["method"] == "eager, one image at a time"}
    for r in rows:
        ref = packed.get(key(r))
        if ref:
            r["vs_packed_p50"] = ref["ms_p50"] / r["ms_p50"]
            r["vs_packed_p99"] = ref["ms_p99"] / r["ms_p99"]
        r["ms_per_pass"] = r["ms_p50"]
        one = single.get((r["model"], r["workload"]))
        if one:
            r["speedup_vs_eager_per_image"] = one["ms_p50"] / r["ms_p50"]


def all_at_once(cp: Any, model: Any, n: int, reps: int, seed: int, rows: list, parts: list) -> None:
    """The "all N at once" workloads (ALL_AT_ONCE) on `model`: appends one row per method
    and ladder to `rows` and one breakdown per method to `parts`; raises when a ladder's
    graph outputs differ from eager (every budget is at most MAX_CAPTURE_SIZE)."""
    from cgraph.encoder.manager import EncoderGraphManager

    for name, lo, hi, ladders in ALL_AT_ONCE:
        t0 = time.perf_counter()
        work = f"all {n} at once, {name}"
        grids = mixed_grids(n, lo, hi, seed=seed, max_side=model.spec.max_grid // 2)
        tokens = grid_tokens(grids)
        items = S.device_items(cp, model, grids, seed)
        one = [[it] for it in items]
        passes = [items] * reps
        t = S.time_steps(cp, {"eager, one image at a time": lambda p: [model.encode_batch(s) for s in one],
                              "eager packed": model.encode_batch}, passes, warm=1)
        for method, ts in t.items():
            rows.append(_row("bench", work, method, ts, n, padding_waste=0.0))
        parts.append({"model": "bench", "workload": work, "method": "eager packed",
                      **S.eager_breakdown(cp, model.encode_batch, passes)})
        for label, lo_b, hi_b, max_batch in ladders:
            budgets = (generate_budgets(lo_b, hi_b) if lo_b else
                       suggest_budgets_for_workload(tokens, hi_b, max_batch, 7))
            max_batch = min(max_batch, budgets[0])  # a batch's metadata is sized by the smallest
            with EncoderGraphManager(model, budgets, max_batch) as mgr:
                S.check_outputs(cp, model, items[:8], mgr.execute(items[:8]), label)
                mgr.reset_stats()
                ts = S.time_steps(cp, {"g": mgr.execute}, passes, warm=1)["g"]
                st = mgr.stats
                method = f"graphs, {label}"
                rows.append(_row("bench", work, method, ts, n, padding_waste=st.padding_waste,
                                 graphs=len(budgets), replays=st.replays / (reps + 1),
                                 budgets=" ".join(map(str, budgets))))
                parts.append({"model": "bench", "workload": work, "method": method,
                              **S.graph_breakdown(cp, mgr, passes[:1])})
        print(f"[{work}] {sum(tokens)} output tokens; {time.perf_counter() - t0:.1f} s", flush=True)


def serving(cp: Any, model: Any, label: str, num_steps: int, seed: int, rows: list, parts: list) -> None:
    """`num_steps` serving steps (SERVING) on `model`, named `label`: eager one at a time,
    eager packed and graphs from device patches, then eager packed and graphs from host
    patches; appends their rows to `rows` and the phase breakdowns to `parts`."""
    from cgraph.encoder.manager import EncoderGraphManager

    t0 = time.perf_counter()
    side = model.spec.max_grid // model.spec.merge
    steps_grids = serving_steps(num_steps, seed=seed, max_side=side, **SERVING)
    calib = serving_steps(400, seed=seed + 1, max_side=side, **SERVING)
    totals = [sum(grid_tokens(g)) for g in calib]
    budgets = suggest_budgets(totals, SERVING_GRAPHS, max_budget=SERVING_MAX_BUDGET)
    max_batch = SERVING["max_images"]
    flat = S.device_items(cp, model, [g for step in steps_grids for g in step], seed)
    steps, k = [], 0
    for g in steps_grids:
        steps.append(flat[k : k + len(g)])
        k += len(g)
    host_steps = [S.host_items(s) for s in steps]
    images = len(flat)
    work = f"serving {num_steps} steps, 1..8 images of 64..1024 tokens"
    with EncoderGraphManager(model, budgets, max_batch) as mgr:
        t_cap = time.perf_counter() - t0
        S.check_outputs(cp, model, steps[0] + host_steps[1], mgr.execute(steps[0] + host_steps[1]), label)
        mgr.reset_stats()
        methods = {
            "eager, one image at a time": lambda s: [model.encode_batch([it]) for it in s],
            "eager packed": model.encode_batch,
            "graphs": mgr.execute,
        }
        t = S.time_steps(cp, methods, steps)
        st = mgr.stats
        waste = st.padding_waste
        th = S.time_steps(cp, {"eager packed": model.encode_batch, "graphs": mgr.execute}, host_steps)
        for method, ts in t.items():
            extra = dict(padding_waste=waste, graphs=len(budgets), budgets=" ".join(map(str, budgets))) \
                if method == "graphs" else dict(padding_waste=0.0)
            rows.append(_row(label, work, method, ts, images, **extra))
        rows.append(_row(label, work, "eager packed" + HOST, th["eager packed"], images, padding_waste=0.0))
        rows.append(_row(label, work, "graphs" + HOST, th["graphs"], images, padding_waste=waste,
                         graphs=len(budgets), budgets=" ".join(map(str, budgets))))
        sample = steps[: min(len(steps), 20)]
        parts.append({"model": label, "workload": work, "method": "eager packed",
                      **S.eager_breakdown(cp, model.encode_batch, sample)})
        parts.append({"model": label, "workload": work, "method": "graphs", **S.graph_breakdown(cp, mgr, sample)})
        parts.append({"model": label, "workload": work, "method": "graphs" + HOST,
                      **S.graph_breakdown(cp, mgr, host_steps[: len(sample)])})
    print(f"[{label} {work}] {images} images, {sum(it.tokens for it in flat)} tokens, budgets {budgets}; "
          f"setup+capture {t_cap:.1f} s, total {time.perf_counter() - t0:.1f} s", flush=True)


def run(a: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Every workload of the parsed arguments, model by model: (result rows, breakdown rows)."""
    from cgraph.cuda.device import require_device
    from cgraph.encoder.model import PRESETS, VisionEncoder

    cp = require_device()
    rows: list[dict] = []
    parts: list[dict] = []
    for label in a.models.split(","):
        t0 = time.perf_counter()
        model = VisionEncoder(PRESETS[label], seed=0)
        print(f"[{label}] model built in {time.perf_counter() - t0:.1f} s", flush=True)
        if label == "bench" and a.n:
            all_at_once(cp, model, a.n, a.reps, a.seed, rows, parts)
        serving(cp, model, label, a.steps if label == "bench" else a.big_steps, a.seed, rows, parts)
        del model
        cp.get_default_memory_pool().free_all_blocks()
    _speedups(rows)
    return rows, parts


def main(argv: list[str] | None = None) -> None:
    """Parse `argv`, run the benchmark and write encoder.{json,md} and encoder_breakdown.{json,md}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images of the all-at-once workloads (0: skip them)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="serving steps, bench model")
    ap.add_argument("--big-steps", type=int, default=40, help="serving steps, qwen2.5-vl model")
    ap.add_argument("--models", default="bench,qwen2.5-vl")
    ap.add_argument("--seed", type=int, default=0)
    add_out_argument(ap)
    a = ap.parse_args(argv)
    rows, parts = run(a)
    from cgraph.encoder.model import PRESETS

    cols = ["model", "workload", "method", "ms_p50", "ms_p99", "images_per_s", "vs_packed_p50",
            "vs_packed_p99", "speedup_vs_eager_per_image", "padding_waste", "graphs", "replays", "budgets"]
    notes = [
        "ms_p50 / ms_p99: latency per call (one pass of all images, or one serving step), device synchronised",
        "vs_packed: eager packed latency / this row's (> 1: faster than one packed eager forward)",
        "images pre-unfolded on the device for every method, except the 'host patches' rows "
        "(NumPy patches: pinned staging for the graphs, pageable upload for eager; compared with each other)",
        "ms_per_pass = ms_p50; speedup_vs_eager_per_image: eager one image at a time p50 / this row's",
        f"serving: {SERVING}; budgets suggested (at most {SERVING_GRAPHS}, max {SERVING_MAX_BUDGET}) "
        "from 400 calibration steps of another seed",
        f"models: {', '.join(f'{k} {v}' for k, v in PRESETS.items() if k in a.models.split(','))}",
        "targets: serving qwen2.5-vl graphs >= 2x eager packed (p50, p99); all at once >= 1x eager packed",
    ]
    write_results("encoder", rows, columns=cols, title="Encoder budget graphs vs eager (one image at a time, packed)",
                  notes=notes, extra={"args": {k: str(v) for k, v in vars(a).items()}, "breakdown": parts},
                  out_dir=a.out)
    pcols = ["model", "workload", "method", "host_issue_ms", "gpu_ms", "prepare_ms", "plan_ms", "stage_ms",
             "stage_wait_ms", "replay_ms", "replay_gpu_ms", "outputs_ms", "eager_ms", "host_total_ms", "replays_per_step"]
    write_results("encoder_breakdown", parts, columns=pcols, title="Encoder: where the time of a call goes (ms per call)",
                  notes=["eager: host_issue = host time until the forward returns, gpu = events around it",
                         "graphs: host ms per phase (prepare: item checks; stage: pinned writes + copies, "
                         "stage_wait: waiting for a pinned slot the GPU has not read yet; "
                         "replay: launch calls; outputs: one copy per batch + views), replay_gpu from events",
                         "a call is one pass of all images (all at once) or one serving step"],
                  out_dir=a.out)


if __name__ == "__main__":
    main()
