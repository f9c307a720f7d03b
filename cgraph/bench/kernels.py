"""`python -m cgraph.bench.kernels`: kernel throughput against the hardware and cuBLAS.

Memory-bound kernels: achieved bytes/s (each input read once, each output written once)
as a percentage of the device-to-device copy bandwidth measured in the same run.
GEMM: time of cgraph.kernels.gemm against cuBLAS (cupy.matmul, outside capture) on the
same inputs, fp16 and bf16, as a percentage of cuBLAS throughput (100% = as fast).

Timing: CUDA events around `iters` back-to-back launches, queued behind a spin kernel so
that host launch overhead never starves the GPU (both sides get the same treatment);
median of 5 repetitions. GEMM operands rotate over enough copies to defeat the L2 cache.
Writes notebooks/results/kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import numpy as np

from cgraph.cuda.device import require_device
from cgraph.bench.report import add_out_argument, write_results

_SPIN_SRC = r"""
extern "C" __global__ void spin(long long cycles) {
  long long start = clock64();
  while (clock64() - start < cycles) { }
}
"""


class Timer:
    def __init__(self, cp: Any):
        self.cp = cp
        self.spin = cp.RawKernel(_SPIN_SRC, "spin")
        self.clock_hz = cp.cuda.Device().attributes["ClockRate"] * 1e3

    def __call__(self, fn: Callable[[], Any], target_s: float = 0.02, reps: int = 5, rest_s: float = 1e-3) -> float:
        """Median seconds per call of fn. Each timed repetition waits behind a spin kernel
        lasting at least rest_s (and twice the host time of the repetition's launches, so that
        the host is never what the GPU waits for)."""
        cp = self.cp
        fn()
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        once = max(time.perf_counter() - t0, 1e-6)
        iters = int(min(max(target_s / once, 10), 400))
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        host = time.perf_counter() - t0
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        cycles = np.int64(min(max(2.0 * host, rest_s), 0.5) * self.clock_hz)
        times = []
        for _ in range(reps):
            self.spin((1,), (1,), (cycles,))
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3 / iters)
        return statistics.median(times)


def random_array(cp: Any, shape, dtype, scale=1.0):
    """Device array of normal samples (times `scale`) in `dtype`; bf16 rounded to nearest even."""
    x = cp.random.standard_normal(shape, dtype=cp.float32) * scale
    if np.dtype(dtype).name == "bfloat16":  # round to nearest even with integer ops only
        u = x.view(cp.uint32)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(cp.uint16).view(dtype)
    return x.astype(dtype)


def _dtype(cp: Any, name: str):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def copy_bandwidth(cp: Any, timer: Timer, nbytes: int = 1 << 30) -> float:
    """Device-to-device memcpy bandwidth, bytes read + written per second."""
    src = cp.random.random(nbytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    stream = cp.cuda.get_current_stream()
    t = timer(lambda: dst.data.copy_from_device_async(src.data, nbytes, stream))
    return 2 * nbytes / t


def memory_bound_rows(cp: Any, K: Any, timer: Timer, copy_bw: float, dt: str) -> list[dict]:
    d = _dtype(cp, dt)
    item = d.itemsize
    rows = []

    def row(name, shape, seconds, nbytes):
        bw = nbytes / seconds
        rows.append({"kernel": name, "shape": shape, "dtype": dt, "ours_us": seconds * 1e6,
                     "ref_us": nbytes / copy_bw * 1e6, "pct": 100 * bw / copy_bw,
                     "detail": f"{bw / 1e9:.0f} GB/s"})
        print(rows[-1], flush=True)

    t, h = 16384, 8192
    x, res, w = random_array(cp, (t, h), d), random_array(cp, (t, h), d), random_array(cp, (h,), d)
    out = cp.empty((t, h), d)
    row("rms_norm", f"T={t} H={h}", timer(lambda: K.rms_norm(x, w, 1e-6, out=out)), 2 * t * h * item)
    row("rms_norm+residual", f"T={t} H={h}", timer(lambda: K.rms_norm(x, w, 1e-6, out=out, residual=res)),
        4 * t * h * item)
    del x, res, out
    t, i = 8192, 11008
    x, out = random_array(cp, (t, 2 * i), d), cp.empty((t, i), d)
    row("silu_and_mul", f"T={t} I={i}", timer(lambda: K.silu_and_mul(x, out=out)), 3 * t * i * item)
    del x, out
    t, hq, hk, hd = 65536, 32, 8, 128
    q, k = random_array(cp, (t, hq * hd), d), random_array(cp, (t, hk * hd), d)
    pos = cp.random.randint(0, 4096, size=t, dtype=cp.int32)
    cache = K.make_cos_sin_cache(4096, hd)
    row("rotary", f"T={t} Hq={hq} Hk={hk} D={hd}",
        timer(lambda: K.rotary_embedding(pos, q, k, cache, head_size=hd)),
        2 * t * (hq + hk) * hd * item + t * hd * 4)
    del q, k
    t, hkv, bs = 65536, 8, 16
    kk, vv = random_array(cp, (t, hkv, hd), d), random_array(cp, (t, hkv, hd), d)
    kc, vc = cp.empty((t // bs, bs, hkv, hd), d), cp.empty((t // bs, bs, hkv, hd), d)
    slots = cp.asarray(np.random.default_rng().permutation(t).astype(np.int32))
    row("reshape_and_cache", f"T={t} Hkv={hkv} D={hd}",
        timer(lambda: K.reshape_and_cache(kk, vv, kc, vc, slots)), 4 * t * hkv * hd * item)
    del kk, vv, kc, vc
    t, h, vocab = 65536, 4096, 32000
    table, out = random_array(cp, (vocab, h), d), cp.empty((t, h), d)
    ids = cp.random.randint(0, vocab, size=t, dtype=cp.int32)
    row("embedding", f"T={t} H={h}", timer(lambda: K.embedding(ids, table, out=out)), 2 * t * h * item)
    del table, out
    t, vocab = 512, 128256
    logits, toks = random_array(cp, (t, vocab), d), cp.empty((t,), cp.int32)
    row("argmax", f"T={t} V={vocab}", timer(lambda: K.argmax(logits, out=toks)), t * vocab * item)
    return rows


def attention_rows(cp: Any, K: Any, timer: Timer, copy_bw: float, dt: str) -> list[dict]:
    """Paged decode against copy bandwidth; prefill TFLOP/s; both against the CUDA-core kernel."""
    from cgraph.kernels.attention import launch_paged_attention, launch_varlen_attention

    d = _dtype(cp, dt)
    item = d.itemsize
    rows = []
    bs = 16

    def decode(s, ctx, hq, hkv, hd, contiguous=False, variant=None):
        nblk = -(-ctx // bs)
        nb = s * nblk
        copies = max(1, min(128, (256 << 20) // (2 * nb * bs * hkv * hd * item)))  # defeat L2 at small sizes
        caches = [(random_array(cp, (nb, bs, hkv, hd), d), random_array(cp, (nb, bs, hkv, hd), d))
                  for _ in range(copies)]
        order = np.arange(nb) if contiguous else np.random.default_rng().permutation(nb)
        tables = cp.asarray(order.astype(np.int32).reshape(s, nblk))
        lens = cp.full((s,), ctx, cp.int32)
        qsl = cp.arange(s + 1, dtype=cp.int32)
        ns = cp.asarray(np.array([s], np.int32))
        q, out = random_array(cp, (s, hq, hd), d), cp.empty((s, hq, hd), d)
        state = {"i": 0}

        meta = dict(block_tables=tables, seq_lens=lens, query_start_loc=qsl, num_seqs=ns, max_query_len=1, scale=0.088)

        def ours():
            i = state["i"] = (state["i"] + 1) % copies
            launch_paged_attention(q, caches[i][0], caches[i][1], out=out, variant=variant, **meta)

        def old():  # the CUDA-core kernel (the fallback path) for a side-by-side ratio
            i = state["i"] = (state["i"] + 1) % copies
            launch_paged_attention(q, caches[i][0], caches[i][1], out=out, cuda_core=True, **meta)

        sec, sec_old = timer(ours), timer(old)
        nbytes = 2 * s * ctx * hkv * hd * item + 2 * s * hq * hd * item
        bw = nbytes / sec
        rows.append({"kernel": "paged_attention decode" + (" (blocks in order)" if contiguous else "")
                     + (f" (kernel {variant})" if variant else ""),
                     "shape": f"S={s} ctx={ctx} Hq={hq} Hkv={hkv} D={hd}",
                     "dtype": dt, "ours_us": sec * 1e6, "ref_us": nbytes / copy_bw * 1e6, "pct": 100 * bw / copy_bw,
                     "detail": f"{bw / 1e9:.0f} GB/s; CUDA-core kernel {sec_old * 1e6:.1f} us"})
        print(rows[-1], flush=True)

    decode(64, 4096, 32, 8, 128)
    decode(256, 1024, 32, 8, 128)
    decode(1, 512, 16, 8, 64)
    decode(8, 2048, 32, 8, 128)
    decode(64, 4096, 32, 8, 128, contiguous=True)  # diagnostic: how much the shuffled blocks cost
    for variant in ("s1", "h2", "h2k32", "h4k32"):  # tuning data for attention.default_decode_variant
        decode(64, 4096, 32, 8, 128, variant=variant)
        decode(256, 1024, 32, 8, 128, variant=variant)
    decode(1, 512, 16, 8, 64, variant="s4")
    cp.get_default_memory_pool().free_all_blocks()

    def varlen(n_img, seq, heads, hd, causal):
        tt = n_img * seq
        qkv = random_array(cp, (tt, 3 * heads, hd), d)
        cu = cp.arange(0, tt + 1, seq, dtype=cp.int32)
        vout = cp.empty((tt, heads, hd), d)
        q, k, v = qkv[:, :heads], qkv[:, heads:2 * heads], qkv[:, 2 * heads:]
        kw = dict(out=vout, cu_seqlens=cu, max_seqlen=seq, causal=causal, scale=hd ** -0.5)
        sec = timer(lambda: K.varlen_attention(q, k, v, **kw))
        sec_old = timer(lambda: launch_varlen_attention(q, k, v, cuda_core=True, **kw))
        flops = 4 * n_img * seq * seq * heads * hd * (0.5 if causal else 1.0)
        rows.append({"kernel": "varlen_attention", "shape": f"{n_img}x{seq} tokens H={heads} D={hd} "
                     f"{'causal' if causal else 'bidir'}", "dtype": dt, "ours_us": sec * 1e6,
                     "ref_us": sec_old * 1e6, "pct": 100 * sec_old / sec,
                     "detail": f"{flops / sec / 1e12:.1f} TFLOP/s (CUDA-core kernel {flops / sec_old / 1e12:.1f})"})
        print(rows[-1], flush=True)

    varlen(4, 1024, 16, 64, False)
    varlen(1, 16384, 16, 64, False)
    varlen(4, 2048, 32, 128, True)
    cp.get_default_memory_pool().free_all_blocks()
    return rows


def _cublas_lib(cp: Any, a, w, out) -> str:
    """cuBLAS through cupy.matmul; torch.matmul (also cuBLAS) if CuPy lacks the dtype."""
    try:
        cp.matmul(a, w.T, out=out)
        return "cupy.matmul"
    except Exception:  # noqa: BLE001 - CuPy's bf16 matmul support is experimental
        return "torch.matmul"


GEMM_SHAPES = ((1024, 1024), (4096, 1024), (1024, 4096), (11008, 4096))
GEMM_MS = (1, 8, 32, 128, 512, 2048)


def _alternatives(m: int, plan: Any) -> list[dict]:
    """Other plans timed beside the default one (the planner's tuning data): other K splits
    of the tiled kernels; every wgmma tile and split."""
    from cgraph.kernels.gemm_plan import WGMMA_SPLITS, WGMMA_TILES

    if plan.kind == "wgmma":
        return [dict(tile=t, split=s) for t in WGMMA_TILES for s in WGMMA_SPLITS
                if f"{t}_s{s}" != plan.kernel]
    if plan.kind != "tile" or m > 128:
        return []
    tile, split = plan.kernel.split("_s")
    return [dict(tile=tile, split=s) for s in (1, 2, 4, 8) if s != int(split)]


def gemm_rows(cp: Any, K: Any, timer: Timer, dt: str, tune: bool) -> tuple[list[dict], list[dict]]:
    from cgraph.kernels.matmul import launch_gemm

    d = _dtype(cp, dt)
    rows, tuning = [], []
    for n, k in GEMM_SHAPES:
        for m in GEMM_MS:
            wbytes = (n * k + m * k) * d.itemsize
            copies = max(1, min(16, math.ceil((256 << 20) / wbytes)))
            ws = [random_array(cp, (n, k), d, 1 / math.sqrt(k)) for _ in range(copies)]
            As = [random_array(cp, (m, k), d) for _ in range(copies)]
            out = cp.empty((m, n), d)
            state = {"i": 0}

            def rotate(call):
                def fn():
                    i = state["i"] = (state["i"] + 1) % copies
                    call(As[i], ws[i])
                return fn

            plan = launch_gemm(As[0], ws[0], out=out)
            ours = timer(rotate(lambda a, w: K.gemm(a, w, out=out)))
            lib = _cublas_lib(cp, As[0], ws[0], out)
            if lib == "cupy.matmul":
                cub = timer(rotate(lambda a, w: cp.matmul(a, w.T, out=out)))
            else:
                import torch

                tws, tas = [torch.from_dlpack(w) for w in ws], [torch.from_dlpack(a) for a in As]
                tout = torch.from_dlpack(out)

                def torch_mm():
                    i = state["i"] = (state["i"] + 1) % copies
                    torch.matmul(tas[i], tws[i].t(), out=tout)

                cub = timer(torch_mm)
            flops = 2 * m * n * k
            rows.append({"kernel": "gemm", "shape": f"M={m} N={n} K={k}", "dtype": dt, "ours_us": ours * 1e6,
                         "ref_us": cub * 1e6, "pct": 100 * cub / ours,
                         "detail": f"{plan.kind}:{plan.kernel} {flops / ours / 1e12:.0f} TFLOP/s vs {lib}"})
            print(rows[-1], flush=True)
            if tune and dt == "float16":
                for force in _alternatives(m, plan):
                    p = launch_gemm(As[0], ws[0], out=out, **force)
                    tt = timer(rotate(lambda a, w, f=force: launch_gemm(a, w, out=out, **f)))
                    tuning.append({"dtype": dt, "M": m, "N": n, "K": k, "plan": f"{p.kind}:{p.kernel}",
                                   "us": tt * 1e6, "pct_cublas": 100 * cub / tt})
            del ws, As, out
            cp.get_default_memory_pool().free_all_blocks()
    return rows, tuning


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.bench.kernels")
    parser.add_argument("--no-tune", action="store_true", help="skip the alternative GEMM plans")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-gemm", action="store_true")
    parser.add_argument("--only", choices=("attention",), default=None,
                        help="run one group of rows (results go to kernels_attention.{json,md})")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    import cgraph.kernels as K

    timer = Timer(cp)
    copy_bw = copy_bandwidth(cp, timer)
    print(f"device-to-device copy: {copy_bw / 1e9:.0f} GB/s (read + write)", flush=True)
    rows: list[dict] = []
    tuning: list[dict] = []
    only_attention = args.only == "attention"
    if not args.skip_memory and not only_attention:
        for dt in ("float16", "bfloat16"):
            rows += memory_bound_rows(cp, K, timer, copy_bw, dt)
            print(f"memory-bound {dt} done", flush=True)
    if not args.skip_memory or only_attention:
        for dt in ("float16", "bfloat16"):
            rows += attention_rows(cp, K, timer, copy_bw, dt)
            print(f"attention {dt} done", flush=True)
    if not args.skip_gemm and not only_attention:
        for dt in ("float16", "bfloat16"):
            r, tn = gemm_rows(cp, K, timer, dt, tune=not args.no_tune)
            rows += r
            tuning += tn
            print(f"gemm {dt} done", flush=True)
    notes = [
        f"Copy bandwidth (cudaMemcpyAsync device-to-device, 1 GiB, read + write): {copy_bw / 1e9:.0f} GB/s.",
        "Memory-bound rows: pct = achieved bytes/s over the copy bandwidth; ref_us = the copy time "
        "for the same bytes.",
        "GEMM rows: ref_us = cuBLAS (cupy.matmul outside capture, or torch.matmul where noted); "
        "pct = cuBLAS time / our time (100% = as fast).",
        "Attention rows: decode pct = bytes/s over copy bandwidth (K/V caches rotate over copies that "
        "exceed L2 at small sizes); varlen ref_us = the CUDA-core fallback kernel on the same inputs, "
        "pct = its time / ours (100% = as fast); FLOP = 4*T*S*H*D (halved for causal).",
        "Timing: CUDA events over back-to-back launches queued behind a spin kernel; median of 5.",
    ]
    title = ("Attention kernels: decode vs copy bandwidth, prefill vs the CUDA-core kernel" if only_attention
             else "Kernel throughput: memory-bound vs copy bandwidth, GEMM vs cuBLAS")
    write_results("kernels_attention" if only_attention else "kernels", rows, title=title,
                  notes=notes, extra={"copy_bw_bytes_per_s": copy_bw, "gemm_tuning": tuning},
                  columns=["kernel", "shape", "dtype", "ours_us", "ref_us", "pct", "detail"], out_dir=args.out)
    if tuning:
        from cgraph.bench.report import markdown_table

        print("GEMM alternatives:")
        print(markdown_table(tuning))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
