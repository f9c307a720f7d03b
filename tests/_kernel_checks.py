"""Helpers of the kernel GPU tests: dtypes, device <-> host copies, poisoned outputs, and an
element-wise closeness check whose tolerances follow from how each kernel computes.

Tolerances (``assert_close``). Inputs are rounded to the storage dtype on the host first,
so the float64 reference sees exactly the kernel's inputs. A kernel then computes in fp32
and rounds each output once to the storage dtype, so an element's error is at most
u * |value| (u, the unit roundoff: 2**-11 fp16, 2**-8 bf16, 2**-24 fp32) plus the fp32
error of the computation before it: ``fp32_ops`` roundings of u32 = 2**-24 relative each,
plus any absolute term ``atol`` the relative bound cannot cover (a sum's cancellation). The
check is |got - want| <= 2 * (u + fp32_ops * u32) * |want| + atol for every element: the
factor 2 because the rounding and the fp32 error add and a value near a rounding boundary
may round either way, which keeps the bound within 2-3x of the worst error one can
construct while one wrong element anywhere fails the test.
"""

from __future__ import annotations

import math
import os

import numpy as np

SEED = int.from_bytes(os.urandom(4), "little")
RNG = np.random.default_rng(SEED)
#: unit roundoff (half an ulp, relative) of each storage dtype
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}
U32 = 2.0**-24
#: fp32 roundings before the output, relative: RMSNorm's sum of squares (up to 32 serial
#: additions per thread and 10 tree levels, halved by the square root) plus rsqrtf (2 ulp) and
#: two products; SiLU's __expf (2 + 1.17 |a| ulp for |a| <= 12) plus its add, divide, product.
RMS_FP32_OPS, SILU_FP32_OPS = 32, 48
#: absolute floor: half the smallest fp16 subnormal step (bf16 and fp32 reach far lower)
_FLOOR = {"float16": 2.0**-25, "bfloat16": 1e-37, "float32": 1e-37}


def bf16_dtype() -> np.dtype:
    """numpy's bfloat16 (from ml_dtypes, a dependency of cgraph-cupy's cuda extras): a GPU
    machine without it fails the bf16 tests instead of skipping them silently."""
    try:
        import ml_dtypes  # noqa: PLC0415
    except ImportError:
        import pytest  # noqa: PLC0415

        pytest.fail("the bfloat16 kernel tests need ml_dtypes, a dependency of cgraph-cupy[cuda13] / "
                    "[cuda12]: pip install ml-dtypes (or reinstall cgraph-cupy with its cuda extra)")
    return np.dtype(ml_dtypes.bfloat16)


def np_dtype(dt: str) -> np.dtype:
    return bf16_dtype() if dt == "bfloat16" else np.dtype(dt)


def round_host(x, dt: str) -> np.ndarray:
    """x rounded to the storage dtype, as float64 (what the device holds)."""
    return np.asarray(x, np.float32).astype(np_dtype(dt)).astype(np.float64)


def to_np(x, dt: str) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np_dtype(dt))


def dev(cp, x, dt: str):
    """Host float data -> device array of dtype dt (bf16 moved as its 16-bit pattern)."""
    a = to_np(x, dt)
    if dt == "bfloat16":
        return cp.asarray(a.view(np.uint16)).view(np_dtype(dt))
    return cp.asarray(a)


def host(x) -> np.ndarray:
    """Device array -> float64 (floats) or as is (ints)."""
    if x.dtype.kind in "iu":
        return x.get()
    if x.dtype.itemsize == 2 and x.dtype != np.float16:  # bfloat16: widen the bit pattern
        bits = x.view("uint16").get().astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    return x.get().astype(np.float64)


def copy_into(dst, src) -> None:
    """Raw device copy (works for any dtype, bf16 included)."""
    assert dst.nbytes == src.nbytes and dst.flags.c_contiguous and src.flags.c_contiguous
    dst.data.copy_from_device(src.data, src.nbytes)


def rand(shape, scale: float = 1.0) -> np.ndarray:
    return RNG.standard_normal(shape) * scale


def poison(cp, x):
    """Fill with NaN (floats) or a sentinel (ints) so unwritten elements show."""
    if x.dtype.itemsize == 2:
        x.view(cp.uint16).fill(0x7E00 if x.dtype == np.float16 else 0x7FC0)
    elif x.dtype == np.float32:
        x.fill(np.nan)
    else:
        x.fill(-123456)
    return x


def empty(cp, shape, dt: str):
    return poison(cp, cp.empty(shape, dtype=np_dtype(dt)))


def assert_close(got, want, dt: str, what: str = "", *, atol=0.0, fp32_ops: int = 4) -> None:
    """Every element within 2 * (u + fp32_ops * u32) * |want| + atol (see the module)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bound = 2 * (UNIT_ROUNDOFF[dt] + fp32_ops * U32) * np.abs(want) + atol + _FLOOR[dt]
    err = np.abs(got - want)
    bad = ~(err <= bound)  # NaN (an unwritten element) counts as bad
    if bad.any():
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)),
                                                     got.shape))
        limit = np.broadcast_to(bound, got.shape)[idx]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {got.size} elements out of tolerance ({dt}); worst at {idx}: "
            f"got {got[idx]!r}, want {want[idx]!r}, |err| {err[idx]:.3g} > bound {limit:.3g} seed={SEED}")


def gemm_atol(a: np.ndarray, w: np.ndarray, bias: np.ndarray | None, fallback: bool) -> np.ndarray:
    """Worst fp32 accumulation error of a GEMM element: each step of the longest chain of fp32
    additions rounds (or truncates, on tensor cores) by at most 2 * u32 of the running sum,
    which is at most sum_k |a_k w_k| (+ |bias|). The chain: K for the fallback kernel (serial
    FMAs); ceil(K / 16) MMA steps plus at most 32 warp, split and bias additions elsewhere."""
    k = a.shape[1]
    chain = k if fallback else math.ceil(k / 16) + 32
    mag = np.abs(a) @ np.abs(w).T + (np.abs(bias) if bias is not None else 0.0)
    return 2 * chain * U32 * mag


def attention_atol(dt: str, att_abs_v: np.ndarray) -> np.ndarray:
    """Absolute error terms of an attention output element, in units of att(|v|) (att_abs_v:
    the reference applied to |v|, i.e. sum_i p_i |v_i| / sum_i p_i). An error of relative
    size d in the probabilities moves an output by at most d * att(|v|). Here d is the
    rounding of p to the storage dtype for the tensor-core P.V product (u), plus fp32 error
    below 2**-13: the scores' (at most D / 16 + 4 truncating additions of 2 * u32 each, of
    terms |q_d k_d| * scale summing to about 10 for unit-variance q, k at scale ~ 1/sqrt(D):
    under 3e-5) and the sums over keys' (at most n / 16 + 64 additions for n <= 2048 keys:
    under 2.5e-5); exp2f / __expf add a few ulps."""
    return 2 * (UNIT_ROUNDOFF[dt] + 2.0**-13) * att_abs_v
