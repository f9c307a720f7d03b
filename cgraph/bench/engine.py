"""Engine loop overhead: `python -m cgraph.bench.engine`.

For the demo model (4 layers, hidden 512) and an 8-layer hidden-1024 model, at batch 1, 8
and 64: B requests with short prompts generate `--new-tokens` greedy tokens each under
FULL graphs, once with the overlapped loop and once with the synchronous loop, side by
side in one run. Reported per decode step (medians): wall time (the run's wall clock
over its steps, decode-only stretch), GPU time of the step (events around it), host
time, GPU idle gap, and wall / GPU. Both loops must generate the same tokens.
"""

from __future__ import annotations

import argparse
import statistics

from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.config import GraphConfig
from cgraph.cuda.device import require_device
from cgraph.engine.workload import synthetic_requests
from cgraph.models.config import demo_config

MODELS = {"demo": (4, 512), "8x1024": (8, 1024)}


def _decode_row(result, loop: str, model: str, batch: int) -> dict:
    # decode steps after the first (whose period still holds the prefill step's tail)
    steps = [s for s in result.steps if s.uniform and s.num_seqs == batch][1:]
    gpu = statistics.fmean(s.gpu_seconds for s in steps)
    host = statistics.median(s.seconds for s in steps)
    gaps = [s.gap_seconds for s in steps]
    # wall per decode step on the device's clock: from one step's end to the next's, so a
    # host that cannot keep up shows as time the forward does not account for
    wall = statistics.fmean(s.period_seconds for s in steps)
    return {"model": model, "batch": batch, "loop": loop, "decode_steps": len(steps),
            "wall_us": wall * 1e6, "gpu_us": gpu * 1e6, "host_us": host * 1e6,
            "gap_us": statistics.median(gaps) * 1e6 if gaps else float("nan"),
            "wall/gpu": wall / gpu, "tokens_per_s": result.summary["tokens_per_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--models", default="demo,8x1024")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens per request")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    require_device()
    from cgraph.engine.engine import Engine
    from cgraph.models.llama import LlamaModel

    rows, same = [], True
    batches = [int(b) for b in args.batches.split(",")]
    for name in args.models.split(","):
        layers, hidden = MODELS[name]
        cfg = demo_config(layers, hidden, max_seq_len=1 << max(10, (args.prompt + args.new_tokens).bit_length()))
        model = LlamaModel(cfg, seed=0)
        for batch in batches:
            gcfg = GraphConfig("full", capture_sizes=sorted({1, 2, 4, 8, batch, args.prompt * batch}),
                               max_num_seqs=batch, max_num_batched_tokens=max(args.prompt * batch, batch))
            requests = synthetic_requests(batch, min_prompt=args.prompt, max_prompt=args.prompt,
                                          new_tokens=args.new_tokens, vocab_size=cfg.vocab_size, seed=batch)
            with Engine(model, gcfg) as engine:
                engine.capture(progress=False)
                engine.generate(requests[:1])  # warm-up
                results = {}
                for loop, overlap in (("overlapped", True), ("synchronous", False), ("overlapped", True)):
                    results[loop] = engine.generate(requests, overlap=overlap)  # overlapped twice: keep the 2nd
            same &= results["overlapped"].outputs == results["synchronous"].outputs
            for loop in ("overlapped", "synchronous"):
                rows.append(_decode_row(results[loop], loop, name, batch))
            over, sync = rows[-2], rows[-1]
            over["speedup_vs_sync"] = sync["wall_us"] / over["wall_us"]
            print(f"{name} batch {batch}: wall/gpu overlapped {over['wall/gpu']:.2f}, "
                  f"synchronous {sync['wall/gpu']:.2f}", flush=True)
    write_results("engine", rows, title="Engine loop: wall per step over GPU time per step", out_dir=args.out,
                  notes=[f"{args.new_tokens} new tokens per request, prompts of {args.prompt} tokens, FULL graphs",
                         "wall_us: mean time from one decode step's end to the next's (device events); "
                         "gpu_us: mean time of the step's forward (events right around the graph replay); "
                         "host_us: median host work per step (the synchronous loop's includes its wait); "
                         "gap_us: median GPU idle time before a step's first operation",
                         f"overlapped and synchronous loops generated the same tokens: {same}",
                         "target: wall/gpu <= 1.15 at batch 1 and 8 (overlapped)"])
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
