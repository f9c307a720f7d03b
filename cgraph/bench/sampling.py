"""`python -m cgraph.bench.sampling`: the sampler's GPU time against greedy argmax.

For a Llama-3-sized vocabulary (128256 logits a row, fp16) at T rows, the GPU time of one
launch of cgraph.kernels.argmax and of cgraph.kernels.sample with every row greedy, with
temperature only, with top-k, with top-p and with both; each as a ratio to argmax measured
in the same run (CUDA events around back-to-back launches queued behind a spin kernel,
cgraph.bench.kernels.Timer). Writes notebooks/results/sampling.{json,md}.
"""

from __future__ import annotations

import argparse

from cgraph.bench.kernels import Timer
from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.sampling import GREEDY, SamplingParams, pack_sampling
from cgraph.cuda.device import require_device

CASES = {
    "greedy": GREEDY,
    "temperature 0.8": SamplingParams(temperature=0.8, seed=1),
    "top_k 50": SamplingParams(temperature=0.8, top_k=50, seed=1),
    "top_p 0.9": SamplingParams(temperature=0.8, top_p=0.9, seed=1),
    "top_k 50 + top_p 0.9": SamplingParams(temperature=0.8, top_k=50, top_p=0.9, seed=1),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.bench.sampling", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64])
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    import cgraph.kernels as K  # noqa: PLC0415 - GPU layer

    timer = Timer(cp)
    rows = []
    for t in args.rows:
        logits = (cp.random.standard_normal((t, args.vocab), dtype=cp.float32) * 3).astype(cp.float16)
        out = cp.empty(t, cp.int32)
        positions = cp.arange(t, dtype=cp.int32)
        base = timer(lambda: K.argmax(logits, out=out))
        rows.append({"rows": t, "vocab": args.vocab, "kernel": "argmax", "gpu_us": base * 1e6, "x_argmax": 1.0})
        for name, params in CASES.items():
            packed = cp.asarray(pack_sampling([params] * t, t))
            s = timer(lambda packed=packed: K.sample(logits, packed, positions, out=out))
            rows.append({"rows": t, "vocab": args.vocab, "kernel": f"sample ({name})", "gpu_us": s * 1e6,
                         "x_argmax": s / base})
    write_results("sampling", rows, title="Sampling kernel against greedy argmax (fp16 logits)",
                  notes=["x_argmax: GPU time of the launch divided by argmax's on the same logits, same run.",
                         "One block per row; top-k / top-p thresholds by radix search over integer keys and weights."],
                  out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
