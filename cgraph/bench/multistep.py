"""Multi-step decode: `python -m cgraph.bench.multistep`.

The demo model (4 layers, hidden 512), B requests (batch 1 and 8) with short prompts
generating `--new-tokens` greedy tokens each under FULL graphs: the single-step engine
(synchronous and overlapped loops) against engines running up to K decode steps per
launch in a device-side loop (K = 1, 4, 16, 64), side by side in one run. Reported:
tokens/s, the ratio to the single-step synchronous engine, and the GPU time of one K-step
launch against K back-to-back replays of the single-step decode graph. Every engine must
generate the same tokens.
"""

from __future__ import annotations

import argparse
import statistics

from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.config import GraphConfig
from cgraph.core.modes import GraphMode
from cgraph.cuda.device import require_device
from cgraph.engine.workload import synthetic_requests
from cgraph.models.config import demo_config


def _replays_us(cp, engine, batch: int, k: int) -> float:
    """GPU microseconds of k back-to-back replays of the single-step decode graph."""
    from cgraph.core.dispatch import dispatch  # noqa: PLC0415

    mode, desc = dispatch(engine.table, batch, uniform_decode=True)
    graph = engine.full.entry(desc)
    stream = cp.cuda.get_current_stream()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(5):
        start.record(stream)
        for _ in range(k):
            graph.replay()
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--steps", default="1,4,16,64")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--pdl-off-k", type=int, default=16,
                        help="also run this K with programmatic dependent launch off (0: none)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    import cgraph.kernels as K  # noqa: PLC0415
    from cgraph.engine.engine import Engine  # noqa: PLC0415
    from cgraph.models.llama import LlamaModel  # noqa: PLC0415

    cfg = demo_config(4, 512, max_seq_len=1 << max(10, (args.prompt + args.new_tokens).bit_length()))
    model = LlamaModel(cfg, seed=0)
    rows, same = [], True
    for batch in [int(b) for b in args.batches.split(",")]:
        gcfg = GraphConfig(GraphMode.FULL, capture_sizes=sorted({1, 2, 4, 8, batch, args.prompt * batch}),
                           max_num_seqs=batch, max_num_batched_tokens=max(args.prompt * batch, batch))
        requests = synthetic_requests(batch, min_prompt=args.prompt, max_prompt=args.prompt,
                                      new_tokens=args.new_tokens, vocab_size=cfg.vocab_size, seed=batch)
        with Engine(model, gcfg) as single:
            single.capture(progress=False)
            single.generate(requests[:1])
            sync = single.generate(requests, overlap=False)
            over = single.generate(requests, overlap=True)
            replay_us = {k: _replays_us(cp, single, batch, k) for k in [int(s) for s in args.steps.split(",")]}
        base = sync.summary["tokens_per_s"]
        rows.append({"batch": batch, "engine": "single-step, synchronous loop", "K": 1, "tokens_per_s": base,
                     "vs_sync": 1.0})
        rows.append({"batch": batch, "engine": "single-step, overlapped loop", "K": 1,
                     "tokens_per_s": over.summary["tokens_per_s"], "vs_sync": over.summary["tokens_per_s"] / base})
        same &= over.outputs == sync.outputs
        for k in [int(s) for s in args.steps.split(",")]:
            for pdl in (True, False) if k == args.pdl_off_k else (True,):
                K.set_programmatic_launch(pdl)
                try:
                    with Engine(model, gcfg, decode_steps_per_launch=k) as multi:
                        multi.capture(progress=False)
                        multi.generate(requests[:1])
                        result = multi.generate(requests)
                finally:
                    K.set_programmatic_launch(True)
                same &= result.outputs == sync.outputs
                full = [s for s in result.steps if s.steps == k]
                launch_us = statistics.median(s.gpu_seconds for s in full) * 1e6 if full else float("nan")
                rows.append({"batch": batch, "engine": f"multi-step, up to {k} per launch" + ("" if pdl else ", PDL off"),
                             "K": k, "tokens_per_s": result.summary["tokens_per_s"],
                             "vs_sync": result.summary["tokens_per_s"] / base,
                             "launch_gpu_us": launch_us, "k_replays_gpu_us": replay_us[k],
                             "launch/k_replays": launch_us / replay_us[k]})
                print(rows[-1], flush=True)
    columns = ["batch", "engine", "K", "tokens_per_s", "vs_sync", "launch_gpu_us", "k_replays_gpu_us",
               "launch/k_replays"]
    write_results("multistep", rows, title="Multi-step decode: K steps per launch vs the single-step engine",
                  out_dir=args.out, columns=columns,
                  notes=[f"demo model, {args.new_tokens} new tokens per request, prompts of {args.prompt} tokens, "
                         "FULL graphs; kernels captured with programmatic dependent launch unless a row says "
                         "PDL off",
                         "launch_gpu_us: median GPU time of a K-step launch (events around it); k_replays_gpu_us: "
                         "K back-to-back replays of the single-step decode graph",
                         f"every engine generated the same tokens: {same}",
                         "targets: batch 1, K = 16: >= 2x the synchronous single-step tokens/s, "
                         "launch/k_replays <= 1.1"])
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
