"""`python -m cgraph.bench.gemm_tune`: time GEMM plan alternatives (planner tuning data).

Default: for the benchmark shapes and skinny M, every launch plan cgraph.kernels offers
(streaming kernel at each warp count, tiled kernel at each K split, the default plan) beside
cuBLAS (cupy.matmul) in the same run. With --candidates: compiles kernels/gemm.cu plus extra
instantiations of its tile template (fp16 only) and times every (tile, K split).
Every alternative is first checked against cuBLAS on fresh random inputs (a wrong one is
reported, never timed). Prints the best per shape; writes gemm_tune.json to --out DIR
(default notebooks/results/).

Timing as in cgraph.bench.kernels: CUDA events over back-to-back launches queued behind a
spin kernel, median of 5, weights rotated over enough copies to defeat the L2 cache.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from cgraph.bench.kernels import GEMM_SHAPES, Timer, random_array
from cgraph.core.errors import ArgumentError, KernelCompileError
from cgraph.cuda.device import require_device
from cgraph.kernels.compiler import OPTIONS, compile_source, family_source, shorten_log
from cgraph.kernels.matmul import launch_gemm

#: candidate name -> (BM, BN, BK, WARPS_M, WARPS_N, STAGES)
CANDIDATES: dict[str, tuple[int, int, int, int, int, int]] = {
    "m16n64k64w14s4": (16, 64, 64, 1, 4, 4),
    "m16n64k64w14s8": (16, 64, 64, 1, 4, 8),
    "m16n128k64w14s6": (16, 128, 64, 1, 4, 6),
    "m32n64k64w14s4": (32, 64, 64, 1, 4, 4),
    "m32n64k64w14s8": (32, 64, 64, 1, 4, 8),
    "m32n128k64w14s6": (32, 128, 64, 1, 4, 6),
    "m64n64k64w22s4": (64, 64, 64, 2, 2, 4),
    "m64n64k64w22s6": (64, 64, 64, 2, 2, 6),
    "m64n128k64w22s4": (64, 128, 64, 2, 2, 4),
    "m64n128k64w14s4": (64, 128, 64, 1, 4, 4),
    "m128n64k64w22s4": (128, 64, 64, 2, 2, 4),
    "m128n128k64w22s3": (128, 128, 64, 2, 2, 3),
    "m128n128k32w24s4": (128, 128, 32, 2, 4, 4),
    "m128n128k64w24s4": (128, 128, 64, 2, 4, 4),
    "m128n256k32w24s3": (128, 256, 32, 2, 4, 3),
    "m128n256k64w24s3": (128, 256, 64, 2, 4, 3),
}
SPLITS = (1, 2, 4, 8)
MS = (8, 32, 64, 128, 512, 2048)


def smem_bytes(bm: int, bn: int, bk: int, stages: int) -> int:
    return max(stages * (bm + bn) * (bk + 8) * 2, bm * (bn + 4) * 4)


def build(cp: Any, folder: Path) -> Any:
    """The candidate tiles as one module: kernels/gemm.cu's templates with none of its own
    instantiations (-DCGRAPH_PART=-1), compiled by the same NVRTC path as the families."""
    lines = [family_source("gemm")]
    for name, (bm, bn, bk, wm, wn, st) in CANDIDATES.items():
        for s in SPLITS:
            lines.append(f"GEMM_TILE(tune_{name}_s{s}, F16, {bm}, {bn}, {bk}, {wm}, {wn}, {st}, {s})")
    arch = int(cp.cuda.Device().compute_capability)
    cubin, log = compile_source("\n".join(lines), "gemm_tune.cu", (*OPTIONS, f"-arch=sm_{arch}", "-DCGRAPH_PART=-1"))
    if cubin is None:
        raise KernelCompileError(f"the gemm_tune candidates failed to compile: {shorten_log(log, None)}")
    path = folder / "gemm_tune_candidates.cubin"
    path.write_bytes(cubin)
    return cp.RawModule(path=str(path))


def plan_alternatives(m: int) -> list[dict]:
    """Forced plans to time at m rows (keyword arguments of cgraph.kernels.matmul.launch_gemm)."""
    from cgraph.kernels.gemm_plan import STREAM_MAX_M, STREAM_WARPS

    alts: list[dict] = [{}]
    if m <= STREAM_MAX_M:
        alts += [dict(streaming=True, warps=w) for w in STREAM_WARPS]
    tiles = ["t16"] if m <= 16 else ["t32"] if m <= 32 else ["t64", "t128"] if m <= 128 else []
    alts += [dict(tile=t, split=s) for t in tiles for s in SPLITS]
    return alts


def tune_plans(cp: Any, ms: list[int]) -> list[dict]:
    timer = Timer(cp)
    d = cp.float16
    results: list[dict] = []
    for n, kdim in GEMM_SHAPES:
        for m in ms:
            wbytes = (n * kdim + m * kdim) * 2
            copies = max(1, min(16, math.ceil((256 << 20) / wbytes)))
            ws = [random_array(cp, (n, kdim), d, 1 / math.sqrt(kdim)) for _ in range(copies)]
            As = [random_array(cp, (m, kdim), d) for _ in range(copies)]
            out = cp.empty((m, n), d)
            ref = cp.matmul(As[0], ws[0].T).astype(cp.float32)
            state = {"i": 0}

            def rot(call):
                def fn():
                    i = state["i"] = (state["i"] + 1) % copies
                    call(As[i], ws[i])
                return fn

            cub = timer(rot(lambda a, w: cp.matmul(a, w.T, out=out)))
            line = []
            for force in plan_alternatives(m):
                try:
                    out.fill(float("nan"))
                    plan = launch_gemm(As[0], ws[0], out=out, **force)
                except ArgumentError as exc:
                    print(f"skip {force}: {exc}")
                    continue
                got = out.astype(cp.float32)
                err = float(cp.linalg.norm(got - ref) / cp.linalg.norm(ref))
                label = ("default " if not force else "") + f"{plan.kind}:{plan.kernel}/{plan.block}"
                if not math.isfinite(err) or err > 5e-3:
                    print(f"WRONG {label} M={m} N={n} K={kdim}: rel err {err}", flush=True)
                    continue
                t = timer(rot(lambda a, w, f=force: launch_gemm(a, w, out=out, **f)))
                results.append({"N": n, "K": kdim, "M": m, "plan": label, "us": t * 1e6,
                                "cublas_us": cub * 1e6, "pct": 100 * cub / t})
                line.append(results[-1])
            line.sort(key=lambda r: r["us"])
            dflt = next(r for r in line if r["plan"].startswith("default"))
            print(f"N={n} K={kdim} M={m} cublas {cub * 1e6:.2f} | {dflt['plan']} {dflt['us']:.2f} "
                  f"({dflt['pct']:.0f}%) | " + " | ".join(f"{r['plan']} {r['us']:.2f} ({r['pct']:.0f}%)"
                                                      for r in line[:4]), flush=True)
            del ws, As, out, ref
            cp.get_default_memory_pool().free_all_blocks()
    return results


def bench_rows(cp: Any) -> int:
    """The GEMM rows of cgraph.bench.kernels alone (same shapes, timer and cuBLAS baseline)."""
    import cgraph.kernels as K
    from cgraph.bench.report import write_results
    from cgraph.bench.kernels import gemm_rows

    timer = Timer(cp)
    rows: list[dict] = []
    for dt in ("float16", "bfloat16"):
        rows += gemm_rows(cp, K, timer, dt, tune=False)[0]
    notes = ["GEMM rows of `python -m cgraph.bench.kernels`: ref_us = cuBLAS (cupy.matmul outside "
             "capture, or torch.matmul where noted); pct = cuBLAS time / our time (100% = as fast).",
             "Timing: CUDA events over back-to-back launches queued behind a spin kernel; median of 5."]
    write_results("kernels_gemm", rows, title="GEMM vs cuBLAS", notes=notes,
                  columns=["kernel", "shape", "dtype", "ours_us", "ref_us", "pct", "detail"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.bench.gemm_tune")
    parser.add_argument("--out", default=None, help="folder for gemm_tune.json")
    parser.add_argument("--ms", default=None, help="comma-separated M values")
    parser.add_argument("--candidates", action="store_true", help="time extra tile instantiations")
    parser.add_argument("--bench", action="store_true",
                        help="only the GEMM rows of cgraph.bench.kernels (fp16, bf16), written to "
                             "notebooks/results/kernels_gemm.{json,md}")
    args = parser.parse_args(argv)
    cp = require_device()
    if args.bench:
        return bench_rows(cp)
    folder = Path(args.out) if args.out else Path(__file__).resolve().parents[2] / "notebooks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    if not args.candidates:
        ms = [int(x) for x in (args.ms or "5,8,16,32,64,128").split(",")]
        res = tune_plans(cp, ms)
        (folder / "gemm_tune.json").write_text(json.dumps({"results": res}, indent=1))
        return 0
    ms = [int(x) for x in (args.ms or ",".join(map(str, MS))).split(",")]
    mod = build(cp, folder)
    kern: dict[tuple[str, int], Any] = {}
    for name, (bm, bn, bk, wm, wn, st) in CANDIDATES.items():
        for s in SPLITS:
            k = mod.get_function(f"tune_{name}_s{s}")
            k.max_dynamic_shared_size_bytes = smem_bytes(bm, bn, bk, st)
            kern[(name, s)] = k
    timer = Timer(cp)
    d = cp.float16
    results: list[dict] = []
    bad: set[str] = set()
    for n, kdim in GEMM_SHAPES:
        for m in ms:
            wbytes = (n * kdim + m * kdim) * 2
            copies = max(1, min(16, math.ceil((256 << 20) / wbytes)))
            ws = [random_array(cp, (n, kdim), d, 1 / math.sqrt(kdim)) for _ in range(copies)]
            As = [random_array(cp, (m, kdim), d) for _ in range(copies)]
            out = cp.empty((m, n), d)
            ref = cp.matmul(As[0], ws[0].T).astype(cp.float32)
            state = {"i": 0}

            def rot(call):
                def fn():
                    i = state["i"] = (state["i"] + 1) % copies
                    call(As[i], ws[i])
                return fn

            cub = timer(rot(lambda a, w: cp.matmul(a, w.T, out=out)))
            for name, (bm, bn, bk, wm, wn, st) in CANDIDATES.items():
                if name in bad:
                    continue
                if m <= 128 and bm > max(16, 2 * m):
                    continue  # a tile far taller than M only wastes work
                if m > 128 and bm < 128:
                    continue
                tiles = math.ceil(m / bm) * math.ceil(n / bn)
                ktiles = math.ceil(kdim / bk)
                smem = smem_bytes(bm, bn, bk, st)
                for s in SPLITS:
                    if s > 1 and math.ceil(ktiles / s) < 2:
                        continue
                    if tiles * s > 132 * 8:
                        continue
                    kps = math.ceil(ktiles / s)
                    grid = (math.ceil(n / bn), math.ceil(m / bm), s)
                    f = kern[(name, s)]

                    def call(a, w, f=f, grid=grid, kps=kps, threads=wm * wn * 32, smem=smem):
                        f(grid, (threads,), (out, a, w, out, cp.int32(0), cp.int32(m), cp.int32(n),
                                             cp.int32(kdim), cp.int32(kps)), shared_mem=smem)

                    out.fill(float("nan"))
                    call(As[0], ws[0])
                    got = out.astype(cp.float32)
                    err = float(cp.linalg.norm(got - ref) / cp.linalg.norm(ref))
                    if not math.isfinite(err) or err > 5e-3:
                        print(f"WRONG {name} s{s} M={m} N={n} K={kdim}: rel err {err}", flush=True)
                        bad.add(name)
                        break
                    t = timer(rot(call))
                    results.append({"N": n, "K": kdim, "M": m, "tile": name, "split": s,
                                    "grid": tiles * s, "us": t * 1e6, "cublas_us": cub * 1e6,
                                    "pct": 100 * cub / t})
            best = sorted((r for r in results if (r["N"], r["K"], r["M"]) == (n, kdim, m)),
                          key=lambda r: r["us"])[:4]
            print(f"N={n} K={kdim} M={m} cublas {cub * 1e6:.2f} us | "
                  + " | ".join(f"{r['tile']}_s{r['split']} {r['us']:.2f} ({r['pct']:.0f}%)" for r in best),
                  flush=True)
            del ws, As, out, ref
            cp.get_default_memory_pool().free_all_blocks()
    (folder / "gemm_tune.json").write_text(json.dumps({"results": results, "wrong": sorted(bad)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
