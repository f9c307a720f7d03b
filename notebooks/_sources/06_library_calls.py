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
# 4. samples tokens in a captured graph (`cgraph.Generator`) and per request in the engine.
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
# A graph replays the arguments its kernels were captured with, so a generator whose seed
# and offset are launch arguments draws the same numbers on every replay. `cgraph.Generator`
# (Philox4x32-10, counter based) keeps both in device memory: each draw reads the offset on
# the device and a one-thread kernel advances it, so every replay draws fresh numbers and
# `manual_seed` repeats them exactly. `sample` applies temperature, top-k and top-p per row
# (thresholds by radix search, no sort; integer weights, so it is exactly reproducible).

# %%
logits = cp.asarray(rng.standard_normal((4, 32)).astype(np.float16))
tokens = cp.empty(4, cp.int32)
gen = cgraph.Generator(seed=7)
g = cgraph.capture(lambda: gen.sample(logits, out=tokens, temperature=0.8, top_k=8, top_p=0.9))
gen.manual_seed(7)  # the capture's warm-up drew once: start the replays at offset 0
draws = []
for _ in range(3):
    g.replay()
    draws.append(tokens.get().tolist())
gen.manual_seed(7)
g.replay()
print("three replays:", draws)
print("the same seed repeats the first:", tokens.get().tolist() == draws[0])
g.close()

# %% [markdown]
# In the engine every request carries its own `SamplingParams` (greedy by default). A
# sampled token depends only on the request's seed and the token's position, never on the
# batch, its row or the graph mode, so graphs give exactly the eager tokens.

# %%
from cgraph import GraphConfig, SamplingParams
from cgraph.engine import Engine, Request
from cgraph.models import LlamaModel
from cgraph.models.config import demo_config

model = LlamaModel(demo_config(2, 256, vocab_size=1024, max_seq_len=256), seed=0)
prompt = [1, 2, 3]
reqs = [Request("greedy", prompt, max_new_tokens=10),
        Request("nucleus", prompt, max_new_tokens=10, sampling=SamplingParams(temperature=0.9, top_p=0.9, seed=1)),
        Request("top-k", prompt, max_new_tokens=10, sampling=SamplingParams(temperature=1.2, top_k=20, seed=2))]
outputs = {}
for mode in ("none", "full_and_piecewise"):
    cfg = GraphConfig(mode, capture_sizes=None if mode == "none" else [1, 2, 4, 8, 16], max_num_seqs=4,
                      max_num_batched_tokens=16)
    with Engine(model, cfg) as eng:
        if mode != "none":
            eng.capture(progress=False)
        outputs[mode] = eng.generate(reqs).outputs
for rid, toks in outputs["none"].items():
    print(f"{rid:8s}", toks)
print("graphs give the eager tokens:", outputs["none"] == outputs["full_and_piecewise"])
