# %% [markdown]
# # 05 · Performance: the benchmark results, plotted
#
# The benchmarks are scripts (`python -m cgraph.bench.NAME`). Each measures its
# comparisons side by side in one run and writes `results/NAME.json` with the device and
# the date. This notebook reads those files (it measures nothing itself), checks that each
# table is self-consistent, and plots the results against their baselines: eager
# execution, the memory-bandwidth floor, and PyTorch.

# %% tags=["pure"]
import json
from pathlib import Path

RESULTS = Path("results")
results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
assert results, f"no benchmark results in {RESULTS.resolve()}"
for name, r in results.items():
    assert r["rows"], f"{name}.json has no rows"
    print(f"{name:>18}: {len(r['rows']):>3} rows, {r['device']}, {r['date']}")


def rows(name):
    return results[name]["rows"]


def close(a, b, tol=1e-3):
    return abs(a - b) <= tol * max(abs(a), abs(b))

# %% [markdown]
# ## 1 · A decode step: graphs against eager, the floor and torch
#
# One decode step of an 8-layer model (`cgraph.bench.decode`): NONE (every kernel launched
# from Python), PIECEWISE (graphs between eager attention calls), FULL (one graph), the
# same model in PyTorch eager and under `torch.cuda.CUDAGraph`, and the *floor*: the time
# to read the weights and KV cache once at the measured copy bandwidth.

# %% tags=["pure"]
decode = rows("decode")
print(f"{'batch':>5} {'NONE':>8} {'PIECEWISE':>9} {'FULL':>8} {'floor':>7} {'torch graph':>11}   "
      "NONE/FULL  FULL/floor  FULL/torch")
for r in decode:
    assert close(r["none/full"], r["none_us"] / r["full_us"]) and close(r["full/floor"], r["full_us"] / r["floor_us"])
    assert r["same_tokens"] is True, f"batch {r['batch']}: modes generated different tokens"
    assert r["floor_us"] < r["full_us"], "nothing beats the bandwidth floor"
    print(f"{r['batch']:>5} {r['none_us']:>8.0f} {r['piecewise_us']:>9.0f} {r['full_us']:>8.0f} {r['floor_us']:>7.0f} "
          f"{r.get('torch_graph_us', float('nan')):>11.0f}   {r['none/full']:>8.1f}x {r['full/floor']:>10.1f}x "
          f"{r['full_us'] / r.get('torch_graph_us', float('nan')):>10.2f}x")

# %%
import matplotlib.pyplot as plt
import numpy as np

series = [("none_us", "cgraph NONE (eager)", "0.55"), ("torch_eager_us", "torch eager", "0.8"),
          ("piecewise_us", "cgraph PIECEWISE", "#f6b26b"), ("torch_graph_us", "torch CUDA graph", "#93c47d"),
          ("full_us", "cgraph FULL", "#3c78d8"), ("floor_us", "bandwidth floor", "black")]
series = [s for s in series if all(s[0] in r for r in decode)]
x = np.arange(len(decode))
width = 0.8 / len(series)
fig, ax = plt.subplots(figsize=(10, 4))
for i, (key, label, color) in enumerate(series):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, [r[key] for r in decode], width, label=label, color=color)
ax.set_xticks(x, [f"batch {r['batch']}" for r in decode])
ax.set_yscale("log")
ax.set_ylabel("us per decode step (log)")
ax.set_title(f"decode step, {results['decode']['device']}")
ax.set_ylim(top=ax.get_ylim()[1] * 6)  # room for the legend above the bars
ax.legend(fontsize=8, ncol=3, loc="upper right")
fig.tight_layout()

# %% [markdown]
# ## 2 · Host overhead: what the runner adds to a replay
#
# `cgraph.bench.runner` times one step of a one-kernel graph on the host: a bare CuPy
# `Graph.launch`, `CapturedGraph.replay`, a full runner step (dispatch + `GraphRunner.run`),
# and torch's `CUDAGraph.replay` behind an equivalent wrapper. `cgraph.bench.breaks` gives
# the cost of one eager break in a breakable graph.

# %% tags=["pure"]
runner = rows("runner")
bare = runner[0]["host_us"]
for r in runner:
    assert abs(r["minus_bare_us"] - (r["host_us"] - bare)) < 1e-3, r
    print(f"{r['path']:>50}: {r['host_us']:5.2f} us (+{r['minus_bare_us']:.2f})")
breaks = rows("breaks")
for r in breaks:
    assert r["breaks"] == r["segments"] - 1
    per = (r["breakable_us"] - r["full_graph_us"] - r["breaks_eager_us"]) / r["breaks"]
    assert close(per, r["wall_overhead_per_break_us"], tol=1e-2)
    print(f"{r['segments']:>3} segments: host {r['host_overhead_per_break_us']:.2f} us per break, "
          f"wall {r['wall_overhead_per_break_us']:+.2f} us")

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw=dict(width_ratios=[3, 2]))
ax.barh([r["path"] for r in runner], [r["host_us"] for r in runner],
        color=["0.6" if "torch" not in r["path"] else "#93c47d" for r in runner])
ax.invert_yaxis()
ax.set_xlabel("host us per step")
ax.set_title(f"runner host time, {results['runner']['device']}", fontsize=10)
ax2.plot([r["segments"] for r in breaks], [r["host_overhead_per_break_us"] for r in breaks], "o-", label="host")
ax2.plot([r["segments"] for r in breaks], [r["wall_overhead_per_break_us"] for r in breaks], "s--", label="wall")
ax2.axhline(0, color="0.7", lw=1)
ax2.set_xlabel("segments")
ax2.set_ylabel("us per break")
ax2.set_title(f"breakable graphs, {results['breaks']['device']}", fontsize=10)
ax2.legend()
fig.tight_layout()

# %% [markdown]
# ## 3 · Kernels against the hardware and cuBLAS
#
# `cgraph.bench.kernels` reports each kernel as a percentage of a reference: the device's
# copy bandwidth for memory-bound kernels, cuBLAS (`cupy.matmul`) for the GEMM, and a
# reference implementation for attention (see `results/kernels*.md` for each row's detail).

# %% tags=["pure"]
kern = rows("kernels")
by_kernel = {}
for r in kern:
    assert close(r["pct"], 100 * r["ref_us"] / r["ours_us"], tol=1e-2), r
    by_kernel.setdefault(r["kernel"], []).append(r["pct"])
for k, v in by_kernel.items():
    print(f"{k:>42}: {len(v):>2} shapes, {min(v):6.1f} .. {max(v):6.1f} % of the reference")

# %%
names = list(by_kernel)
fig, ax = plt.subplots(figsize=(10, 0.3 * len(names) + 1.2))
for i, k in enumerate(names):
    ax.scatter(by_kernel[k], [i] * len(by_kernel[k]), s=14, color="#3c78d8")
ax.axvline(100, color="k", lw=1)
ax.set_yticks(range(len(names)), names, fontsize=8)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("% of the reference (100 = copy bandwidth / cuBLAS / reference kernel)")
ax.set_title(f"kernels, one dot per shape and dtype, {results['kernels']['device']}", fontsize=10)
fig.tight_layout()

# %% [markdown]
# ## 4 · Encoder budgets and dispatch
#
# `cgraph.bench.encoder`: budget graphs against eager execution on 256 mixed-size images
# (two workloads); `cgraph.bench.dispatch`: one `dispatch` call against a plain
# implementation of the same rules (CPU only).

# %% tags=["pure"]
enc = rows("encoder")
workloads = sorted({r["workload"] for r in enc})
for w in workloads:
    base = next(r for r in enc if r["workload"] == w and r["method"].startswith("eager, one image"))
    for r in enc:
        if r["workload"] == w and r["ms_per_pass"] is not None:
            assert close(r["speedup_vs_eager_per_image"], base["ms_per_pass"] / r["ms_per_pass"], tol=1e-2)
            print(f"{w:>16} | {r['method']:>32}: {r['speedup_vs_eager_per_image']:6.2f}x, "
                  f"padding {r['padding_waste']:.1%}")
disp = rows("dispatch")
for r in disp:
    assert close(r["speedup"], r["plain_ns"] / r["cgraph_ns"], tol=1e-2)
print("dispatch ns per call:", ", ".join(f"{r['mode']}/{r['max_loras']} LoRAs {r['cgraph_ns']:.0f}" for r in disp))

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw=dict(width_ratios=[3, 2]))
methods = [m for m in dict.fromkeys(r["method"] for r in enc)]
y = np.arange(len(methods))
for j, w in enumerate(workloads):
    vals = [next((r["speedup_vs_eager_per_image"] or 0 for r in enc if r["workload"] == w and r["method"] == m), 0)
            for m in methods]
    ax.barh(y + (j - 0.5) * 0.4, vals, 0.4, label=w)
ax.set_yticks(y, methods, fontsize=8)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("speed-up over eager, one image at a time (log)")
ax.set_title(f"encoder, {results['encoder']['device']}", fontsize=10)
ax.legend(fontsize=8)
labels = [f"{r['mode'].lower()}, {r['max_loras']} LoRAs" for r in disp]
xd = np.arange(len(disp))
ax2.bar(xd - 0.2, [r["cgraph_ns"] for r in disp], 0.4, label="cgraph dispatch", color="#3c78d8")
ax2.bar(xd + 0.2, [r["plain_ns"] for r in disp], 0.4, label="plain implementation", color="0.6")
ax2.set_xticks(xd, labels, fontsize=7, rotation=25, ha="right")
ax2.set_yscale("log")
ax2.set_ylabel("ns per call (log)")
ax2.set_title(f"dispatch, {results['dispatch']['device']}", fontsize=10)
ax2.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 6 · Multi-step decode
#
# `cgraph.bench.multistep`: the demo model decoding under FULL graphs, one step per launch
# (synchronous and overlapped host loops) against up to K steps per launch in a
# device-side `while_loop` (K = 1, 4, 16, 64), and K = 16 again with programmatic
# dependent launch off; tokens/s relative to the synchronous loop.

# %% tags=["pure"]
ms = rows("multistep")
for r in ms:
    print(f"batch {r['batch']} | {r['engine']:>32}: {r['tokens_per_s']:9.0f} tokens/s, {r['vs_sync']:.2f}x sync")

# %%
fig, ax = plt.subplots(figsize=(7, 3.4))
for batch in sorted({r["batch"] for r in ms}):
    multi = [r for r in ms if r["batch"] == batch and r["engine"].startswith("multi")]
    pts = [(r["K"], r["tokens_per_s"]) for r in multi if "PDL off" not in r["engine"]]
    off = [(r["K"], r["tokens_per_s"]) for r in multi if "PDL off" in r["engine"]]
    sync = next(r["tokens_per_s"] for r in ms if r["batch"] == batch and "synchronous" in r["engine"])
    over = next(r["tokens_per_s"] for r in ms if r["batch"] == batch and "overlapped" in r["engine"])
    line, = ax.plot([k for k, _ in pts], [t for _, t in pts], "o-", label=f"batch {batch}, K steps per launch")
    if off:
        ax.plot([k for k, _ in off], [t for _, t in off], "x", color=line.get_color(), ms=8,
                label=f"batch {batch}, K steps, programmatic launch off")
    ax.axhline(sync, color=line.get_color(), ls=":", lw=1, label=f"batch {batch}, single-step synchronous")
    ax.axhline(over, color=line.get_color(), ls="--", lw=1, label=f"batch {batch}, single-step overlapped")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("decode steps per launch (K)")
ax.set_ylabel("tokens/s (log)")
ax.set_title(f"multi-step decode, {results['multistep']['device']}", fontsize=10)
ax.legend(fontsize=7)
fig.tight_layout()
