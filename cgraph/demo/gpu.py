"""The GPU half of `python -m cgraph.demo`: serve a synthetic workload in every mode.

1. build the small default model (random weights, fixed seed) and the workload;
2. run it eagerly (NONE): those tokens are the reference;
3. for every other mode: estimate the graph memory, capture its graphs (progress bar),
   run the same workload with the overlapped loop, and check that every request
   generated exactly the eager tokens; FULL also runs with the synchronous loop and with
   lazy capture (graphs captured on first use), for comparison;
4. print one row per run: tokens/s, decode step time p50 (host, GPU, idle gap, step), mixed
   step p50, graph hit rate, padding waste, captures / eager fallbacks, capture seconds,
   graph pool MiB against its estimate (memory the graphs allocated: near 0, as every
   temporary lives in the engine's static buffers, whose size is listed beside it).
   Any mismatch exits non-zero.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from cgraph.core.errors import ArgumentError
from cgraph.core.modes import GraphMode
from cgraph.cuda.device import device_name
from cgraph.engine.workload import demo_max_seq_len, serving_config, synthetic_requests
from cgraph.models.config import demo_config

ALL_MODES = ("none", "full", "piecewise", "full_decode_only", "full_and_piecewise")


def _modes(value: Any) -> list[str]:
    if value is None:
        return list(ALL_MODES)
    items = value.split(",") if isinstance(value, str) else list(value)
    modes = [GraphMode.parse(m.strip() if isinstance(m, str) else m).value for m in items if m]
    return ["none"] + [m for m in dict.fromkeys(modes) if m != "none"]


def _runs(modes: list[str]) -> list[tuple[str, str, bool, bool]]:
    """(label, mode, overlapped loop, lazy capture) of every run, the eager reference first."""
    runs = []
    for mode in modes:
        runs.append((mode, mode, True, False))
        if mode == "full":
            runs += [("full (synchronous loop)", mode, False, False), ("full (lazy capture)", mode, True, True)]
    return runs


def run_gpu_demo(args: Any) -> int:
    """Run the demo from parsed flags (see cgraph.demo); returns 0, or exits 1 on a mismatch."""
    from cgraph.bench.report import markdown_table  # noqa: PLC0415 - the demo is a tool too
    from cgraph.cuda.runner import LazyCapture  # noqa: PLC0415 - GPU layer
    from cgraph.engine.engine import Engine  # noqa: PLC0415
    from cgraph.models.llama import LlamaModel  # noqa: PLC0415

    get = lambda name, default: getattr(args, name, default) if getattr(args, name, None) is not None else default  # noqa: E731
    n_req, max_prompt, new_tokens = get("requests", 64), get("max_prompt", 512), get("new_tokens", 64)
    seqs, budget = get("max_num_seqs", 32), get("max_num_batched_tokens", 1024)
    seed, repeats = get("seed", 0), get("repeats", 5)
    if repeats < 1:
        raise ArgumentError(f"--repeats {repeats}: expected at least 1 timed run")
    if max_prompt > budget:
        raise ArgumentError(f"--max-prompt {max_prompt} exceeds --max-num-batched-tokens {budget}: a "
                            "prompt is prefilled in one step; raise the budget or shorten prompts")
    max_seq = demo_max_seq_len(max_prompt, new_tokens)
    cfg = demo_config(get("layers", 4), get("hidden", 512), max_seq_len=max_seq)
    print(f"device: {device_name()}")
    print(f"model: {cfg}")
    print(f"workload: {n_req} requests, prompts 1..{max_prompt}, {new_tokens} new tokens each; "
          f"max_num_seqs={seqs}, max_num_batched_tokens={budget}", flush=True)
    t0 = time.perf_counter()
    model = LlamaModel(cfg, seed=seed)
    print(f"weights: {model.weight_bytes / 2**20:.1f} MiB on device ({time.perf_counter() - t0:.1f} s)",
          flush=True)
    requests = synthetic_requests(n_req, max_prompt=max_prompt, new_tokens=new_tokens,
                                  vocab_size=cfg.vocab_size, seed=seed)
    rows, reference, failed = [], None, []
    for label, mode, overlap, lazy in _runs(_modes(get("modes", None))):
        gcfg = serving_config(mode, max_num_seqs=seqs, max_num_batched_tokens=budget)
        with Engine(model, gcfg, overlap=overlap, lazy=LazyCapture() if lazy else None) as engine:
            estimate = engine.estimate_graph_memory() if mode != "none" else 0
            if mode != "none" and not lazy:
                engine.capture(progress=True)
            engine.generate(requests[:2])  # warm-up: kernels loaded, NONE paths exercised
            # a 64 x 64-token workload runs in tens of ms: one run is at the mercy of the host
            # (GC, page faults), so time several and report the median one; each must be exact
            results = [engine.generate(requests) for _ in range(repeats)]
            results.sort(key=lambda r: r.summary["tokens_per_s"])
            result = results[len(results) // 2]
            stats = engine.runner_stats()
            pool_mib, static_mib = engine.pool_bytes / 2**20, engine.buffers.nbytes / 2**20
            capture_s = engine.capture_seconds if not lazy else stats["capture_s"]
        if reference is None:
            reference = result.outputs
        same = all(r.outputs == reference for r in results)
        if not same:
            bad = sorted({k for r in results for k in reference if r.outputs.get(k) != reference[k]}, key=str)
            failed.append(f"{label}: {len(bad)} of {len(reference)} requests differ from eager "
                          f"(first: request {bad[0]})")
        s = result.summary
        rows.append({"run": label, "tokens/s": s["tokens_per_s"],
                     "decode host p50 ms": s["decode_p50_ms"], "decode GPU p50 ms": s["decode_gpu_p50_ms"],
                     "decode gap p50 ms": s["decode_gap_p50_ms"], "decode step p50 ms": s["decode_period_p50_ms"],
                     "mixed p50 ms": s["mixed_p50_ms"],
                     "graph hit rate": s["graph_hit_rate"], "padding waste": s["padding_waste"],
                     "captures": stats["captures"], "eager fallbacks": stats["eager_fallbacks"],
                     "capture s": capture_s, "pool MiB": pool_mib, "pool estimate MiB": estimate / 2**20,
                     "static MiB": static_mib, "same as eager": "yes" if same else "NO"})
        print(f"{label}: {s['steps']} steps ({s['decode_steps']} decode, {s['mixed_steps']} mixed), "
              f"{s['tokens_per_s']:.0f} tokens/s, same tokens as eager: {'yes' if same else 'NO'}", flush=True)
    print()
    print(markdown_table(rows))
    by_label = {r["run"]: r for r in rows}
    if "full" in by_label and "full (synchronous loop)" in by_label:
        ratio = by_label["full"]["tokens/s"] / by_label["full (synchronous loop)"]["tokens/s"]
        print(f"FULL tokens/s, overlapped loop over synchronous loop: {ratio:.2f}x")
    if get("save_results", False):
        from cgraph.bench.report import write_results  # noqa: PLC0415

        write_results("demo_gpu", rows, out_dir=get("out", None), title="python -m cgraph.demo (GPU run)",
                      notes=[f"model: {cfg}",
                             f"workload: {n_req} requests, prompts 1..{max_prompt}, {new_tokens} new tokens "
                             f"each; max_num_seqs={seqs}, max_num_batched_tokens={budget}",
                             f"each row: the median of {repeats} timed runs of the workload (by tokens/s)",
                             "decode host/GPU/gap/step: host work per step, device time of the forward, "
                             "device idle time before a step, device time from one step's end to the next's "
                             "(medians over decode steps)"])
    if failed:
        print("FAILED: graph modes must generate exactly the eager tokens:\n  " + "\n  ".join(failed),
              file=sys.stderr)
        raise SystemExit(1)
    print("every run generated exactly the tokens eager execution generated")
    return 0
