"""Python launchers for the CUDA kernels (see .plan API "Kernels").

Every launcher takes an explicit keyword `out=` (where it has an output), an optional
`stream` (None: CuPy's current stream), returns `out`, and can be captured into a CUDA
graph: it allocates nothing, never synchronizes and reads no device value on the host.

Arguments are checked from their shape, dtype and strides alone, before anything touches
the device, and bad ones raise ValueError/TypeError saying what was expected.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from cgraph.cuda.device import cupy
from cgraph.kernels import reference
from cgraph.kernels.gemm_plan import WGMMA_TILES, GemmPlan, plan_gemm
from cgraph.kernels.loader import get_kernel
from cgraph.kernels.tensor_map import encode_2d

_TAGS = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}
FLOATS = ("float16", "bfloat16", "float32")
HALVES = ("float16", "bfloat16")


# ---------------------------------------------------------------- argument checks (no device)
def _dtype(x: Any) -> str:
    return str(np.dtype(x.dtype)) if not hasattr(x.dtype, "name") else str(x.dtype.name)


def _check_array(name: str, x: Any) -> None:
    if not all(hasattr(x, a) for a in ("shape", "dtype", "strides")):
        raise TypeError(f"{name} must be an array (cupy.ndarray), got {type(x).__name__}")


def _check_dtype(name: str, x: Any, allowed: Sequence[str]) -> str:
    dt = _dtype(x)
    if dt not in allowed:
        raise TypeError(f"{name} has dtype {dt}; expected one of {', '.join(allowed)} "
                        f"(convert with .astype(...))")
    return dt


def _check_same_dtype(name: str, x: Any, dt: str) -> None:
    if _dtype(x) != dt:
        raise TypeError(f"{name} has dtype {_dtype(x)} but must match the input dtype {dt}")


def _check_shape(name: str, x: Any, shape: Sequence[int | None], hint: str = "") -> None:
    got = tuple(x.shape)
    ok = len(got) == len(shape) and all(e is None or g == e for g, e in zip(got, shape))
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
        raise ValueError(f"{name} has shape {list(got)}; expected {want}{hint}")


def _c_strides(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for d in reversed(tuple(shape)):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(out))


def _check_contiguous(name: str, x: Any) -> None:
    shape, strides = tuple(x.shape), tuple(x.strides)
    want = _c_strides(shape, np.dtype(x.dtype).itemsize)
    if any(d > 1 and s != w for d, s, w in zip(shape, strides, want)):
        raise ValueError(f"{name} must be C-contiguous (strides {strides}, expected {want}); "
                         f"pass cupy.ascontiguousarray({name}) outside the captured region")


def _row_stride(name: str, x: Any) -> int:
    """Row stride in elements of an array whose rows may be strided but whose inner dims are contiguous."""
    item = np.dtype(x.dtype).itemsize
    shape, strides = tuple(x.shape), tuple(x.strides)
    want = _c_strides(shape[1:], item)
    if any(d > 1 and s != w for d, s, w in zip(shape[1:], strides[1:], want)):
        raise ValueError(f"{name} must be contiguous within each row (strides {strides}); rows may "
                         f"be strided (e.g. a view of a fused qkv buffer), inner dims may not")
    if strides[0] % item or strides[0] < 0:
        raise ValueError(f"{name} row stride {strides[0]} bytes is not a positive multiple of its itemsize {item}")
    return strides[0] // item if shape[0] > 1 else math.prod(shape[1:])


def _check_int32_vector(name: str, x: Any, length: int | None = None) -> None:
    _check_array(name, x)
    _check_dtype(name, x, ("int32",))
    _check_shape(name, x, (length,))
    _check_contiguous(name, x)


# ---------------------------------------------------------------- device side
def _ptr(name: str, x: Any) -> int:
    if not hasattr(x, "__cuda_array_interface__"):
        raise TypeError(f"{name} must be a CuPy array on the GPU, got {type(x).__module__}."
                        f"{type(x).__name__}; move it with cupy.asarray(...) before launching")
    return int(x.data.ptr)


def _stream(stream: Any) -> Any:
    return stream if stream is not None else cupy().cuda.get_current_stream()


def _aligned(*ptrs: int) -> bool:
    return all(p % 16 == 0 for p in ptrs)


def _vec(dt: str) -> int:
    return 8 if dt in HALVES else 4


def _threads(work: int, cap: int = 256) -> int:
    return int(min(cap, max(32, -(-work // 32) * 32)))


def _launch(family: str, name: str, grid, block, args, stream, smem: int = 0) -> None:
    kern = get_kernel(family, name, dynamic_smem=smem)
    kern(tuple(int(g) for g in grid), (int(block),), args, shared_mem=int(smem), stream=_stream(stream))


_i32, _i64, _f32 = np.int32, np.int64, np.float32


# ---------------------------------------------------------------- launchers
def embedding(ids: Any, table: Any, *, out: Any, stream: Any = None) -> Any:
    """out[t, :] = table[ids[t], :]; ids outside [0, V) give zero rows (padding)."""
    _check_array("table", table)
    dt = _check_dtype("table", table, FLOATS)
    if len(table.shape) != 2:
        raise ValueError(f"table must be 2-D [V, H], got shape {list(table.shape)}")
    vocab, hidden = table.shape
    _check_array("ids", ids)
    _check_dtype("ids", ids, ("int32",))
    if len(ids.shape) != 1:
        raise ValueError(f"ids must be 1-D [T] int32, got shape {list(ids.shape)}")
    t = ids.shape[0]
    _check_array("out", out)
    _check_same_dtype("out", out, dt)
    _check_shape("out", out, (t, hidden))
    for n, a in (("ids", ids), ("table", table), ("out", out)):
        _check_contiguous(n, a)
    p = [_ptr("ids", ids), _ptr("table", table), _ptr("out", out)]
    if t == 0 or hidden == 0:
        return out
    v = _vec(dt) if hidden % _vec(dt) == 0 and _aligned(p[1], p[2]) else 1
    threads = _threads(hidden // v)
    _launch("embedding", f"embedding_{_TAGS[dt]}_v{v}", (t, -(-hidden // v // threads)), threads,
            (out, ids, table, _i32(vocab), _i32(hidden)), stream)
    return out


def rms_norm(x: Any, weight: Any, eps: float, *, out: Any, residual: Any = None, stream: Any = None) -> Any:
    """RMSNorm over the last dim of x [T, H]: out = x / rms(x) * weight.

    With `residual` [T, H]: residual <- x + residual (in place, rounded to the dtype) and
    out = norm(residual) * weight (the fused pre-norm residual add of a decoder layer).
    """
    _check_array("x", x)
    dt = _check_dtype("x", x, FLOATS)
    if len(x.shape) != 2:
        raise ValueError(f"x must be 2-D [T, H], got shape {list(x.shape)}")
    t, hidden = x.shape
    _check_array("weight", weight)
    _check_same_dtype("weight", weight, dt)
    _check_shape("weight", weight, (hidden,))
    _check_array("out", out)
    _check_same_dtype("out", out, dt)
    _check_shape("out", out, (t, hidden))
    arrays = [("x", x), ("weight", weight), ("out", out)]
    if residual is not None:
        _check_array("residual", residual)
        _check_same_dtype("residual", residual, dt)
        _check_shape("residual", residual, (t, hidden))
        arrays.append(("residual", residual))
    for n, a in arrays:
        _check_contiguous(n, a)
    if not (isinstance(eps, (float, int)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    ptrs = [_ptr(n, a) for n, a in arrays]
    if t == 0:
        return out
    v = _vec(dt) if hidden % _vec(dt) == 0 and _aligned(*ptrs) else 1
    # up to four 16-byte chunks per thread stay in registers: small blocks, several rows per SM
    threads = _threads(-(-hidden // (4 * v)), cap=1024)
    res = residual if residual is not None else x
    _launch("norm", f"rms_norm_{_TAGS[dt]}_v{v}", (t,), threads,
            (out, x, res, weight, _i32(hidden), _f32(eps), _i32(residual is not None)), stream)
    return out


def make_cos_sin_cache(max_pos: int, head_size: int, base: float = 10000.0) -> Any:
    """CuPy float32 [max_pos, head_size] = [cos | sin] for neox rotary (host-side set-up)."""
    if max_pos < 1:
        raise ValueError(f"max_pos must be >= 1, got {max_pos}")
    return cupy().asarray(reference.cos_sin_cache(max_pos, head_size, base))


def rotary_embedding(positions: Any, q: Any, k: Any, cos_sin_cache: Any, *, head_size: int,
                     stream: Any = None) -> tuple[Any, Any]:
    """Neox rotary embedding, in place on q [T, Hq*D] and k [T, Hk*D] (also [T, H, D]).

    Rows may be strided (views into a fused qkv buffer). cos_sin_cache is float32
    [max_pos, D] = [cos | sin] (make_cos_sin_cache). Positions outside [0, max_pos) leave the
    row untouched. Returns (q, k).
    """
    if not isinstance(head_size, (int, np.integer)) or head_size < 2 or head_size % 2:
        raise ValueError(f"head_size must be a positive even int, got {head_size!r}")
    _check_int32_vector("positions", positions)
    t = positions.shape[0]
    _check_array("q", q)
    dt = _check_dtype("q", q, FLOATS)
    _check_array("k", k)
    _check_same_dtype("k", k, dt)
    widths = []
    for n, a in (("q", q), ("k", k)):
        if len(a.shape) < 2 or a.shape[0] != t:
            raise ValueError(f"{n} has shape {list(a.shape)}; expected [T={t}, heads*{head_size}] or [T, heads, {head_size}]")
        w = math.prod(a.shape[1:])
        if w % head_size:
            raise ValueError(f"{n} row width {w} is not a multiple of head_size {head_size}")
        widths.append(w)
    qs, ks = _row_stride("q", q), _row_stride("k", k)
    _check_array("cos_sin_cache", cos_sin_cache)
    _check_dtype("cos_sin_cache", cos_sin_cache, ("float32",))
    _check_shape("cos_sin_cache", cos_sin_cache, (None, head_size),
                 " (make it with make_cos_sin_cache(max_pos, head_size))")
    _check_contiguous("cos_sin_cache", cos_sin_cache)
    ptrs = [_ptr("q", q), _ptr("k", k)]
    _ptr("positions", positions)
    _ptr("cos_sin_cache", cos_sin_cache)
    if t == 0:
        return q, k
    vec = _vec(dt)
    v = vec if (head_size // 2) % vec == 0 and qs % vec == 0 and ks % vec == 0 and _aligned(*ptrs) else 1
    nq, nk = widths[0] // head_size, widths[1] // head_size
    threads = _threads((nq + nk) * (head_size // 2 // v))
    _launch("rotary", f"rotary_{_TAGS[dt]}_v{v}", (t,), threads,
            (positions, q, k, cos_sin_cache, _i32(nq), _i32(nk), _i32(head_size), _i64(qs), _i64(ks),
             _i32(cos_sin_cache.shape[0])), stream)
    return q, k


def silu_and_mul(x: Any, *, out: Any, stream: Any = None) -> Any:
    """x [T, 2I] -> out [T, I] = silu(x[:, :I]) * x[:, I:]."""
    _check_array("x", x)
    dt = _check_dtype("x", x, FLOATS)
    if len(x.shape) != 2 or x.shape[1] % 2:
        raise ValueError(f"x must be 2-D [T, 2*I] with an even last dim, got shape {list(x.shape)}")
    t, i = x.shape[0], x.shape[1] // 2
    _check_array("out", out)
    _check_same_dtype("out", out, dt)
    _check_shape("out", out, (t, i))
    _check_contiguous("x", x)
    _check_contiguous("out", out)
    ptrs = [_ptr("x", x), _ptr("out", out)]
    if t == 0 or i == 0:
        return out
    v = _vec(dt) if i % _vec(dt) == 0 and _aligned(*ptrs) else 1
    threads = _threads(i // v)
    _launch("activation", f"silu_and_mul_{_TAGS[dt]}_v{v}", (t, -(-(i // v) // threads)), threads,
            (out, x, _i32(i)), stream)
    return out


_DEVICE_FACTS: dict[int, tuple[int, bool, bool]] = {}


def _device_facts() -> tuple[int, bool, bool]:
    """(multiprocessor count, supports clusters, runs the sm_90a wgmma kernels) of the current device."""
    cp = cupy()
    dev = cp.cuda.Device()
    facts = _DEVICE_FACTS.get(dev.id)
    if facts is None:
        sms = int(dev.attributes["MultiProcessorCount"])
        cc = int(dev.compute_capability)
        facts = (sms, cc >= 90, cc == 90)
        _DEVICE_FACTS[dev.id] = facts
    return facts


_TENSOR_MAPS: dict[tuple[int, int, int, int], Any] = {}


def _tensor_map(ptr: int, rows: int, cols: int, box_rows: int) -> Any:
    """Tensor map of a [rows, cols] matrix at ptr; a pure function of its key, so cached
    (bounded: cleared when it grows past 4096 entries)."""
    key = (ptr, rows, cols, box_rows)
    tmap = _TENSOR_MAPS.get(key)
    if tmap is None:
        if len(_TENSOR_MAPS) >= 4096:
            _TENSOR_MAPS.clear()
        tmap = _TENSOR_MAPS[key] = encode_2d(ptr, rows, cols, box_rows)
    return tmap


def _check_gemm(a: Any, w: Any, out: Any, bias: Any) -> tuple[str, int, int, int]:
    _check_array("a", a)
    dt = _check_dtype("a", a, HALVES)
    _check_array("w", w)
    _check_same_dtype("w", w, dt)
    if len(a.shape) != 2 or len(w.shape) != 2:
        raise ValueError(f"a must be [M, K] and w [N, K] (Linear layout); got {list(a.shape)} and {list(w.shape)}")
    m, k = a.shape
    n, k2 = w.shape
    if k2 != k:
        raise ValueError(f"w has shape {list(w.shape)}; its K={k2} must equal a's K={k} (w is [N, K], out = a @ w.T)")
    if k < 1 or n < 1:
        raise ValueError(f"GEMM needs K >= 1 and N >= 1, got K={k}, N={n}")
    _check_array("out", out)
    _check_same_dtype("out", out, dt)
    _check_shape("out", out, (m, n))
    arrays = [("a", a), ("w", w), ("out", out)]
    if bias is not None:
        _check_array("bias", bias)
        _check_same_dtype("bias", bias, dt)
        _check_shape("bias", bias, (n,))
        arrays.append(("bias", bias))
    for name, arr in arrays:
        _check_contiguous(name, arr)
    return dt, m, n, k


def _gemm_launch(a: Any, w: Any, out: Any, bias: Any, stream: Any, plan: GemmPlan | None = None,
                 **force: Any) -> GemmPlan | None:
    dt, m, n, k = _check_gemm(a, w, out, bias)
    pa, pw = _ptr("a", a), _ptr("w", w)
    _ptr("out", out)
    if bias is not None:
        _ptr("bias", bias)
    if m == 0:
        return None
    if plan is None:
        sms, cluster, wgmma = _device_facts()
        plan = plan_gemm(m, n, k, aligned=(k % 8 == 0 and _aligned(pa, pw)), sm_count=sms,
                         cluster=cluster, wgmma=wgmma, **force)
    tag = _TAGS[dt]
    has_bias = _i32(bias is not None)
    b = bias if bias is not None else out
    if plan.kind == "wgmma":
        bm, bn, _ = WGMMA_TILES[plan.kernel.split("_s")[0]]
        a_box = min(bm, -(-m // 8) * 8)  # the kernel derives the same box from M
        args = (out, _tensor_map(pa, m, k, a_box), _tensor_map(pw, n, k, bn), b, has_bias,
                _i32(m), _i32(n), _i32(k), _i32(plan.ktiles_per_split))
        _launch("gemm_sm90", f"gemm_{tag}_{plan.kernel}", plan.grid, plan.block, args, stream, smem=plan.smem)
        return plan
    if plan.kind == "tile":
        name = f"gemm_{tag}_{plan.kernel}"
        args = (out, a, w, b, has_bias, _i32(m), _i32(n), _i32(k), _i32(plan.ktiles_per_split))
    elif plan.kind in ("gemv", "stream"):  # the streaming kernel is gemv_<dt>_m8
        name = f"gemv_{tag}_{plan.kernel}"
        args = (out, a, w, b, has_bias, _i32(m), _i32(n), _i32(k))
    else:
        name = f"gemm_fallback_{tag}"
        args = (out, a, w, b, has_bias, _i32(m), _i32(n), _i32(k))
    _launch("gemm", name, plan.grid, plan.block, args, stream, smem=plan.smem)
    return plan


def gemm(a: Any, w: Any, *, out: Any, bias: Any = None, stream: Any = None) -> Any:
    """out[M, N] = a[M, K] @ w[N, K].T (+ bias[N]) on tensor cores, fp32 accumulation.

    float16 or bfloat16, all C-contiguous. Any M >= 1 (M = 0 launches nothing). Fast paths
    need K % 8 == 0 and 16-byte aligned a and w; otherwise a slower fallback kernel runs.
    M <= 4 uses a GEMV kernel; M <= 32 with small weights a kernel that streams them
    straight into mma.sync fragments; everything else, on compute capability 9.0
    (H100/H200), a wgmma kernel fed by TMA, elsewhere a tiled mma.sync kernel. Tiled kernels
    on sm_90 split K over a thread-block cluster when the output has too few tiles to fill
    the GPU. The plan depends only on (M rounded up to its tile, N, K, dtype, device), so
    equal inputs give bit-identical outputs and a row's result does not change when the
    batch is padded to a capture size.
    """
    _gemm_launch(a, w, out, bias, stream)
    return out


def patch_embed(patches: Any, weight: Any, *, out: Any, bias: Any = None, stream: Any = None) -> Any:
    """Patch embedding as a GEMM: patches [T, C*p*p] @ weight[H, C*p*p].T (+ bias) -> out [T, H]."""
    return gemm(patches, weight, out=out, bias=bias, stream=stream)


def unfold_patches(image: Any, patch: int) -> Any:
    """[C, H, W] image (NumPy or CuPy) -> [(H/p)*(W/p), C*p*p] rows of patches (host-side helper).

    Patches in row-major order over the patch grid; features ordered (channel, y, x), which
    matches a Conv2d weight [H, C, p, p] reshaped to [H, C*p*p]. Not for use inside capture.
    """
    if len(getattr(image, "shape", ())) != 3:
        raise ValueError(f"image must be [C, H, W], got shape {list(getattr(image, 'shape', ()))}")
    c, h, w = image.shape
    if not isinstance(patch, (int, np.integer)) or patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch={patch!r} must be a positive int dividing H={h} and W={w}")
    xp = cupy() if hasattr(image, "__cuda_array_interface__") else np
    # move raw bit patterns: a pure permutation, so any dtype (bfloat16 too) works
    bits = xp.ascontiguousarray(image).view(f"uint{8 * np.dtype(image.dtype).itemsize}")
    x = bits.reshape(c, h // patch, patch, w // patch, patch).transpose(1, 3, 0, 2, 4)
    x = xp.ascontiguousarray(x.reshape((h // patch) * (w // patch), c * patch * patch))
    return x.view(image.dtype)


def reshape_and_cache(k: Any, v: Any, k_cache: Any, v_cache: Any, slot_mapping: Any, *, stream: Any = None) -> None:
    """Write k, v [T, Hkv, D] into paged caches [num_blocks, block_size, Hkv, D] at slot_mapping[t].

    slot = block * block_size + offset; slot < 0 (padding) is skipped. k/v rows may be
    strided (views of a fused qkv buffer).
    """
    _check_array("k_cache", k_cache)
    dt = _check_dtype("k_cache", k_cache, FLOATS)
    if len(k_cache.shape) != 4:
        raise ValueError(f"k_cache must be [num_blocks, block_size, Hkv, D], got shape {list(k_cache.shape)}")
    nb, bs, hkv, d = k_cache.shape
    _check_array("v_cache", v_cache)
    _check_same_dtype("v_cache", v_cache, dt)
    _check_shape("v_cache", v_cache, tuple(k_cache.shape))
    _check_int32_vector("slot_mapping", slot_mapping)
    t = slot_mapping.shape[0]
    for n, a in (("k", k), ("v", v)):
        _check_array(n, a)
        _check_same_dtype(n, a, dt)
        _check_shape(n, a, (t, hkv, d), " (T from slot_mapping, Hkv and D from the cache)")
    ks, vs = _row_stride("k", k), _row_stride("v", v)
    _check_contiguous("k_cache", k_cache)
    _check_contiguous("v_cache", v_cache)
    ptrs = [_ptr("k", k), _ptr("v", v), _ptr("k_cache", k_cache), _ptr("v_cache", v_cache)]
    _ptr("slot_mapping", slot_mapping)
    if t == 0:
        return None
    row = hkv * d
    vec = _vec(dt)
    v_ = vec if row % vec == 0 and ks % vec == 0 and vs % vec == 0 and _aligned(*ptrs) else 1
    _launch("cache", f"reshape_and_cache_{_TAGS[dt]}_v{v_}", (t,), _threads(row // v_),
            (k, v, k_cache, v_cache, slot_mapping, _i32(row), _i64(ks), _i64(vs), _i64(nb * bs)), stream)
    return None


def _check_attention(q: Any, hkv: int, ks: int, vs: int, scale: Any) -> int:
    """Geometry checks shared by both attention launchers; returns q's row stride."""
    t, hq, d = q.shape
    qs = _row_stride("q", q)
    if d % 8 or d > 256:
        raise ValueError(f"head size D={d} must be a multiple of 8 and at most 256")
    if hq % hkv:
        raise ValueError(f"query heads Hq={hq} must be a multiple of KV heads Hkv={hkv} (GQA)")
    if qs % 8 or ks % 8 or vs % 8:
        raise ValueError(f"q/k/v row strides ({qs}, {ks}, {vs} elements) must be multiples of 8")
    if not isinstance(scale, (float, int)):
        raise TypeError(f"scale must be a float, got {type(scale).__name__}")
    return qs


def _attention_launch(q, kb, vb, out, *, hkv: int, ks: int, vs: int, int_args: tuple, mode: int,
                      causal: bool, scale: float, stream: Any) -> None:
    t, hq, d = q.shape
    dt = _dtype(q)
    qs = _check_attention(q, hkv, ks, vs, scale)
    ptrs = [_ptr("q", q), _ptr("k", kb), _ptr("v", vb), _ptr("out", out)]
    if not _aligned(*ptrs):
        raise ValueError("q, k, v and out must start at 16-byte aligned addresses")
    if t == 0:
        return
    tg = next(g for g in (8, 16, 32) if g * 8 >= d)
    group = hq // hkv
    gb = next(g for g in (8, 4, 2, 1) if group % g == 0)
    warps = 8 if gb * tg <= 128 else 4
    _launch("attention", f"attention_{_TAGS[dt]}_tg{tg}_gb{gb}", (t, hq // gb), warps * 32,
            (out, q, kb, vb, *int_args, _i32(mode), _i32(bool(causal)), _i32(hq), _i32(hkv), _i32(d),
             _i64(qs), _i64(ks), _i64(vs), _f32(scale)), stream)


_LOG2E = 1.4426950408889634
_FLASH_HEAD_SIZES = (64, 128)  # tensor-core kernels; other head sizes use the CUDA-core kernel
_FLASH_ROWS = 64  # query rows per CTA of the prefill kernel
_FLASH_STAGES, _DECODE_STAGES = 2, 3  # K/V tiles of 64 keys in flight (see kernels/attention.cu)


def _flash_ready(q, kb, vb, out, *, hkv: int, ks: int, vs: int, scale: float) -> tuple[int, str]:
    """Checks shared by the tensor-core launches; returns (q row stride, dtype tag)."""
    qs = _check_attention(q, hkv, ks, vs, scale)
    if not _aligned(_ptr("q", q), _ptr("k", kb), _ptr("v", vb), _ptr("out", out)):
        raise ValueError("q, k, v and out must start at 16-byte aligned addresses")
    return qs, _TAGS[_dtype(q)]


def _flash_launch(q, kb, vb, out, *, hkv: int, ks: int, vs: int, paged: tuple, starts: Any, num_seqs: Any,
                  n_seg_cap: int, mode: int, causal: bool, scale: float, stream: Any,
                  skip_single: bool = False) -> None:
    """FA2-style prefill over segments (mode 1: paged, 2: contiguous varlen).

    skip_single leaves the rows of one-query segments untouched (the decode kernel writes them).

    The grid is sized from host bounds only: every segment needs ceil(len/64) tiles, the
    padding rows past the last segment need the rest, and sum(ceil) <= ceil(T/64) + n_seg.
    """
    t, hq, d = q.shape
    qs, tag = _flash_ready(q, kb, vb, out, hkv=hkv, ks=ks, vs=vs, scale=scale)
    if t == 0:
        return
    block_tables, max_blocks, block_size, seq_lens = paged
    grid = (-(-t // _FLASH_ROWS) + n_seg_cap + 1, hq)
    smem = (_FLASH_ROWS + 2 * _FLASH_STAGES * 64) * d * 2
    _prefer_shared(f"flash_{tag}_d{d}", smem)
    _launch("attention", f"flash_{tag}_d{d}", grid, 128,
            (out, q, kb, vb, block_tables, _i32(max_blocks), _i32(block_size), seq_lens, starts, num_seqs,
             _i32(n_seg_cap), _i32(mode), _i32(bool(causal)), _i32(bool(skip_single)), _i32(t), _i32(hq),
             _i32(hkv), _i64(qs), _i64(ks), _i64(vs), _f32(scale * _LOG2E)), stream, smem=smem)


_CARVEOUT_SET: set[tuple[int, str]] = set()


def _prefer_shared(name: str, smem: int) -> None:
    """Ask once per kernel for the largest shared-memory carveout, so that two CTAs of ~100 KB
    share an SM (a function attribute, not a stream operation: safe before or during capture)."""
    key = (cupy().cuda.Device().id, name)
    if key not in _CARVEOUT_SET:
        get_kernel("attention", name, dynamic_smem=smem).preferred_shared_memory_carveout = 100
        _CARVEOUT_SET.add(key)


#: decode kernel variants: (KV heads per CTA, warps per head); keys per tile = 16 * warps per head
_DECODE_VARIANTS = {"s": (1, 4), "h2": (2, 4), "h2k32": (2, 2), "h4k32": (4, 2)}


def _default_decode_variant(hkv: int) -> str:
    """The decode kernel used unless one is forced: depends on the head layout only.

    Never on the batch: a sequence's output is then the same bits at any batch size or
    padding, in the decode launch and in the mixed launch alike, which is what lets every
    graph mode generate exactly the eager tokens. Two KV heads per CTA make each key one
    contiguous run (H200 tuning run, notebooks/results/kernels_attention.md, Hkv=8 D=128:
    h2k32 88% / 84% of copy bandwidth at 64 x 4096 / 256 x 1024 keys; s1 73% / 69%). Key
    splits over a cluster ("s2".."s8") cut batch-1 latency but would make the result depend
    on the batch size, so they are only used when forced.
    """
    return "h2k32" if hkv % 2 == 0 else "s1"


def _flash_decode_launch(q, k_cache, v_cache, out, *, block_tables, seq_lens, query_start_loc, num_seqs,
                         scale: float, stream: Any, variant: str | None = None, mixed: bool = False) -> None:
    """Split-KV tensor-core decode; `variant` ("s1".."s8", "h2", "h2k32", "h4k32") forces a
    kernel (tests and the benchmark); None picks the batch-independent default.

    mixed=False: row i is sequence i (every q_len is 1). mixed=True: one CTA per sequence row,
    serving only the sequences whose q_len is 1, at their row query_start_loc[s].
    """
    t, hq, d = q.shape
    _, bs, hkv, _ = k_cache.shape
    s, max_blocks = block_tables.shape
    qs, tag = _flash_ready(q, k_cache, v_cache, out, hkv=hkv, ks=hkv * d, vs=hkv * d, scale=scale)
    if t == 0 or s == 0:
        return
    variant = variant or _default_decode_variant(hkv)
    kind, splits = ("s", int(variant[1:])) if variant[0] == "s" else (variant, 1)
    heads, wph = _DECODE_VARIANTS[kind]
    if hkv % heads:
        raise ValueError(f"decode variant {variant!r} needs Hkv={hkv} to be a multiple of {heads}")
    name = f"flash_decode_{tag}_d{d}_" + (f"s{splits}" if kind == "s" else kind)
    smem = heads * (16 + 2 * _DECODE_STAGES * 16 * wph) * d * 2
    _prefer_shared(name, smem)
    _launch("attention", name, (splits, hkv // heads, s if mixed else t), 32 * heads * wph,
            (out, q, k_cache, v_cache, block_tables, _i32(max_blocks), _i32(bs), seq_lens, query_start_loc,
             num_seqs, _i32(s), _i32(bool(mixed)), _i32(hq), _i32(hkv), _i64(qs), _f32(scale * _LOG2E)),
            stream, smem=smem)


def paged_attention(q: Any, k_cache: Any, v_cache: Any, *, out: Any, block_tables: Any, seq_lens: Any,
                    query_start_loc: Any, num_seqs: Any, max_query_len: int, scale: float,
                    stream: Any = None) -> Any:
    """Causal attention of q [T, Hq, D] over paged caches [num_blocks, block_size, Hkv, D].

    block_tables [S, max_blocks], seq_lens [S] (context including this step's tokens),
    query_start_loc [S+1] and num_seqs (1,) are int32 device arrays read on the device, so
    one captured graph serves any lengths. Query j of sequence s sits at position
    seq_lens[s] - q_len + j and sees keys 0..that position. max_query_len (host int) only
    picks the path: 1 means decode (row i is sequence i). Rows at or past
    query_start_loc[num_seqs], and sequences with seq_lens 0, are written as zeros.

    Batch invariance: for head sizes 64 and 128 a one-query sequence is always computed by
    the same decode kernel (alone in the decode path; next to the prefill kernel in the mixed
    path), whose choice depends on no batch property, so its row is bit-identical at any
    batch size, padding or path. That is what lets a padded graph replay match eager exactly.
    """
    _check_array("q", q)
    dt = _check_dtype("q", q, HALVES)
    if len(q.shape) != 3:
        raise ValueError(f"q must be [T, Hq, D], got shape {list(q.shape)}")
    t, hq, d = q.shape
    _check_array("k_cache", k_cache)
    _check_same_dtype("k_cache", k_cache, dt)
    if len(k_cache.shape) != 4 or k_cache.shape[3] != d:
        raise ValueError(f"k_cache must be [num_blocks, block_size, Hkv, D={d}], got shape {list(k_cache.shape)}")
    nb, bs, hkv, _ = k_cache.shape
    _check_array("v_cache", v_cache)
    _check_same_dtype("v_cache", v_cache, dt)
    _check_shape("v_cache", v_cache, tuple(k_cache.shape))
    _check_array("out", out)
    _check_same_dtype("out", out, dt)
    _check_shape("out", out, (t, hq, d))
    for n, a in (("out", out), ("k_cache", k_cache), ("v_cache", v_cache)):
        _check_contiguous(n, a)
    _check_array("block_tables", block_tables)
    _check_dtype("block_tables", block_tables, ("int32",))
    if len(block_tables.shape) != 2:
        raise ValueError(f"block_tables must be [S, max_blocks] int32, got shape {list(block_tables.shape)}")
    _check_contiguous("block_tables", block_tables)
    s, max_blocks = block_tables.shape
    _check_int32_vector("seq_lens", seq_lens, s)
    _check_int32_vector("query_start_loc", query_start_loc, s + 1)
    _check_int32_vector("num_seqs", num_seqs, 1)
    if not isinstance(max_query_len, (int, np.integer)) or max_query_len < 1:
        raise ValueError(f"max_query_len must be a host int >= 1, got {max_query_len!r}")
    _check_attention(q, hkv, hkv * d, hkv * d, scale)
    for n, a in (("block_tables", block_tables), ("seq_lens", seq_lens),
                 ("query_start_loc", query_start_loc), ("num_seqs", num_seqs)):
        _ptr(n, a)
    # The decode kernel serves every one-query sequence, in both launches, so that a decode
    # row computes the same bits whether its step ran the decode or the mixed path.
    decode_kernel = d in _FLASH_HEAD_SIZES and hq // hkv <= 16 and max(t, s) <= 65535  # rows on grid z
    if decode_kernel and max_query_len == 1:
        _flash_decode_launch(q, k_cache, v_cache, out, block_tables=block_tables, seq_lens=seq_lens,
                             query_start_loc=query_start_loc, num_seqs=num_seqs, scale=scale, stream=stream)
        return out
    if d in _FLASH_HEAD_SIZES:
        _flash_launch(q, k_cache, v_cache, out, hkv=hkv, ks=hkv * d, vs=hkv * d,
                      paged=(block_tables, max_blocks, bs, seq_lens), starts=query_start_loc, num_seqs=num_seqs,
                      n_seg_cap=s, mode=1, causal=True, scale=scale, stream=stream, skip_single=decode_kernel)
        if decode_kernel:
            _flash_decode_launch(q, k_cache, v_cache, out, block_tables=block_tables, seq_lens=seq_lens,
                                 query_start_loc=query_start_loc, num_seqs=num_seqs, scale=scale,
                                 stream=stream, mixed=True)
        return out
    _attention_launch(q, k_cache, v_cache, out, hkv=hkv, ks=hkv * d, vs=hkv * d,
                      int_args=(block_tables, _i32(max_blocks), _i32(bs), seq_lens, query_start_loc,
                                num_seqs, query_start_loc, _i32(0)),
                      mode=0 if max_query_len == 1 else 1, causal=True, scale=scale, stream=stream)
    return out


def varlen_attention(q: Any, k: Any, v: Any, *, out: Any, cu_seqlens: Any, max_seqlen: int, causal: bool,
                     scale: float, stream: Any = None) -> Any:
    """Attention within each segment [cu_seqlens[i], cu_seqlens[i+1]) of q [T, Hq, D], k/v [T, Hkv, D].

    causal=True for a decoder prefill, False for the vision encoder. cu_seqlens [n+1] int32
    lives on the device; rows past cu_seqlens[n] are written as zeros. Rows of q/k/v may be
    strided. max_seqlen (host int, >= the longest segment) is accepted for API symmetry; the
    kernel does not need it.
    """
    _check_array("q", q)
    dt = _check_dtype("q", q, HALVES)
    if len(q.shape) != 3:
        raise ValueError(f"q must be [T, Hq, D], got shape {list(q.shape)}")
    t, hq, d = q.shape
    _check_array("k", k)
    _check_same_dtype("k", k, dt)
    if len(k.shape) != 3 or k.shape[0] != t or k.shape[2] != d:
        raise ValueError(f"k has shape {list(k.shape)}; expected [T={t}, Hkv, D={d}]")
    hkv = k.shape[1]
    _check_array("v", v)
    _check_same_dtype("v", v, dt)
    _check_shape("v", v, tuple(k.shape))
    _check_array("out", out)
    _check_same_dtype("out", out, dt)
    _check_shape("out", out, (t, hq, d))
    _check_contiguous("out", out)
    _check_array("cu_seqlens", cu_seqlens)
    _check_dtype("cu_seqlens", cu_seqlens, ("int32",))
    if len(cu_seqlens.shape) != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens must be [n+1] int32 with n >= 1, got shape {list(cu_seqlens.shape)}")
    _check_contiguous("cu_seqlens", cu_seqlens)
    if not isinstance(max_seqlen, (int, np.integer)) or max_seqlen < 0:
        raise ValueError(f"max_seqlen must be a host int >= 0, got {max_seqlen!r}")
    ks, vs = _row_stride("k", k), _row_stride("v", v)
    _check_attention(q, hkv, ks, vs, scale)
    _ptr("cu_seqlens", cu_seqlens)
    n = cu_seqlens.shape[0] - 1
    if d in _FLASH_HEAD_SIZES:
        _flash_launch(q, k, v, out, hkv=hkv, ks=ks, vs=vs, paged=(cu_seqlens, 0, 1, cu_seqlens), starts=cu_seqlens,
                      num_seqs=cu_seqlens, n_seg_cap=n, mode=2, causal=causal, scale=scale, stream=stream)
        return out
    _attention_launch(q, k, v, out, hkv=hkv, ks=ks, vs=vs,
                      int_args=(cu_seqlens, _i32(0), _i32(1), cu_seqlens, cu_seqlens, cu_seqlens,
                                cu_seqlens, _i32(n)),
                      mode=2, causal=causal, scale=scale, stream=stream)
    return out


def argmax(logits: Any, *, out: Any, stream: Any = None) -> Any:
    """Greedy sampling: out[t] = argmax(logits[t]) (int32; ties -> lowest index)."""
    _check_array("logits", logits)
    dt = _check_dtype("logits", logits, FLOATS)
    if len(logits.shape) != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be [T, V] with V >= 1, got shape {list(logits.shape)}")
    t, vocab = logits.shape
    _check_array("out", out)
    _check_dtype("out", out, ("int32",))
    _check_shape("out", out, (t,))
    _check_contiguous("logits", logits)
    _check_contiguous("out", out)
    p = _ptr("logits", logits)
    _ptr("out", out)
    if t == 0:
        return out
    v = _vec(dt) if vocab % _vec(dt) == 0 and _aligned(p) else 1
    _launch("sampling", f"argmax_{_TAGS[dt]}_v{v}", (t,), _threads(-(-vocab // v), cap=1024),
            (logits, out, _i32(vocab)), stream)
    return out
