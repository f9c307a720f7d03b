# %% [markdown]
# # 01 · Quickstart: capture, replay, inspect
#
# A CUDA graph is a recording of GPU work. We run a function once while the GPU driver
# records every kernel it launches, then *replay* that recording with a single launch.
# The kernels are the same; what disappears is the Python and driver cost of launching
# each one, which dominates when the tensors are small.
#
# This notebook:
#
# 1. builds a small stack of kernels from `cgraph.kernels` (RMSNorm, GEMM, SiLU-and-mul),
# 2. captures it with `cgraph.capture` and checks a replay against eager execution and NumPy,
# 3. looks inside the graph (node count, the DOT dump drawn as a picture),
# 4. measures replay against eager launches,
# 5. goes from one graph to one graph per batch size with `GraphRunner`.
#
# Needs a CUDA GPU. Cells tagged `pure` run anywhere.

# %%
import numpy as np
import cupy as cp

import cgraph
from cgraph import capture, kernels as K
from cgraph.cuda.device import device_name
from cgraph.bench.timing import host_us, wall_us
from cgraph.kernels import reference as ref

print(f"device: {device_name()} | cupy {cp.__version__} | cgraph {cgraph.__version__}")

# %% [markdown]
# ## 1 · A function made of raw kernels
#
# Everything inside a capture has to be a kernel launch on the stream: no host copies, no
# synchronisation and no cuBLAS (CuPy cannot call it during capture), which is why the GEMM
# comes from `cgraph.kernels`. Every kernel writes into an `out=` array we allocate once,
# outside the function; arrays a graph reads or writes must keep their addresses, because
# the addresses are baked into the recording.

# %%
rng = np.random.default_rng()
T, H, I, LAYERS, EPS = 8, 512, 1024, 4, 1e-6  # 8 tokens: a small decode batch


def f16(a):
    return cp.asarray(np.asarray(a, np.float32).astype(np.float16))


weights = [dict(norm=f16(1 + 0.1 * rng.standard_normal(H)),
                up=f16(rng.standard_normal((2 * I, H)) / np.sqrt(H)),
                down=f16(rng.standard_normal((H, I)) / np.sqrt(I))) for _ in range(LAYERS)]
normed = cp.empty((T, H), cp.float16)       # scratch buffers, allocated once
gate_up = cp.empty((T, 2 * I), cp.float16)
act = cp.empty((T, I), cp.float16)


def mlp_stack(x, out):
    """LAYERS x (RMSNorm -> up-projection -> SiLU-and-mul -> down-projection); writes `out`."""
    src = x
    for w in weights:
        K.rms_norm(src, w["norm"], EPS, out=normed)
        K.gemm(normed, w["up"], out=gate_up)
        K.silu_and_mul(gate_up, out=act)
        K.gemm(act, w["down"], out=out)
        src = out
    return out


def numpy_stack(x):
    """The same computation in NumPy (float64, rounded to float16 where the kernels store)."""
    r16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    h = x.astype(np.float64)
    for w in weights:
        n = r16(ref.rms_norm(h, cp.asnumpy(w["norm"]).astype(np.float64), EPS)[0])
        gu = r16(ref.gemm(n, cp.asnumpy(w["up"]).astype(np.float64)))
        a = r16(ref.silu_and_mul(gu))
        h = r16(ref.gemm(a, cp.asnumpy(w["down"]).astype(np.float64)))
    return h


x = f16(rng.standard_normal((T, H)))
y_eager = mlp_stack(x, cp.empty((T, H), cp.float16)).copy()
expected = numpy_stack(cp.asnumpy(x).astype(np.float64))
rel = np.abs(cp.asnumpy(y_eager).astype(np.float64) - expected).max() / np.abs(expected).max()
assert rel < 2e-2, f"eager kernels differ from NumPy: max error {rel:.2e} of the largest value"
print(f"eager vs NumPy: max error {rel:.1e} of the largest output value")

# %% [markdown]
# ## 2 · Capture and replay
#
# `capture(fn, *args)` runs `fn` once eagerly (warm-up: kernels compile, memory is
# allocated), then once under stream capture, and returns a `CapturedGraph`. Its `outputs`
# are what `fn` returned during capture. A replay reads the *same* input arrays, so new data
# goes in by copying into `x`, never by passing a new array.

# %%
y = cp.empty((T, H), cp.float16)
g = capture(mlp_stack, x, y, name="mlp_stack")
g

# %%
x[...] = f16(rng.standard_normal((T, H)))   # new input, same array
y.fill(cp.nan)                              # poison the output: the replay must rewrite it
g.replay()
y_check = mlp_stack(x, cp.empty((T, H), cp.float16))
assert g.outputs is y
assert not bool(cp.isnan(y).any()), "the replay left NaN in the output"
np.testing.assert_array_equal(cp.asnumpy(y), cp.asnumpy(y_check))
print("replay == eager on a fresh input (bit for bit)")
print(f"capture took {g.capture_seconds * 1e3:.2f} ms; graph pool holds {g.pool_bytes / 2**10:.0f} KiB")

# %% [markdown]
# ## 3 · Inside the graph
#
# `num_nodes` counts the recorded operations (one per kernel here) and `dot()` returns
# CUDA's own DOT dump of the graph. There is no Graphviz on the GPU machine, so the two
# helpers below read the nodes and edges out of the DOT text and draw the graph in layers
# with matplotlib: a node sits one layer below the deepest node it depends on.

# %% tags=["pure", "silent"]
import re

_NODE = re.compile(r'^\s*"(?P<id>[^"]+_node_\d+)"\s*\[(?P<attrs>.*?)\];\s*$', re.M | re.S)
_EDGE = re.compile(r'^\s*"(?P<a>[^"]+_node_\d+)"\s*->\s*"(?P<b>[^"]+_node_\d+)"', re.M)
_KINDS = ("KERNEL", "MEMSET", "MEMCPY", "HOST", "EMPTY", "EVENT_RECORD", "WAIT_EVENT",
          "MEM_ALLOC", "MEM_FREE", "GRAPH", "CONDITIONAL")


def parse_dot(dot):
    """(nodes, edges) of a CUDA graph DOT dump: nodes {id: (kind, label)}, edges [(a, b)].

    Two label styles: the compact one CuPy prints (label="<index>\\n<kernel name>\\n", a
    kernel drawn as an octagon) and CUDA's verbose record ("{KERNEL | {ID | i (topoId: t) | name...").
    """
    nodes = {}
    for m in _NODE.finditer(dot):
        attrs = m.group("attrs")
        kind = next((k for k in _KINDS if re.search(rf"(?<![A-Za-z_]){k}(?![A-Za-z_])", attrs)), None)
        name = re.search(r"topoId: \d+\)\s*\|\s*([A-Za-z_][\w$]*)", attrs)
        if name is None:  # compact style: the kernel name is the label's second line
            name = re.search(r'label="\d+\s*\n([A-Za-z_][\w$]*)', attrs)
            if kind is None and name is not None and 'shape="octagon"' in attrs:
                kind = "KERNEL"
        kind = kind or "NODE"
        nodes[m.group("id")] = (kind, name.group(1) if name else kind.lower())
    edges = [(m.group("a"), m.group("b")) for m in _EDGE.finditer(dot)]
    return nodes, edges


def layers(nodes, edges):
    """Layer of every node: 0 for nodes with no inputs, else 1 + the deepest input's layer."""
    parents = {n: [] for n in nodes}
    for a, b in edges:
        parents[b].append(a)
    depth = {}

    def visit(n):
        if n not in depth:
            depth[n] = 1 + max((visit(p) for p in parents[n]), default=-1)
        return depth[n]

    for n in nodes:
        visit(n)
    return depth


def draw_graph(dot, title=""):
    """Draw the DOT dump top to bottom, one row per layer (matplotlib only)."""
    import matplotlib.pyplot as plt

    nodes, edges = parse_dot(dot)
    depth = layers(nodes, edges)
    rows = {}
    for n in sorted(nodes, key=lambda n: int(n.rsplit("_", 1)[1])):
        rows.setdefault(depth[n], []).append(n)
    pos = {n: (i - (len(row) - 1) / 2, -d) for d, row in rows.items() for i, n in enumerate(row)}
    width = max(len(r) for r in rows.values())
    fig, ax = plt.subplots(figsize=(3.2 * width + 1, 0.55 * len(rows) + 0.8))
    for a, b in edges:
        ax.annotate("", xy=pos[b], xytext=pos[a],
                    arrowprops=dict(arrowstyle="->", color="0.5", shrinkA=9, shrinkB=9))
    colors = {"KERNEL": "#cfe2f3", "MEMCPY": "#fce5cd", "MEMSET": "#fce5cd", "HOST": "#d9ead3"}
    for n, (kind, label) in nodes.items():
        ax.text(*pos[n], f"{n.rsplit('_', 1)[1]}: {label}", ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc=colors.get(kind, "#eeeeee"), ec="0.4"))
    ax.set_xlim(-width / 2 - 0.6, width / 2 + 0.6)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(title or f"{len(nodes)} nodes, {len(edges)} edges")
    return fig

# %%
nodes, edges = parse_dot(g.dot())
kinds = {k: sum(1 for kind, _ in nodes.values() if kind == k) for k in {k for k, _ in nodes.values()}}
print(f"num_nodes = {g.num_nodes}; parsed {len(nodes)} nodes ({kinds}) and {len(edges)} edges")
assert len(nodes) == g.num_nodes, "the DOT parser missed nodes"
assert g.num_nodes >= 4 * LAYERS, "each layer launches at least four kernels"
assert max(layers(nodes, edges).values()) == len(nodes) - 1, "one stream records a chain"
draw_graph(g.dot(), f"mlp_stack: {g.num_nodes} nodes recorded on one stream");

# %% [markdown]
# One stream records a chain: each kernel waits for the previous one, so the layers are a
# single column. The labels are the CUDA kernel names from `kernels/*.cu`.
#
# ## 4 · Replay against eager launches
#
# Two figures per path, each the median over interleaved rounds (`cgraph.bench.timing`):
#
# - **host time**: the CPU cost of issuing one call, measured over batches of calls
#   without waiting for the GPU. This is what graphs remove.
# - **wall time**: one call followed by a synchronisation, i.e. the latency of one step.

# %%
stream = cp.cuda.get_current_stream()
y_eager_buf = cp.empty((T, H), cp.float16)
paths = {"eager": lambda: mlp_stack(x, y_eager_buf), "graph replay": g.replay}
host = host_us(paths, stream.synchronize, batch=20, rounds=30)
wall = wall_us(paths, stream.synchronize, rounds=100)
for name in paths:
    print(f"{name:>13}: host {host[name]:7.1f} us   wall {wall[name]:7.1f} us")
print(f"speed-up of replay: host {host['eager'] / host['graph replay']:.1f}x, "
      f"wall {wall['eager'] / wall['graph replay']:.1f}x ({g.num_nodes} kernels, T={T})")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 2.6))
names = list(paths)
ax.barh([f"{n} (wall)" for n in names], [wall[n] for n in names], color=["#999999", "#3c78d8"])
ax.barh([f"{n} (host)" for n in names], [host[n] for n in names], color=["#cccccc", "#9fc5e8"])
ax.set_xlabel("microseconds per forward pass (median)")
ax.set_title(f"{LAYERS}-layer MLP stack, {g.num_nodes} kernels, on {device_name()}")
fig.tight_layout()

# %% [markdown]
# ## 5 · One graph per batch size: `GraphRunner`
#
# A graph has fixed shapes. A serving loop therefore captures one graph per *capture size*
# and pads each batch up to the nearest one. `GraphConfig` lists the sizes,
# `build_dispatch_table` + `dispatch` pick the graph for a batch, `StaticBuffers` holds
# inputs at fixed addresses, and `GraphRunner` captures once per descriptor (only inside
# `capture_all`/`capture_phase`) and replays afterwards.

# %%
from cgraph import GraphConfig, GraphMode, GraphRunner, StaticBuffers, build_dispatch_table, capture_all, dispatch

cfg = GraphConfig("full", max_num_seqs=4)            # capture sizes 1, 2, 4, 8
table = build_dispatch_table(cfg)
bufs = StaticBuffers({"x": ((cfg.max_capture_size, H), "float16"),
                      "y": ((cfg.max_capture_size, 2 * I), "float16")})  # w_up is [2I, H]
w_up = weights[0]["up"]
runner = GraphRunner(lambda a, out: K.gemm(a, w_up, out=out), GraphMode.FULL, name="up_proj")


def views(desc):
    return bufs.view("x", desc.num_tokens), bufs.view("y", desc.num_tokens)


print(capture_all(runner, table, views, progress=False))
for n in (1, 3, 7):
    batch = f16(rng.standard_normal((n, H)))
    mode, desc = dispatch(table, n)
    bufs.fill("x", batch, desc.num_tokens)           # copy n rows in, zero the padding rows
    bufs["y"].fill(cp.nan)
    got = runner.run(mode, desc, *views(desc))[:n].copy()
    # eager on the same padded rows (same shapes, same kernel plan) must match bit for bit
    padded_in = bufs.view("x", desc.num_tokens)
    want = K.gemm(padded_in, w_up, out=cp.empty((desc.num_tokens, 2 * I), cp.float16))[:n]
    np.testing.assert_array_equal(cp.asnumpy(got), cp.asnumpy(want))
    close = ref.gemm(cp.asnumpy(batch).astype(np.float64), cp.asnumpy(w_up).astype(np.float64))
    np.testing.assert_allclose(cp.asnumpy(got).astype(np.float64), close, rtol=2e-2, atol=2e-2)
    print(f"batch of {n}: {mode.name} graph for {desc.num_tokens} tokens, output == eager, close to NumPy")
runner.close()
g.close()

# %% [markdown]
# ## 6 · A loop on the device: `cgraph.while_loop`
#
# `while_loop(cond_fun, body_fun, carry)` inside a capture adds one CUDA conditional
# (WHILE) node: the body is captured once, and a small kernel sets the node's condition
# from a device scalar before the first iteration and after each one. One replay then
# runs as many iterations as the device data asks for, with no host round trip; the
# same call outside a capture loops on the host and gives the same bits.

# %%
from cgraph import while_loop


def grow(x, n, target):
    """x <- 1.5 x + 1 while n < target (n counts iterations on the device)."""
    def body(_):
        cp.multiply(x, 1.5, out=x)
        cp.add(x, 1.0, out=x)
        cp.add(n, 1, out=n)

    n.fill(0)
    while_loop(lambda _: n < target, body, None, max_iterations=64)
    return x


xs = cp.asarray(rng.uniform(0.5, 1.5, 256).astype(np.float32))
count, target = cp.zeros(1, cp.int32), cp.zeros(1, cp.int32)
loop = capture(grow, xs, count, target, warmup=0)
for trips in (0, 3, 10):
    x0 = rng.uniform(0.5, 1.5, 256).astype(np.float32)
    xs[...] = cp.asarray(x0)
    target[...] = trips
    loop.replay()
    want = x0.astype(np.float64)
    for _ in range(trips):
        want = want * 1.5 + 1.0
    np.testing.assert_allclose(cp.asnumpy(xs), want, rtol=1e-5)
    assert int(count.get()[0]) == trips
    print(f"one replay, {trips} iterations on the device: matches NumPy")
nodes, edges = parse_dot(loop.dot())
print(f"{loop.num_nodes} nodes (the loop is not unrolled); kinds: {sorted({k for k, _ in nodes.values()})}")
draw_graph(loop.dot(), "while_loop: the parent graph and its WHILE body");
loop.close()
