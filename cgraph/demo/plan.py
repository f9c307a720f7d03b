"""`python -m cgraph.demo`: how a serving workload would use CUDA graphs, per graph mode.

The demo builds a synthetic workload (requests with random prompt lengths, each
generating a fixed number of tokens), runs the engine's scheduler over it on the host
(the batch shapes do not depend on the tokens sampled), and dispatches every step's
batch under each graph mode with the GraphConfig the GPU run uses. It prints, per mode,
which graph each batch size hits, the hit rate and the padding waste.

On a machine with a CUDA GPU (and without --no-gpu) it hands over to the GPU demo
(cgraph.demo.gpu), which runs the workload on a small decoder model.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cgraph.core.config import GraphConfig
from cgraph.core.dispatch import build_dispatch_table
from cgraph.engine.workload import demo_max_seq_len, plan_batches, serving_config, synthetic_requests
from cgraph.core.modes import GraphMode
from cgraph.core.padding import PaddingReport, padding_report
from cgraph.bench.report import add_out_argument
from cgraph.core.buckets import padded_tokens, suggest_capture_sizes

ALL_MODES = (GraphMode.NONE, GraphMode.PIECEWISE, GraphMode.FULL,
             GraphMode.FULL_DECODE_ONLY, GraphMode.FULL_AND_PIECEWISE)


def _histogram_line(report: PaddingReport, mode: GraphMode, limit: int = 10) -> str:
    hits = [g for g in report.graphs if g.mode is mode]
    if not hits:
        return "-"
    parts = [f"{g.descriptor.num_tokens}{'u' if g.descriptor.uniform else ''}x{g.batches}"
             for g in hits[:limit]]
    if len(hits) > limit:
        parts.append(f"... (+{len(hits) - limit} graphs)")
    return " ".join(parts)


def print_plan(args: argparse.Namespace, out=None) -> dict[GraphMode, PaddingReport]:
    """Simulate the workload and print each mode's dispatch plan (to ``out``, default
    stdout); return the reports."""
    out = sys.stdout if out is None else out
    requests = synthetic_requests(args.requests, max_prompt=args.max_prompt, new_tokens=args.new_tokens,
                                  vocab_size=2, seed=args.seed)
    batches = plan_batches(requests, max_num_seqs=args.max_num_seqs,
                           max_num_batched_tokens=args.max_num_batched_tokens,
                           max_seq_len=demo_max_seq_len(args.max_prompt, args.new_tokens))
    uniform = sum(u for _, u in batches)
    tokens = sum(n for n, _ in batches)
    print(f"Workload: {args.requests} requests, prompts 1..{args.max_prompt} tokens, "
          f"{args.new_tokens} new tokens each, max_num_seqs={args.max_num_seqs}, "
          f"max_num_batched_tokens={args.max_num_batched_tokens}", file=out)
    print(f"  {len(batches)} steps ({uniform} uniform decode, {len(batches) - uniform} prefill/mixed), "
          f"{tokens} real tokens", file=out)
    reports = {}
    cfg = None
    for mode in args.modes:
        cfg = serving_config(mode, max_num_seqs=args.max_num_seqs,
                             max_num_batched_tokens=args.max_num_batched_tokens)
        table = build_dispatch_table(cfg)
        report = padding_report(table, batches)
        reports[mode] = report
        print(f"\n{mode.name}: {len(cfg.capture_sizes)} capture sizes up to {cfg.max_capture_size}; "
              f"{len(table.full_keys)} FULL + {len(table.piecewise_keys)} PIECEWISE graphs", file=out)
        print(f"  hit rate {report.hit_rate:.1%} of {report.batches} batches; padding waste "
              f"{report.waste:.2%} ({report.padding_tokens} of "
              f"{report.computed_tokens} computed tokens)", file=out)
        for rmode in (GraphMode.FULL, GraphMode.PIECEWISE, GraphMode.NONE):
            usage = report[rmode]
            line = (_histogram_line(report, rmode) if rmode is not GraphMode.NONE
                    else f"{usage.batches} batches run eagerly")
            print(f"  {rmode.name:<9} {usage.batches:>5} batches, waste {usage.waste:6.2%}  "
                  f"{line}", file=out)
    print("\n  (graph hits read SIZE[u]xBATCHES: padded size, u = uniform decode graph)", file=out)
    if cfg is not None:
        _print_suggestion(cfg, [n for n, _ in batches], out)
    print("\nA GPU run (on a CUDA machine, without --no-gpu) hands over to "
          "cgraph.demo.gpu, which runs this workload on a small decoder "
          f"({args.layers} layers, hidden {args.hidden}) with these graphs captured and "
          "replayed, instead of only planning them.", file=out)
    return reports


def _print_suggestion(cfg: GraphConfig, sizes: Sequence[int], out) -> None:
    observed = [n for n in sizes if n <= cfg.max_capture_size]
    if not observed:
        return
    # The default sizes this workload can reach, against as many tuned ones.
    fitted = [s for s in cfg.capture_sizes if s <= cfg.pad(max(observed))]
    graphs = len(fitted)
    tuned = suggest_capture_sizes(observed, graphs)
    real = sum(observed)
    print(f"\nsuggest_capture_sizes, {graphs} sizes for this workload's batches <= "
          f"{cfg.max_capture_size}: {list(tuned)}", file=out)
    print(f"  padding waste there: default sizes {1 - real / padded_tokens(fitted, observed):.2%} "
          f"({len(fitted)} sizes), suggested {1 - real / padded_tokens(tuned, observed):.2%} "
          f"({len(tuned)} sizes)", file=out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cgraph.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests in the workload")
    parser.add_argument("--max-prompt", type=int, default=512, help="longest prompt (tokens)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="requests per step")
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048, help="tokens per step")
    parser.add_argument("--modes", default=",".join(m.value for m in ALL_MODES),
                        help="comma-separated graph modes (default: all five)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (GPU run)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size (GPU run)")
    parser.add_argument("--seed", type=int, default=0, help="workload and weights seed")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of the workload per mode (GPU run): the row is the median run")
    parser.add_argument("--no-gpu", action="store_true", help="print the dispatch plan only")
    parser.add_argument("--save-results", action="store_true",
                        help="GPU run: also write demo_gpu.{json,md} into the --out folder")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    try:
        args.modes = [GraphMode.parse(m) for m in args.modes.split(",") if m.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    if not args.modes:
        parser.error("--modes is empty; pass e.g. --modes full,piecewise")
    for name in ("requests", "max_prompt", "new_tokens", "max_num_seqs", "max_num_batched_tokens",
                 "layers", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_gpu:
        from cgraph.cuda.device import gpu_available

        if gpu_available():
            from cgraph.demo.gpu import run_gpu_demo

            return run_gpu_demo(args)
        print("No usable CUDA GPU: showing the dispatch plan only.\n")
    print_plan(args)
    return 0

