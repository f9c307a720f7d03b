"""CPU tests of cgraph.matmul's pure rules: NumPy's shapes, dtypes, out checks, which strided
views cuBLASLt reads in place, and the argument errors cgraph.matmul raises before any GPU use."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import cgraph
from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.core.matmul_shapes import alignment, blas_readable, check_out, matmul_dtype, matmul_shape
from cgraph.cuda.interop import as_cupy, as_cupy_args, is_foreign_device_array

SHAPE_PAIRS = [((3, 4), (4, 5)), ((1, 4), (4, 1)), ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (6, 4, 5)),
               ((6, 3, 4), (1, 4, 5)), ((6, 3, 4), (4, 5)), ((3, 4), (6, 4, 5)), ((1, 3, 4), (4, 5)),
               ((3, 4), (1, 4, 5)), ((1, 3, 4), (1, 4, 5)), ((0, 3, 4), (4, 5)), ((3, 0), (0, 5))]


@pytest.mark.parametrize("a_shape,b_shape", SHAPE_PAIRS)
def test_shape_matches_numpy(a_shape, b_shape):
    want = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
    got = matmul_shape(a_shape, b_shape)
    assert got.out_shape == want
    assert (got.m, got.k, got.n) == (a_shape[-2], a_shape[-1], b_shape[-1])


@pytest.mark.parametrize("a_shape,b_shape,words", [
    ((3, 4), (5, 6), "a's last dim (4) must equal b's second-to-last (5)"),
    ((2, 3, 4), (3, 4, 5), "batch sizes 2"),
    ((4,), (4, 5), "a[None, :]"),
    ((2, 2, 3, 4), (4, 5), "[batch, rows, cols]"),
    ((3, 4), (4,), "b has shape [4]"),
])
def test_shape_errors_name_the_fix(a_shape, b_shape, words):
    with pytest.raises(ArgumentError, match="cgraph.matmul") as info:
        matmul_shape(a_shape, b_shape)
    assert words in str(info.value)
    if len(a_shape) in (2, 3) and len(b_shape) in (2, 3):
        with pytest.raises(ValueError):  # NumPy refuses the same shapes
            np.matmul(np.zeros(a_shape), np.zeros(b_shape))


def test_dtypes():
    for dt in ("float16", "bfloat16", "float32"):
        assert matmul_dtype(dt, dt) == dt
    with pytest.raises(ArgumentTypeError, match="a is float16 and b is float32"):
        matmul_dtype("float16", "float32")
    with pytest.raises(ArgumentTypeError, match="float64"):
        matmul_dtype("float64", "float64")
    with pytest.raises(ArgumentTypeError, match="b has dtype int32"):
        matmul_dtype("float16", "int32")


def test_out_checks():
    shape = matmul_shape((2, 3, 4), (4, 5))
    check_out((2, 3, 5), "float16", shape, "float16")
    with pytest.raises(ArgumentError, match=r"out has shape \[3, 5\]; the product is \[2, 3, 5\]"):
        check_out((3, 5), "float16", shape, "float16")
    with pytest.raises(ArgumentTypeError, match="out has dtype float32"):
        check_out((2, 3, 5), "float32", shape, "float16")


def _readable(x: np.ndarray) -> bool:
    return blas_readable(x.shape, x.strides, x.itemsize)


def test_blas_readable_views():
    base = np.zeros((8, 12), np.float16)
    assert _readable(base) and _readable(base.T)  # row- and column-major
    assert _readable(base[2:6, 3:9]) and _readable(base[2:6, 3:9].T)  # sliced: leading dim > extent
    assert _readable(base[:1]) and _readable(base[:, :1]) and _readable(base[3:4, ::3])  # degenerate axes
    assert not _readable(base[:, ::2])  # both axes strided
    assert not _readable(base[::-1])  # negative stride
    assert not _readable(np.broadcast_to(base[:1], (8, 12)))  # zero stride
    batch = np.zeros((3, 8, 12), np.float32)
    assert _readable(batch) and _readable(batch.swapaxes(1, 2)) and _readable(batch.transpose(1, 0, 2))
    assert not _readable(np.broadcast_to(batch[:1], (3, 8, 12)))
    assert not blas_readable((4, 4), (3, 2), 2)  # strides that are not whole elements


def test_alignment():
    assert [alignment(a) for a in (0, 2, 6, 16, 48, 1024, 4096 + 8)] == [256, 2, 2, 16, 16, 256, 8]


def test_readable_views_agree_with_numpy_products():
    """A view blas_readable accepts is fully described by (order, leading dim): rebuilding it
    from the base buffer by those two numbers gives the same matrix."""
    rng = np.random.default_rng()
    base = rng.standard_normal(400)
    for (r, c), (sr, sc) in itertools.product([(1, 5), (5, 1), (4, 6)], [(1, 6), (6, 1), (1, 7), (8, 1), (2, 3)]):
        view = np.lib.stride_tricks.as_strided(base, (r, c), (sr * 8, sc * 8))
        if not blas_readable(view.shape, view.strides, 8):
            continue
        col = sr == 1 or (sc != 1 and r == 1)
        ld = max(r, sc) if col else max(c, sr)
        idx = (np.arange(r)[:, None] + np.arange(c)[None, :] * ld) if col else \
            (np.arange(r)[:, None] * ld + np.arange(c)[None, :])
        np.testing.assert_array_equal(base[idx], view)


def test_matmul_refuses_host_arrays_on_any_machine():
    a, b = np.ones((3, 4), np.float16), np.ones((4, 5), np.float16)
    with pytest.raises(ArgumentTypeError, match=r"a must be a CuPy array on the GPU, got numpy.ndarray"):
        cgraph.matmul(a, b)
    with pytest.raises(ArgumentError, match="must equal b's second-to-last"):
        cgraph.matmul(a, np.ones((5, 4), np.float16))
    with pytest.raises(ArgumentTypeError, match="a is float16 and b is float32"):
        cgraph.matmul(a, b.astype(np.float32))
    with pytest.raises(ArgumentError, match="out has shape"):
        cgraph.matmul(a, b, out=np.ones((3, 4), np.float16))
    with pytest.raises(ArgumentTypeError, match="must be a CuPy array"):
        cgraph.matmul([[1.0]], b)


def test_as_cupy_passes_host_values_through():
    host = np.ones(3)
    assert as_cupy(host) is host and as_cupy(None) is None and as_cupy(3) == 3
    assert not is_foreign_device_array(host)
    args, kwargs = (host, 1), {"out": host}
    assert as_cupy_args(args, kwargs) == (args, kwargs)


class _FakeCudaArray:
    """A DLPack producer that says it lives on a CUDA device (device type 2)."""

    def __dlpack__(self, **kwargs):
        raise AssertionError("not exported on the CPU")

    def __dlpack_device__(self):
        return (2, 0)


class _FakeCpuArray(_FakeCudaArray):
    def __dlpack_device__(self):
        return (1, 0)


def test_foreign_device_arrays_are_recognised_by_their_dlpack_device():
    assert is_foreign_device_array(_FakeCudaArray())
    assert not is_foreign_device_array(_FakeCpuArray())
    cpu = _FakeCpuArray()
    assert as_cupy(cpu) is cpu
