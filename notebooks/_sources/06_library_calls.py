# %% [markdown]
# # 06 · Library calls in graphs: `cgraph.matmul` and torch interop
#
# CuPy refuses cuBLAS inside a stream capture: `a @ b`, `cupy.matmul` and `cupy.dot`
# raise `NotImplementedError` while a stream records. `cgraph.matmul(a, b)` computes the
# same product (NumPy's rules: 2-D and batched 3-D, broadcast batch, any strides; float16,
# bfloat16, float32) through cuBLASLt, whose calls capture. This notebook:
#
# 1. shows what happens to a CuPy MLP written with `@` inside a capture,
# 2. writes the same MLP with `matmul(x, w)`, captures it and replays it on new inputs,
# 3. captures a graph over torch tensors' memory (zero-copy DLPack).
#
# Needs a CUDA GPU and nvmath-python (in the `cuda13` / `cuda12` extras).

# %%
import numpy as np
import cupy as cp

import cgraph
from cgraph import matmul
from cgraph.cuda.device import device_name

print(f"device: {device_name()} | cupy {cp.__version__} | cgraph {cgraph.__version__}")

# %% [markdown]
# ## 1 · An MLP written with `@`
#
# A plain CuPy model. Eagerly it runs; captured, CuPy's cuBLAS call is refused, and the
# capture bracket reports a `CaptureError` that names the capturable replacement.

# %%
rng = np.random.default_rng()
D, H, T = 256, 1024, 8  # model width, hidden width, tokens


def param(*shape):
    return cp.asarray((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float16))


w1, w2 = param(D, H), param(H, D)
x = cp.asarray(rng.standard_normal((T, D)).astype(np.float16))


def mlp_at(x):
    h = x @ w1
    return cp.maximum(h, 0) @ w2


print("eager:", mlp_at(x).shape)
try:
    cgraph.capture(mlp_at, x)
except cgraph.CaptureError as exc:
    print("captured:", str(exc)[:400], "...")

# %% [markdown]
# ## 2 · The same MLP with `matmul`
#
# Only the operator changes. `cgraph.capture` runs the function once eagerly first (its
# warm-up): that is where cuBLASLt's plans are made, because planning may allocate and
# synchronize and so never happens while a stream records. The capture then records one
# cuBLASLt call per product, with its workspace taken from the graph's own memory pool.

# %%
def mlp(x):
    h = matmul(x, w1)
    return matmul(cp.maximum(h, 0), w2)


graph = cgraph.capture(mlp, x)
print(graph)

for step in range(3):
    x[...] = cp.asarray(rng.standard_normal((T, D)).astype(np.float16))  # new data, same address
    graph.outputs.fill(cp.nan)  # poison: the replay must rewrite every element
    got = graph.replay()
    want = mlp(x)  # eager, same cuBLASLt plans
    ref = np.maximum(x.get().astype(np.float64) @ w1.get(), 0) @ w2.get()
    print(f"replay {step}: equal to eager: {bool(cp.array_equal(got, want))}, "
          f"max |replay - float64 NumPy| = {float(np.abs(got.get() - ref).max()):.2e}")

# %% [markdown]
# Batched and transposed operands work the same way: `w.T` is read in place (no copy),
# a `[B, M, K] @ [K, N]` product shares one weight over the batch.

# %%
xb = cp.asarray(rng.standard_normal((4, T, D)).astype(np.float16))
w_linear = param(H, D)  # stored [out, in], as a Linear layer keeps it
yb = matmul(xb, w_linear.T)
print(yb.shape, float(cp.abs(yb - cp.matmul(xb, w_linear.T)).max()))

# %% [markdown]
# ## 3 · A graph over torch tensors
#
# Arrays of torch and JAX are accepted wherever CuPy arrays are (kernels, static buffers,
# runner inputs, `matmul`): `cgraph.as_cupy` views them through DLPack without a copy.
# Here torch owns the memory; the graph reads and writes it, and torch sees every replay.
# CuPy outputs go back the same way: `torch.from_dlpack(cupy_array)`.

# %%
try:
    import torch
except ImportError:
    torch = None
    print("torch is not installed: skipping this section")

if torch is not None and torch.cuda.is_available():
    x_t = torch.randn(T, D, device="cuda", dtype=torch.float16)
    w_t = torch.randn(D, D, device="cuda", dtype=torch.float16) / D ** 0.5
    out_t = torch.empty(T, D, device="cuda", dtype=torch.float16)
    xc, wc, oc = cgraph.as_cupy(x_t), cgraph.as_cupy(w_t), cgraph.as_cupy(out_t)
    print("same memory:", xc.data.ptr == x_t.data_ptr(), oc.data.ptr == out_t.data_ptr())
    g = cgraph.capture(lambda: matmul(xc, wc, out=oc))
    x_t.normal_()  # torch writes the input...
    torch.cuda.synchronize()  # ...and its work is ordered before the replay
    g.replay()
    cp.cuda.get_current_stream().synchronize()
    print("torch sees the replay:", torch.allclose(out_t.float(), x_t.float() @ w_t.float(), atol=5e-2))
    back = torch.from_dlpack(g.outputs)  # a cgraph output as a torch tensor, no copy
    print("output handed back without a copy:", back.data_ptr() == out_t.data_ptr())
    g.close()

# %% [markdown]
# ## 4 · Sampled generation
#
# (Reserved: the graph-safe random-number and sampling example goes here.)
