# %% [markdown]
# # 02 · Dispatch: which graph does a batch get?
#
# Graphs have fixed shapes, so a server captures a graph for a list of *capture sizes* and
# pads every batch up to the nearest one. *Dispatch* is the decision, made once per step:
# given the batch's token count, whether it is a uniform decode batch (every request adds
# the same number of tokens) and how many LoRA adapters it uses, which runtime mode runs it
# (FULL graph, PIECEWISE graphs with eager attention, or NONE = eager) and at which padded
# size.
#
# All of this is pure Python (no GPU): `GraphConfig`, `build_dispatch_table`, `dispatch`,
# `padding_report`, `suggest_capture_sizes`. Only the plots need matplotlib.

# %% tags=["pure"]
import os
from collections import Counter

import numpy as np

from cgraph import (GraphConfig, GraphMode, build_dispatch_table, capture_descriptors,
                    dispatch, padding_report, suggest_capture_sizes)
from cgraph.core.buckets import padded_tokens

# A fresh seed per run unless CGRAPH_SEED fixes one; every check below holds for any workload.
SEED = int(os.environ.get("CGRAPH_SEED", np.random.SeedSequence().entropy % 2**32))
rng = np.random.default_rng(SEED)
print(f"seed {SEED}")

# %% [markdown]
# ## 1 · One table per mode
#
# `GraphConfig(mode, ...)` describes what to capture; `build_dispatch_table` turns it into
# the set of graph keys (`BatchDescriptor`s) per runtime mode and precomputes every
# answer. With `max_loras=2` graphs are also captured per number of active adapters.
# `capture_descriptors` lists the keys a runner would capture, largest first.

# %% tags=["pure"]
MAX_SEQS, MAX_LORAS = 64, 2
configs = {m: GraphConfig(m, max_num_seqs=MAX_SEQS, max_loras=MAX_LORAS) for m in GraphMode}
tables = {m: build_dispatch_table(cfg) for m, cfg in configs.items()}
sizes = configs[GraphMode.FULL].capture_sizes
print(f"capture sizes ({len(sizes)}): {sizes}")
print(f"{'config mode':>20} | {'FULL keys':>9} | {'PIECEWISE keys':>14}")
for m, t in tables.items():
    keys = capture_descriptors(t)
    print(f"{m.name:>20} | {len(keys.get(GraphMode.FULL, ())):>9} | {len(keys.get(GraphMode.PIECEWISE, ())):>14}")
full_keys = capture_descriptors(tables[GraphMode.FULL_AND_PIECEWISE])[GraphMode.FULL]
print("largest FULL key of FULL_AND_PIECEWISE:", full_keys[0])

# %% [markdown]
# ## 2 · Dispatch every input
#
# Below, every configuration mode dispatches every token count from 1 to 160 for three
# kinds of batch: mixed (prefill or ragged), uniform decode, and mixed with two LoRA
# adapters. The cell checks each answer against the rule written out by hand:
#
# - above the largest capture size there is no graph: NONE, unpadded;
# - otherwise a uniform decode batch uses the decode part of the mode (FULL for the pair
#   modes) as long as a decode graph exists for its padded size (decode graphs stop at
#   `max_num_seqs` requests), and everything else uses the mixed part;
# - a graph mode pads to the smallest capture size at or above the token count.

# %% tags=["pure"]
KINDS = {"mixed": dict(uniform_decode=False), "uniform decode": dict(uniform_decode=True),
         "mixed + 2 LoRAs": dict(has_lora=True, num_active_loras=2)}
NS = np.arange(1, 161)
grid = {}  # (config mode, kind) -> (runtime modes, padded sizes)
for m, t in tables.items():
    cfg = configs[m]
    for kind, kw in KINDS.items():
        modes, padded = [], []
        for n in NS.tolist():
            mode, desc = dispatch(t, n, **kw)
            if n > cfg.max_capture_size:
                want = GraphMode.NONE
            elif kw.get("uniform_decode") and cfg.pad(n) <= MAX_SEQS * cfg.uniform_decode_query_len:
                want = m.decode_mode()
            else:
                want = m.mixed_mode()
            assert mode is want, (m, kind, n, mode, want)
            want_tokens = n if mode is GraphMode.NONE else min(s for s in cfg.capture_sizes if s >= n)
            assert desc.num_tokens == want_tokens, (m, kind, n, desc)
            if mode is not GraphMode.NONE:
                assert desc.has_lora == kw.get("has_lora", False), (m, kind, n, desc)
            modes.append(mode)
            padded.append(desc.num_tokens)
        grid[m, kind] = (modes, np.array(padded))
print(f"{len(grid) * len(NS)} dispatches agree with the hand-written rule")
for kind in KINDS:
    print(f"FULL_AND_PIECEWISE, {kind:>15}:", dict(Counter(x.name for x in grid[GraphMode.FULL_AND_PIECEWISE, kind][0])))

# %% [markdown]
# The picture: one row per (configuration mode, kind of batch), coloured by the runtime
# mode each token count gets. Uniform decode batches above 128 tokens fall back to the
# mixed part because no decode graph is captured for more than `max_num_seqs` requests.

# %%
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap

code = {GraphMode.NONE: 0, GraphMode.PIECEWISE: 1, GraphMode.FULL: 2}
rows = list(grid)
image = np.array([[code[x] for x in grid[r][0]] for r in rows])
fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 7.5), gridspec_kw=dict(height_ratios=[3, 2]))
ax.imshow(image, aspect="auto", interpolation="nearest", extent=(NS[0] - 0.5, NS[-1] + 0.5, len(rows) - 0.5, -0.5),
          cmap=ListedColormap(["#bbbbbb", "#f6b26b", "#3c78d8"]), vmin=0, vmax=2)
ax.set_yticks(range(len(rows)), [f"{m.name} / {k}" for m, k in rows], fontsize=7)
ax.set_xlabel("num_tokens of the batch")
ax.set_title("runtime mode per input: grey NONE, orange PIECEWISE, blue FULL")
n_full, padded = NS, grid[GraphMode.FULL, "mixed"][1]
ax2.step(n_full, padded, where="mid", label="padded size (FULL, mixed)")
ax2.plot(n_full, n_full, "k:", lw=1, label="no padding")
ax2.fill_between(n_full, n_full, np.where(padded >= n_full, padded, n_full), step="mid", alpha=0.3, label="padding")
ax2.set_xlabel("num_tokens")
ax2.set_ylabel("tokens computed")
ax2.legend(loc="upper left")
fig.tight_layout()

# %% [markdown]
# ## 3 · Padding waste on a workload
#
# `padding_report(table, batches)` dispatches a whole workload and tallies, per runtime
# mode, the batches and the real versus computed tokens. The workload below is random:
# mostly small decode batches, some medium mixed batches, and a tail of large prefills
# above the largest capture size (those run eagerly and waste nothing).

# %% tags=["pure"]
def make_workload(n_steps):
    """(num_tokens, uniform_decode) per step: 70% decode, 25% mixed, 5% large prefills."""
    out = []
    for kind in rng.choice(3, size=n_steps, p=[0.7, 0.25, 0.05]):
        if kind == 0:
            out.append((int(rng.integers(1, MAX_SEQS + 1)), True))
        elif kind == 1:
            out.append((int(rng.lognormal(3.5, 0.6)) + 1, False))
        else:
            out.append((int(rng.integers(129, 1024)), False))
    return out


workload = make_workload(5000)
for m in (GraphMode.FULL_AND_PIECEWISE, GraphMode.FULL_DECODE_ONLY, GraphMode.PIECEWISE):
    rep = padding_report(tables[m], workload)
    assert rep.batches == len(workload) and rep.real_tokens == sum(n for n, _ in workload)
    assert rep.padded_tokens >= rep.real_tokens
    print(f"{m.name:>20}: hit rate {rep.hit_rate:6.1%}, waste {rep.waste_ratio:5.1%} | "
          + ", ".join(f"{u.mode.name} {u.batches} batches waste {u.waste_ratio:.1%}" for u in rep.modes))

# %% [markdown]
# ## 4 · Choosing capture sizes from a histogram
#
# The default sizes (1, 2, 4, then steps of 8 and 16) are a good generic choice. When
# the batch sizes of a deployment are known, `suggest_capture_sizes(histogram,
# max_graphs)` picks the sizes that minimise the padded tokens exactly (a dynamic
# programme over the observed sizes). It always keeps the largest observed size, so no
# batch that had a graph loses it. Fewer graphs mean less capture time and memory; the
# curve shows what each graph buys.

# %% tags=["pure"]
graph_sizes = [n for n, _ in workload if n <= configs[GraphMode.FULL].max_capture_size]
hist = Counter(graph_sizes)
default_cost = padded_tokens(sizes, hist)
real = sum(graph_sizes)
budgets = sorted({2, 4, 8, 16, 24, 32, len(sizes)})
suggested = {k: suggest_capture_sizes(hist, k) for k in budgets}
costs = {k: padded_tokens(s, hist) for k, s in suggested.items()}
for k, s in suggested.items():
    assert len(s) <= k and max(s) == max(hist)
    if k > budgets[0]:
        assert costs[k] <= costs[budgets[budgets.index(k) - 1]], "more graphs never pad more"
# the default list is one candidate the optimiser could have picked:
used_default = [s for s in sizes if s <= configs[GraphMode.FULL].pad(max(hist))]
assert costs[len(sizes)] <= default_cost
print(f"default sizes: {len(used_default)} graphs used, waste {1 - real / default_cost:.2%}")
for k in budgets:
    print(f"suggest_capture_sizes(hist, {k:>2}): waste {1 - real / costs[k]:.2%}  {suggested[k] if k <= 8 else ''}")

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
ax.hist(graph_sizes, bins=np.arange(0.5, max(hist) + 1.5), color="0.6")
for s in suggested[8]:
    ax.axvline(s, color="#cc0000", lw=1)
ax.set_xlabel("num_tokens (batches that fit a graph)")
ax.set_ylabel("batches")
ax.set_title("workload histogram; red: suggest_capture_sizes(hist, 8)")
ax2.plot(budgets, [1 - real / costs[k] for k in budgets], "o-", label="suggested sizes")
ax2.axhline(1 - real / default_cost, color="k", ls="--", label=f"default sizes ({len(used_default)} used)")
ax2.set_xlabel("max_graphs")
ax2.set_ylabel("padding waste (share of computed tokens)")
ax2.legend()
fig.tight_layout()
