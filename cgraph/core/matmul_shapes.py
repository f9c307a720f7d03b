"""The pure rules of cgraph.matmul: NumPy's matmul shapes, the dtypes it takes, and which
strided matrices cuBLASLt can read as they are.

Shapes follow ``numpy.matmul`` for 2-D and 3-D operands: ``a[..., M, K] @ b[..., K, N]``;
a 2-D operand is broadcast over the other's batch, and a batch of 1 is broadcast against a
batch of B. Nothing here needs a GPU, so every argument error is testable on any machine.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from cgraph.core.errors import ArgumentError, ArgumentTypeError

#: dtype names cgraph.matmul accepts (a and b share one; the result has it too).
MATMUL_DTYPES = ("float16", "bfloat16", "float32")


@attrs.frozen
class MatmulShape:
    """The product's geometry: ``batch`` (0 for 2-D @ 2-D), M, K, N and the result shape."""

    batch: int
    m: int
    k: int
    n: int
    out_shape: tuple[int, ...]


def matmul_shape(a_shape: Sequence[int], b_shape: Sequence[int]) -> MatmulShape:
    """The shape of ``a @ b`` by NumPy's rule, for 2-D and 3-D a and b; ArgumentError otherwise.

    A 3-D operand's first axis is its batch: batches must be equal or one of them 1, and a
    2-D operand is broadcast over the other's batch. The result is 3-D when either operand is.
    """
    a_shape, b_shape = tuple(int(d) for d in a_shape), tuple(int(d) for d in b_shape)
    for name, shape in (("a", a_shape), ("b", b_shape)):
        if len(shape) not in (2, 3):
            fix = (f"make it a row with {name}[None, :]" if len(shape) == 1
                   else "reshape it to [batch, rows, cols]" if len(shape) > 3 else "use a 2-D array")
            raise ArgumentError(f"cgraph.matmul: {name} has shape {list(shape)}; expected a 2-D [rows, cols] "
                                f"or 3-D [batch, rows, cols] array ({fix})")
    m, k = a_shape[-2:]
    k_b, n = b_shape[-2:]
    if k != k_b:
        raise ArgumentError(f"cgraph.matmul: a has shape {list(a_shape)} and b {list(b_shape)}: a's last dim "
                            f"({k}) must equal b's second-to-last ({k_b}), as in numpy.matmul (transpose b "
                            f"with b.T or b.swapaxes(-1, -2) if it is stored [N, K])")
    batches = [s[0] for s in (a_shape, b_shape) if len(s) == 3]
    if len(batches) == 2 and batches[0] != batches[1] and 1 not in batches:
        raise ArgumentError(f"cgraph.matmul: batch sizes {batches[0]} (a {list(a_shape)}) and {batches[1]} "
                            f"(b {list(b_shape)}) do not broadcast; they must be equal or one of them 1")
    batch = max(batches) if batches else 0
    out_shape = (batch, m, n) if batches else (m, n)
    return MatmulShape(batch=batch, m=m, k=k, n=n, out_shape=out_shape)


def matmul_dtype(a_dtype: str, b_dtype: str) -> str:
    """The result dtype: a's and b's, which must be one of MATMUL_DTYPES and the same."""
    for name, dt in (("a", a_dtype), ("b", b_dtype)):
        if dt not in MATMUL_DTYPES:
            raise ArgumentTypeError(f"cgraph.matmul: {name} has dtype {dt}; expected one of "
                                    f"{', '.join(MATMUL_DTYPES)} (convert with .astype(...))")
    if a_dtype != b_dtype:
        raise ArgumentTypeError(f"cgraph.matmul: a is {a_dtype} and b is {b_dtype}; both must have one dtype "
                                f"(convert one with .astype({a_dtype!r}); cgraph.matmul does not promote)")
    return a_dtype


def check_out(out_shape: Sequence[int], out_dtype: str, want: MatmulShape, dtype: str) -> None:
    """Raise ArgumentError (shape) or ArgumentTypeError (dtype) unless `out` fits the product."""
    if tuple(int(d) for d in out_shape) != want.out_shape:
        raise ArgumentError(f"cgraph.matmul: out has shape {list(out_shape)}; the product is "
                            f"{list(want.out_shape)} (allocate it with cupy.empty({want.out_shape}, dtype))")
    if out_dtype != dtype:
        raise ArgumentTypeError(f"cgraph.matmul: out has dtype {out_dtype}; the product of {dtype} operands is "
                                f"{dtype} (allocate out with dtype={dtype!r})")


def blas_readable(shape: Sequence[int], strides: Sequence[int], itemsize: int) -> bool:
    """True when cuBLASLt can read this matrix (or batch of matrices) in place.

    strides are in bytes (as NumPy and CuPy give them). Each matrix needs unit stride along
    one of its two axes and a leading stride, positive, a whole number of elements and at
    least the other axis' extent; a batch needs a positive whole-element stride. Anything
    else (negative or zero strides, both axes strided) is copied first.
    """
    if any(s % itemsize for s in strides):
        return False
    el = [s // itemsize for s in strides]
    dims = [int(d) for d in shape]
    if len(dims) == 3 and dims[0] > 1 and el[0] <= 0:
        return False
    (r, c), (sr, sc) = dims[-2:], el[-2:]
    # The axis with unit stride decides the order, as cuBLASLt's layouts are read (a unit
    # row stride first: column-major); the other axis' stride is the leading dimension.
    if sr == 1:
        return c == 1 or sc >= r
    if sc == 1:
        return r == 1 or sr >= c
    if r == 1:
        return sc >= 1
    if c == 1:
        return sr >= 1
    return False


def alignment(address: int, cap: int = 256) -> int:
    """The largest power of two dividing `address`, at most `cap` (cuBLASLt picks kernels by it)."""
    address = int(address)
    return cap if address == 0 else min(cap, address & -address)


def describe(x: Any) -> str:
    """A short name of an argument's type, for error messages."""
    return f"{type(x).__module__}.{type(x).__name__}"
