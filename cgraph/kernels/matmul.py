"""GEMM launchers: out[M, N] = a[M, K] @ w[N, K].T (+ bias[N]), and patch embedding as one.

Pointer needs per kernel path (kernels/gemm.cu, kernels/gemm_sm90.cu):

- gemv, streaming, tiled mma.sync and wgmma kernels read a and w in 16-byte pieces
  (vector loads, cp.async, TMA): they run only when K % 8 == 0 and a and w are 16-byte
  aligned (:func:`gemm_plan_for` checks; otherwise the plan is the fallback kernel).
- out and bias need element alignment only, on every path: bias is read one element at a
  time; the tiled and wgmma epilogues store 8 bytes at once only when N % 4 == 0 and out is
  8-byte aligned (the kernel tests out's address), else one element at a time; the other
  kernels store single elements.
- the fallback kernel reads and writes single elements: any element-aligned view works.
"""

from __future__ import annotations

from typing import Any

from cgraph.core.errors import ArgumentError
from cgraph.kernels.gemm_plan import WGMMA_TILES, GemmPlan, plan_gemm
from cgraph.kernels.launch import I32, VECTOR_BYTES, device_facts, launch, tag
from cgraph.kernels.spec import HALVES, Arr, Bound, Spec
from cgraph.kernels.tensor_map import cached_tensor_map

_GEMM = Spec("gemm",
             Arr("a", ("M", "K"), HALVES),
             Arr("w", ("N", "K"), like="a", hint="w is [N, K], the Linear layout: out = a @ w.T"),
             Arr("out", ("M", "N"), like="a"),
             Arr("bias", ("N",), like="a", optional=True),
             at_least={"K": 1, "N": 1})
_PATCH_EMBED = Spec("patch_embed",
                    Arr("patches", ("T", "F"), HALVES, hint="make the rows with unfold_patches(image, patch)"),
                    Arr("weight", ("H", "F"), like="patches",
                        hint="a Conv2d weight [H, C, p, p] reshaped to [H, C*p*p]"),
                    Arr("out", ("T", "H"), like="patches"),
                    Arr("bias", ("H",), like="patches", optional=True),
                    at_least={"F": 1, "H": 1})


def _plan(b: Bound, force: dict[str, Any]) -> GemmPlan:
    m, n, k = b.dims["M"], b.dims["N"], b.dims["K"]
    facts = device_facts()
    aligned = k % 8 == 0 and b.aligned(VECTOR_BYTES, "a", "w")
    return plan_gemm(m, n, k, aligned=aligned, sm_count=facts.sm_count, cluster=facts.clusters,
                     wgmma=facts.wgmma, **force)


def gemm_plan_for(a: Any, w: Any, *, out: Any, bias: Any = None, **force: Any) -> GemmPlan | None:
    """The plan :func:`gemm` runs for these arguments (None when M == 0: nothing runs).

    `force` takes plan_gemm's overrides (tile=, split=, streaming=, warps=, gemv_max_m=) for
    tests and benchmarks, and invariant= (the batch-invariant plan); a forced plan still
    falls back when a or w is unaligned or K % 8.
    """
    b = _GEMM.bind(a=a, w=w, out=out, bias=bias).on_device()
    return _plan(b, force) if b.dims["M"] else None


def launch_gemm(a: Any, w: Any, *, out: Any, bias: Any = None, stream: Any = None, **force: Any) -> GemmPlan | None:
    """Run :func:`gemm` with an optionally forced plan (see gemm_plan_for); return the plan run."""
    b = _GEMM.bind(a=a, w=w, out=out, bias=bias).on_device()
    m, n, k = b.dims["M"], b.dims["N"], b.dims["K"]
    if m == 0:
        return None
    plan = _plan(b, force)
    dt = tag(b.dtypes["a"])
    has_bias = I32(bias is not None)
    bias_arg = bias if bias is not None else out  # never read when has_bias is 0
    if plan.kind == "wgmma":
        bm, bn, _ = WGMMA_TILES[plan.kernel.split("_s")[0]]
        a_box = min(bm, -(-m // 8) * 8)  # the kernel derives the same box from M
        args = (out, cached_tensor_map(b.addresses["a"], m, k, a_box), cached_tensor_map(b.addresses["w"], n, k, bn),
                bias_arg, has_bias, I32(m), I32(n), I32(k), I32(plan.ktiles_per_split))
        launch("gemm_sm90", f"gemm_{dt}_{plan.kernel}", plan.grid, plan.block, args, stream, smem=plan.smem)
        return plan
    if plan.kind == "tile":
        name = f"gemm_{dt}_{plan.kernel}"
        args = (out, a, w, bias_arg, has_bias, I32(m), I32(n), I32(k), I32(plan.ktiles_per_split))
    elif plan.kind in ("gemv", "stream"):
        name = f"gemv_{dt}_{plan.kernel}" if plan.kind == "gemv" else f"gemm_{dt}_stream"
        args = (out, a, w, bias_arg, has_bias, I32(m), I32(n), I32(k))
    elif plan.kind == "fallback":
        name = f"gemm_fallback_{dt}"
        args = (out, a, w, bias_arg, has_bias, I32(m), I32(n), I32(k))
    else:
        raise ArgumentError(f"unknown GEMM plan kind {plan.kind!r}")
    launch("gemm", name, plan.grid, plan.block, args, stream, smem=plan.smem)
    return plan


def gemm(a: Any, w: Any, *, out: Any, bias: Any = None, stream: Any = None, invariant: bool = False) -> Any:
    """out[M, N] = a[M, K] @ w[N, K].T (+ bias[N]) on tensor cores, fp32 accumulation.

    float16 or bfloat16, all C-contiguous, element-aligned. Any M >= 1 (M = 0 launches
    nothing). Fast paths need K % 8 == 0 and 16-byte aligned a and w; otherwise a slower
    fallback kernel runs. M <= 4 uses a GEMV kernel; M <= 32 with small weights a kernel that
    streams them straight into mma.sync fragments; everything else, on compute capability
    9.0 (H100/H200), a wgmma kernel fed by TMA, elsewhere a tiled mma.sync kernel. Tiled
    kernels on sm_90 split K over a thread-block cluster when the output has too few tiles
    to fill the GPU. The plan depends only on (M rounded up to its tile, N, K, dtype,
    device, alignment of a and w), so equal inputs give bit-identical outputs and a row's
    result does not change when the batch is padded to a capture size. It can change with
    M across those kernels' boundaries; invariant=True makes a row's bits independent of M
    (batch invariance: the tiled kernel at every M, its K split fixed by (N, K)), at a cost
    in speed at small and at large M.
    """
    launch_gemm(a, w, out=out, bias=bias, stream=stream, invariant=bool(invariant))
    return out


def patch_embed(patches: Any, weight: Any, *, out: Any, bias: Any = None, stream: Any = None) -> Any:
    """Patch embedding as a GEMM: patches [T, C*p*p] @ weight[H, C*p*p].T (+ bias) -> out [T, H]
    (unfold_patches makes the rows; weight is a Conv2d weight [H, C, p, p] reshaped)."""
    _PATCH_EMBED.bind(patches=patches, weight=weight, out=out, bias=bias).on_device()  # errors in its own names
    return gemm(patches, weight, out=out, bias=bias, stream=stream)
