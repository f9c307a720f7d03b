# %% [markdown]
# # 03 · Breakable graphs: attention as an eager break
#
# Some work cannot (or should not) be frozen into a graph. In a decoder, attention is the
# usual example: its cost and its metadata depend on the sequence lengths of the batch.
# PIECEWISE mode captures everything *between* the attention calls and runs attention
# eagerly. cgraph does this without a compiler: inside `with BreakableCapture() as cap:`,
# calling a function decorated with `@eager_break` closes the current graph segment,
# runs the function eagerly, and opens a new segment. `cap.replay()` then alternates:
# segment 1, break 1, segment 2, ...
#
# This notebook builds a tiny attention model, looks at its segments as data, checks that
# PIECEWISE and FULL replays equal eager execution (and NumPy), and measures what one
# break costs.

# %%
import numpy as np
import cupy as cp

from cgraph import BreakableCapture, capture, eager_break, kernels as K
from cgraph.cuda.device import device_name
from cgraph.bench.timing import host_us, wall_us
from cgraph.kernels import reference as ref

print(f"device: {device_name()} | cupy {cp.__version__}")

# %% [markdown]
# ## 1 · A tiny attention model
#
# Two sequences (lengths 5 and 11) packed into T = 16 tokens; each layer is RMSNorm, a
# fused QKV projection, causal attention within each sequence, an output projection and a
# residual add. Every array the model touches is allocated here, once: a break writes into
# arrays it is given (`attn`), so the graph segment after it reads the same addresses on
# every replay.

# %%
rng = np.random.default_rng()
LENS, NH, D, LAYERS, EPS = (5, 11), 4, 64, 3, 1e-6
T, H = sum(LENS), NH * D


def f16(a):
    return cp.asarray(np.asarray(a, np.float32).astype(np.float16))


layers = [dict(norm=f16(1 + 0.1 * rng.standard_normal(H)),
               qkv=f16(rng.standard_normal((3 * H, H)) / np.sqrt(H)),
               o=f16(rng.standard_normal((H, H)) / np.sqrt(H))) for _ in range(LAYERS)]
final_norm = f16(1 + 0.1 * rng.standard_normal(H))
x = f16(rng.standard_normal((T, H)))
cu_seqlens = cp.asarray(np.concatenate([[0], np.cumsum(LENS)]).astype(np.int32))
resid, normed = cp.empty((T, H), cp.float16), cp.empty((T, H), cp.float16)
qkv, attn = cp.empty((T, 3 * H), cp.float16), cp.empty((T, NH, D), cp.float16)
proj, out = cp.empty((T, H), cp.float16), cp.empty((T, H), cp.float16)


@eager_break
def attention(qkv, cu_seqlens, attn):
    """Causal attention within each packed sequence; writes `attn` (the static output)."""
    q, k, v = (qkv[:, i * H:(i + 1) * H].reshape(T, NH, D) for i in range(3))
    K.varlen_attention(q, k, v, out=attn, cu_seqlens=cu_seqlens, max_seqlen=max(LENS),
                       causal=True, scale=D ** -0.5)


def model():
    cp.copyto(resid, x)
    for w in layers:
        K.rms_norm(resid, w["norm"], EPS, out=normed)
        K.gemm(normed, w["qkv"], out=qkv)
        attention(qkv, cu_seqlens, attn)            # a break in PIECEWISE, captured in FULL
        K.gemm(attn.reshape(T, H), w["o"], out=proj)
        cp.add(resid, proj, out=resid)              # residual add, in place
    return K.rms_norm(resid, final_norm, EPS, out=out)


def numpy_model(x_host):
    """The same model in float64 NumPy, rounded to float16 where the kernels store."""
    r16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    h = lambda a: cp.asnumpy(a).astype(np.float64)  # noqa: E731
    res = x_host.astype(np.float64)
    cu = np.concatenate([[0], np.cumsum(LENS)])
    for w in layers:
        n = r16(ref.rms_norm(res, h(w["norm"]), EPS)[0])
        qkv_h = r16(ref.gemm(n, h(w["qkv"])))
        q, k, v = (qkv_h[:, i * H:(i + 1) * H].reshape(T, NH, D) for i in range(3))
        a = r16(ref.varlen_attention(q, k, v, cu, True, D ** -0.5))
        res = r16(res + r16(ref.gemm(a.reshape(T, H), h(w["o"]))))
    return ref.rms_norm(res, h(final_norm), EPS)[0]


eager = model().copy()
want = numpy_model(cp.asnumpy(x))
rel = np.abs(cp.asnumpy(eager).astype(np.float64) - want).max() / np.abs(want).max()
assert rel < 2e-2, f"eager model differs from NumPy by {rel:.2e} of the largest value"
print(f"eager model vs NumPy: max error {rel:.1e} of the largest output value")

# %% [markdown]
# ## 2 · Capture with breaks; segments as data
#
# `cap.segments` is the recorded programme: graph segments with their node counts and
# the eager breaks, in replay order. Three layers give three breaks and four segments.

# %%
with BreakableCapture(name="tiny") as cap:
    cap.outputs = model()
print(cap)
print(f"{'step':>4}  {'kind':<6} {'nodes':>5}  name")
for i, s in enumerate(cap.segments):
    print(f"{i:>4}  {s.kind:<6} {s.nodes if s.kind == 'graph' else '':>5}  {s.name}")
assert cap.num_breaks == LAYERS and cap.num_graphs == LAYERS + 1
assert [s.kind for s in cap.segments] == ["graph", "eager"] * LAYERS + ["graph"]

# %% [markdown]
# Replay on a fresh input. The output is poisoned with NaN first, so a replay that skipped
# a segment could not pass. The same decorated model captured with plain `capture` is the
# FULL graph: there the break is recorded like any other kernel.

# %%
x[...] = f16(rng.standard_normal((T, H)))
eager = model().copy()                   # eager reference on the new input
out.fill(cp.nan)
cap.replay()
piecewise = out.copy()
full = capture(model)
out.fill(cp.nan)
full.replay()
np.testing.assert_array_equal(cp.asnumpy(piecewise), cp.asnumpy(eager))
np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(eager))
want = numpy_model(cp.asnumpy(x))
rel = np.abs(cp.asnumpy(piecewise).astype(np.float64) - want).max() / np.abs(want).max()
assert rel < 2e-2, rel
print(f"PIECEWISE replay == FULL replay == eager (bit for bit); vs NumPy {rel:.1e}")
print(f"FULL graph: {full.num_nodes} nodes; PIECEWISE: {cap.num_nodes} nodes in {cap.num_graphs} graphs "
      f"+ {cap.num_breaks} eager breaks")

# %% [markdown]
# ## 3 · What does one break cost?
#
# A chain of S segments with S - 1 breaks, each segment three tiny kernels and each break
# one kernel launched eagerly. Three paths, timed interleaved:
#
# - `breakable`: `cap.replay()`;
# - `full`: one graph holding the same segment and break kernels;
# - `eager breaks`: the breaks alone, launched eagerly.
#
# Overhead per break = (breakable − full − eager breaks) / (S − 1): what splitting the graph
# adds beyond running the break itself. Host time is the cost on the CPU's critical path;
# in wall time the GPU runs the next segment while the CPU issues the following break, so
# the figure can drop below zero. `python -m cgraph.bench.breaks` is the full benchmark.

# %%
bump = cp.RawKernel(r"""
extern "C" __global__ void bump(float* x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * a + 1.0f;
}""", "bump")
buf = cp.asarray(rng.uniform(1, 2, 1024).astype(np.float32))
n32 = np.int32(buf.size)


def segment():
    for a in (0.5, 0.25, 0.75):
        bump((4,), (256,), (buf, np.float32(a), n32))


@eager_break
def stand_in():
    bump((4,), (256,), (buf, np.float32(0.9), n32))


def host_chain(S):
    """Expected buf after one pass of the chain, computed on the host."""
    v = cp.asnumpy(buf).astype(np.float64)
    for i in range(S):
        for a in (0.5, 0.25, 0.75) + ((0.9,) if i < S - 1 else ()):
            v = v * a + 1.0
    return v


rows = []
stream = cp.cuda.Stream(non_blocking=True)
with stream:
    for S in (2, 4, 8, 16, 32):
        def chain():
            for i in range(S):
                segment()
                if i < S - 1:
                    stand_in()

        with BreakableCapture() as chain_cap:
            chain()
        chain_full = capture(chain)
        buf[...] = cp.asarray(rng.uniform(1, 2, buf.size).astype(np.float32))
        expect = host_chain(S)
        chain_cap.replay()
        np.testing.assert_allclose(cp.asnumpy(buf), expect, rtol=1e-5)  # the chain really ran

        def breaks_only():
            for _ in range(S - 1):
                stand_in()

        paths = {"breakable": chain_cap.replay, "full": chain_full.replay, "eager breaks": breaks_only}
        wall = wall_us(paths, stream.synchronize, rounds=100)
        host = host_us(paths, stream.synchronize, batch=20, rounds=30)
        rows.append(dict(segments=S, breakable_us=wall["breakable"], full_us=wall["full"],
                         breaks_us=wall["eager breaks"],
                         wall_per_break=(wall["breakable"] - wall["full"] - wall["eager breaks"]) / (S - 1),
                         host_per_break=(host["breakable"] - host["full"] - host["eager breaks"]) / (S - 1)))
        chain_cap.close()
        chain_full.close()
print(f"{'S':>3} {'breakable':>10} {'full':>8} {'breaks':>8} {'wall/break':>11} {'host/break':>11}  (us)")
for r in rows:
    print(f"{r['segments']:>3} {r['breakable_us']:>10.1f} {r['full_us']:>8.1f} {r['breaks_us']:>8.1f} "
          f"{r['wall_per_break']:>11.2f} {r['host_per_break']:>11.2f}")

# %%
import json
import matplotlib.pyplot as plt

committed = json.load(open("results/breaks.json"))
fig, ax = plt.subplots(figsize=(7, 3.5))
S = [r["segments"] for r in rows]
ax.plot(S, [r["host_per_break"] for r in rows], "o-", label=f"host, this run ({device_name()})")
ax.plot(S, [r["wall_per_break"] for r in rows], "s--", label="wall, this run")
ax.plot([r["segments"] for r in committed["rows"]], [r["host_overhead_per_break_us"] for r in committed["rows"]],
        "^:", label=f"host, cgraph.bench.breaks ({committed['device']})")
ax.axhline(0, color="0.7", lw=1)
ax.set_xscale("log", base=2)
ax.set_xlabel("segments S (S - 1 breaks)")
ax.set_ylabel("overhead per break (us)")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
cap.close()
full.close()
print("closed:", cap, full)
