"""GPU tests of zero-copy DLPack interop: torch (and JAX, where it has a GPU) arrays viewed as
CuPy arrays and back without a copy, accepted by kernels, buffers, runners and cgraph.matmul,
and a graph captured over torch tensors' memory."""

from __future__ import annotations

import numpy as np
import pytest

from tests._kernel_checks import assert_close

pytestmark = pytest.mark.gpu


def _torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here")
    return torch


@pytest.mark.parametrize("dtype", ("float16", "bfloat16", "float32", "int32"))
def test_torch_round_trip_keeps_the_pointer(dtype):
    torch = _torch()
    import cupy as cp

    from cgraph.cuda.interop import as_cupy, as_torch

    t = torch.arange(24, device="cuda").to(getattr(torch, dtype)).reshape(4, 6)[:, 1:5]  # a strided view
    x = as_cupy(t)
    assert isinstance(x, cp.ndarray)
    assert x.data.ptr == t.data_ptr() and x.shape == tuple(t.shape)
    assert x.strides == tuple(s * t.element_size() for s in t.stride())
    assert np.dtype(x.dtype).name == dtype
    back = as_torch(x)
    assert back.data_ptr() == t.data_ptr() and back.dtype == t.dtype
    x[0, 0] = 99  # a write through the CuPy view is seen by torch
    cp.cuda.get_current_stream().synchronize()
    assert float(t[0, 0]) == 99.0
    assert as_cupy(x) is x  # CuPy arrays pass through


def test_cupy_output_to_torch_without_copy():
    torch = _torch()
    import cupy as cp

    y = cp.arange(10, dtype=cp.float32)
    t = torch.from_dlpack(y)  # what the module docstring promises: no helper needed
    assert t.data_ptr() == y.data.ptr


def test_graph_over_torch_memory_replays_into_the_torch_tensor():
    torch = _torch()
    import cupy as cp

    import cgraph
    from cgraph.cuda.interop import as_cupy

    x_t = torch.randn(8, 64, device="cuda", dtype=torch.float16)
    w_t = torch.randn(64, 32, device="cuda", dtype=torch.float16)
    out_t = torch.empty(8, 32, device="cuda", dtype=torch.float16)
    x, w, out = as_cupy(x_t), as_cupy(w_t), as_cupy(out_t)
    g = cgraph.capture(lambda: cgraph.matmul(x, w, out=out))
    try:
        for _ in range(2):
            x_t.copy_(torch.randn(8, 64, device="cuda", dtype=torch.float16))  # torch writes the input
            out_t.fill_(float("nan"))
            torch.cuda.synchronize()
            g.replay()
            cp.cuda.get_current_stream().synchronize()
            want = x_t.double().cpu().numpy() @ w_t.double().cpu().numpy()
            got = out_t.double().cpu().numpy()
            assert_close(got, want, "float16", "graph over torch memory",
                         atol=2 * 64 * 2.0**-24 * (np.abs(x_t.double().cpu().numpy()) @ np.abs(w_t.double().cpu().numpy())))
    finally:
        g.close()


def test_matmul_and_kernels_take_torch_tensors():
    torch = _torch()
    import cupy as cp

    import cgraph
    from cgraph.kernels import silu_and_mul

    a = torch.randn(5, 16, device="cuda", dtype=torch.float32)
    b = torch.randn(16, 7, device="cuda", dtype=torch.float32)
    out_t = torch.full((5, 7), float("nan"), device="cuda")
    cgraph.matmul(a, b, out=out_t)  # torch in, torch out: written in place
    torch.cuda.synchronize()
    np.testing.assert_allclose(out_t.cpu().numpy(), (a.double() @ b.double()).cpu().numpy(), rtol=1e-5, atol=1e-4)
    assert isinstance(cgraph.matmul(a, b), cp.ndarray)  # no out: a CuPy result
    x = torch.randn(4, 32, device="cuda", dtype=torch.float16)
    y = torch.full((4, 16), float("nan"), device="cuda", dtype=torch.float16)
    silu_and_mul(x, out=y)  # a raw kernel launcher: checked and launched on CuPy views
    torch.cuda.synchronize()
    xd = x.double().cpu().numpy()
    want = xd[:, :16] / (1 + np.exp(-xd[:, :16])) * xd[:, 16:]
    assert_close(y.double().cpu().numpy(), want, "float16", "silu_and_mul on torch", atol=1e-3)


def test_static_buffers_and_runner_take_torch_tensors():
    torch = _torch()
    import cupy as cp

    import cgraph

    bufs = cgraph.StaticBuffers({"x": ((8, 4), cp.float32)})
    src = torch.randn(3, 4, device="cuda")
    torch.cuda.synchronize()
    view = bufs.fill("x", src, 4)
    np.testing.assert_array_equal(view[:3].get(), src.cpu().numpy())
    assert not bool(view[3].any())

    seen = []

    def step(x):
        seen.append(type(x).__module__)
        return x * 2

    runner = cgraph.GraphRunner(step, "FULL")
    t = torch.randn(4, 4, device="cuda")
    torch.cuda.synchronize()
    got = runner(t)  # eager (no batch context): fn sees a CuPy view
    assert seen[-1].startswith("cupy") and isinstance(got, cp.ndarray)
    np.testing.assert_allclose(got.get(), t.cpu().numpy() * 2)
    runner.close()


def test_jax_arrays_are_viewed_without_copy():
    jax = pytest.importorskip("jax")
    try:
        gpu = jax.devices("gpu")
    except RuntimeError:
        gpu = []
    if not gpu:
        pytest.skip("jax has no GPU backend here")
    import cupy as cp

    from cgraph.cuda.interop import as_cupy

    a = jax.device_put(jax.numpy.arange(12, dtype=jax.numpy.float32).reshape(3, 4), gpu[0])
    a.block_until_ready()
    x = as_cupy(a)
    assert isinstance(x, cp.ndarray) and x.data.ptr == a.unsafe_buffer_pointer()
    np.testing.assert_array_equal(x.get(), np.arange(12, dtype=np.float32).reshape(3, 4))
    back = jax.dlpack.from_dlpack(x)
    np.testing.assert_array_equal(np.asarray(back), x.get())

