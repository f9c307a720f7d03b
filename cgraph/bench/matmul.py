"""`python -m cgraph.bench.matmul`: cgraph.matmul replayed in a graph against eager cuBLAS.

For each weight shape of the benchmarked models (Llama-3.2-1B and the 8-layer, hidden-1024
model; weights stored [N, K] as a Linear layer keeps them, multiplied as ``x @ w.T``) and
each M, float16:

- cuBLAS: eager ``cupy.matmul(x, w.T, out=out)`` (what the issue compares against);
- graph: ``cgraph.matmul(x, w.T, out=out)`` captured into a CUDA graph and replayed,
  with the plan cuBLASLt's heuristic picks, and (``graph_col``) the same with the other
  order of the output handed to cuBLASLt (``cgraph.cuda.blas.COLUMN_MAJOR`` flipped), and
  (``graph_tuned``) with the plan ``plan_matmul(..., autotune=True)`` keeps (cuBLASLt's
  candidate algorithms timed on the operands, the fastest kept);
- gemm: cgraph.kernels.gemm (the hand-written kernels) in a graph, for information.

Every figure is GPU time per product on the timeline of the stream the work runs on (CUDA
events recorded on it), queued behind a spin kernel so host launch costs never starve the
GPU (cgraph.bench.kernels.Timer). A graph holds REPEAT back-to-back products, as a model's
graph would, so the per-graph launch cost is spread as it is in use; the eager side runs
REPEAT calls per timed iteration likewise. Sides are timed in ROUNDS interleaved rounds
(every side once per round, the order rotated each round, each after the same rest, REST_S),
because the GPU's clock drifts by up to ~10% within seconds under these products: a time is
the median over rounds, and a ratio (target <= 1.03) the median over rounds of side /
cuBLAS within the same round.
Writes notebooks/results/matmul.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from cgraph.bench.kernels import Timer, random_array
from cgraph.bench.timing import interleaved
from cgraph.bench.report import add_out_argument, write_results
from cgraph.cuda.device import require_device

REPEAT = 10
#: interleaved timing rounds per shape (each side timed once per round), and the rest (idle
#: GPU, a spin kernel) before each timing
ROUNDS, REST_S = 7, 0.01
#: (model, layer, N, K): out[M, N] = x[M, K] @ w[N, K].T
SHAPES = (
    ("llama-1b", "qkv", 3072, 2048), ("llama-1b", "o", 2048, 2048), ("llama-1b", "gate_up", 16384, 2048),
    ("llama-1b", "down", 2048, 8192), ("llama-1b", "lm_head", 128256, 2048),
    ("8-layer", "qkv", 2048, 1024), ("8-layer", "o", 1024, 1024), ("8-layer", "gate_up", 5632, 1024),
    ("8-layer", "down", 1024, 2816), ("8-layer", "lm_head", 32000, 1024),
)
MS = (1, 8, 64, 512, 4096)


def _graph(cgraph: Any, fn: Any) -> Any:
    def body() -> None:
        for _ in range(REPEAT):
            fn()
    return cgraph.capture(body)


def measure(cp: Any, cgraph: Any, timer: Timer, model: str, layer: str, n: int, k: int, m: int) -> dict:
    from cgraph.cuda import blas  # noqa: PLC0415
    from cgraph.kernels import gemm  # noqa: PLC0415

    x, w = random_array(cp, (m, k), cp.float16), random_array(cp, (n, k), cp.float16, scale=k ** -0.5)
    out = cp.empty((m, n), cp.float16)
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # the inputs were made on another stream: finish them first
    row: dict[str, Any] = {"model": model, "layer": layer, "M": m, "N": n, "K": k}
    with stream:
        def eager() -> None:
            for _ in range(REPEAT):
                cp.matmul(x, w.T, out=out)
        want = cp.matmul(x, w.T)
        g_heur = _graph(cgraph, lambda: cgraph.matmul(x, w.T, out=out))
        g_gemm = _graph(cgraph, lambda: gemm(x, w, out=out))
        default, blas.COLUMN_MAJOR = blas.COLUMN_MAJOR, not blas.COLUMN_MAJOR
        try:  # the other order of D (plans are keyed by the strides handed over: no clash)
            g_col = _graph(cgraph, lambda: cgraph.matmul(x, w.T, out=out))
        finally:
            blas.COLUMN_MAJOR = default
        blas.plan_matmul(x, w.T, out=out, autotune=True)  # replaces the heuristic plan of g_heur's geometry
        g_tune = _graph(cgraph, lambda: cgraph.matmul(x, w.T, out=out))
        try:
            scale = float(cp.abs(want.astype(cp.float32)).max())
            errs = []
            for g in (g_heur, g_col, g_gemm, g_tune):  # each graph's product, checked before it is timed
                out.fill(cp.nan)
                g.replay(stream)
                errs.append(float(cp.abs(out.astype(cp.float32) - want.astype(cp.float32)).max()) / max(scale, 1e-30))
            sides = {"cublas": eager, "graph": lambda: g_heur.replay(stream),
                     "graph_col": lambda: g_col.replay(stream), "gemm_graph": lambda: g_gemm.replay(stream),
                     "graph_tuned": lambda: g_tune.replay(stream)}
            times = interleaved(timer, sides, rounds=ROUNDS, rest_s=REST_S)
        finally:
            for g in (g_heur, g_gemm, g_col, g_tune):
                g.close()
    for name, ratio_name in (("cublas", None), ("graph", "ratio"), ("graph_col", "ratio_col"),
                             ("graph_tuned", "ratio_tuned"), ("gemm_graph", "gemm_ratio")):
        row[f"{name}_us"] = statistics.median(times[name]) / REPEAT * 1e6
        if ratio_name:
            row[ratio_name] = statistics.median([t / c for t, c in zip(times[name], times["cublas"])])
    row.update(err_graph=errs[0], err_col=errs[1], err_gemm=errs[2], err_tuned=errs[3])
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama-1b,8-layer", help="comma-separated subset of the models")
    parser.add_argument("--ms", default=",".join(map(str, MS)), help="comma-separated M values")
    parser.add_argument("--max-flops", type=float, default=1e12, help="skip products larger than this (FLOPs)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    import cgraph  # noqa: PLC0415 - a tool: the package root is fine here

    timer = Timer(cp)
    models = set(args.models.split(","))
    rows = []
    for model, layer, n, k in SHAPES:
        if model not in models:
            continue
        for m in (int(v) for v in args.ms.split(",")):
            if 2.0 * m * n * k > args.max_flops:
                continue
            rows.append(measure(cp, cgraph, timer, model, layer, n, k, m))
    worst = max((r["ratio"] for r in rows), default=float("nan"))
    worst_col = max((r["ratio_col"] for r in rows), default=float("nan"))
    worst_tuned = max((r["ratio_tuned"] for r in rows), default=float("nan"))
    notes = [
        "GPU time per product on the stream's timeline (events on that stream), float16, x[M, K] @ w[N, K].T; "
        f"a graph holds {REPEAT} products back to back, eager cuBLAS runs {REPEAT} calls per timed iteration; "
        f"every side timed once in each of {ROUNDS} interleaved rounds (order rotated, "
        f"{REST_S * 1e3:.0f} ms rest before each): "
        "times are medians over "
        "rounds, ratios the median over rounds of side / cuBLAS in the same round",
        "cublas: eager cupy.matmul; graph: cgraph.matmul (cuBLASLt via nvmath-python, heuristic plan) replayed "
        "in a graph, as configured (cgraph.cuda.blas.COLUMN_MAJOR); graph_col: the same with the other order of "
        "D handed to cuBLASLt (COLUMN_MAJOR flipped); graph_tuned: the configured order with the plan "
        "plan_matmul(autotune=True) keeps (candidate algorithms timed, fastest kept); "
        "gemm_graph: cgraph.kernels.gemm in a graph, for information; err_*: max |graph - cuBLAS| / max |cuBLAS| "
        "of each graph's output (poisoned with NaN before its replay)",
        f"worst ratio graph/cuBLAS {worst:.3f} (as configured), {worst_col:.3f} (the other order), "
        f"{worst_tuned:.3f} (autotuned plan); target <= 1.03",
    ]
    write_results("matmul", rows, title="cgraph.matmul in a graph vs eager cuBLAS", notes=notes,
                  out_dir=args.out, extra={"repeat": REPEAT})


if __name__ == "__main__":
    main()
