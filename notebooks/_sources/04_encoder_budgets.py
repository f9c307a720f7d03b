# %% [markdown]
# # 04 · Vision encoder: token budgets instead of batch sizes
#
# A vision encoder sees images of many sizes, so "batch size" is the wrong unit for its
# graphs. Instead each graph is captured for a *token budget*: any set of images whose
# tokens add up to at most the budget is packed into one replay, and the rest of the
# budget is padding. `cgraph.encoder` splits the problem in two:
#
# - pure planning (no GPU): `generate_budgets`, `plan_batches` (smallest images first,
#   greedily packed), `padding_stats`, `suggest_budgets_for_workload`;
# - `EncoderGraphManager`: one graph per budget in one shared pool; `execute(images)`
#   packs, replays and returns one output per image in input order. An image larger than
#   the largest budget runs eagerly (a *miss*).

# %% tags=["pure"]
import os

import numpy as np

from cgraph.encoder import (generate_budgets, padding_stats, plan_batches, smallest_fitting_budget,
                            suggest_budgets_for_workload)
from cgraph.encoder.workload import grid_tokens, make_images, mixed_grids

SEED = int(os.environ.get("CGRAPH_SEED", np.random.SeedSequence().entropy % 2**32))
N_IMAGES, MIN_TOKENS, MAX_TOKENS, MAX_BATCH = 48, 16, 320, 16
budgets = generate_budgets(64, 256)           # 64, 128, 256: images above 256 tokens run eagerly
grids = mixed_grids(N_IMAGES, MIN_TOKENS, MAX_TOKENS, seed=SEED, max_side=64)
tokens = grid_tokens(grids)                   # output tokens per image (2x2-merged patches)
print(f"seed {SEED}; budgets {budgets}; {N_IMAGES} images with {min(tokens)}..{max(tokens)} tokens")

# %% [markdown]
# ## 1 · Packing a mixed batch
#
# `plan_batches` sorts the images by size and fills a batch until the next image would
# overflow the largest budget or `max_batch_size`; each batch then gets the smallest
# budget that holds it. The checks below restate those rules on the result.

# %% tags=["pure"]
def check_plan(plan, budgets):
    seen = sorted(i for b in plan for i in b.items)
    assert seen == list(range(len(tokens))), "every image is planned exactly once"
    for b in plan:
        assert b.tokens == sum(tokens[i] for i in b.items)
        if b.eager:
            assert len(b.items) == 1 and b.tokens > budgets[-1], "only oversize images run eagerly"
        else:
            assert len(b.items) <= MAX_BATCH and b.budget == smallest_fitting_budget(budgets, b.tokens)
    return padding_stats(plan)


plan = plan_batches(tokens, budgets, MAX_BATCH)
stats = check_plan(plan, budgets)
suggested = suggest_budgets_for_workload(tokens, budgets[-1], MAX_BATCH, len(budgets))
plan_s = plan_batches(tokens, suggested, MAX_BATCH)
stats_s = check_plan(plan_s, suggested)
# packing depends only on the largest budget, and the suggestion is optimal for these totals
assert [b.items for b in plan] == [b.items for b in plan_s]
assert stats_s.padding_tokens <= stats.padding_tokens
expected_hits = sum(t <= budgets[-1] for t in tokens)
for name, b, s in (("powers of two", budgets, stats), ("suggested", suggested, stats_s)):
    print(f"{name:>14} {b}: {s.graph_batches} replays + {s.eager_batches} eager images, "
          f"padding {s.padding_tokens} of {s.computed_tokens} computed tokens ({s.waste:.1%})")
print(f"hit rate of the plan: {expected_hits}/{N_IMAGES} images in graphs")

# %% [markdown]
# Each bar below is one replay: coloured blocks are images (width = tokens), the hatched
# rest is padding up to the budget (black tick). Red bars are images that fit no budget
# and run eagerly.

# %%
import matplotlib.pyplot as plt


def draw_plan(ax, plan, budgets, title):
    cmap = plt.get_cmap("tab20")
    for row, b in enumerate(plan):
        left = 0
        for i in b.items:
            ax.barh(row, tokens[i], left=left, color="#cc0000" if b.eager else cmap(i % 20), ec="white", lw=0.5)
            left += tokens[i]
        if not b.eager:
            ax.barh(row, b.budget - b.tokens, left=b.tokens, color="none", ec="0.5", hatch="///", lw=0.5)
            ax.plot([b.budget, b.budget], [row - 0.45, row + 0.45], "k", lw=1.5)
    for budget in budgets:
        ax.axvline(budget, color="0.8", lw=0.8, zorder=0)
    ax.set_yticks(range(len(plan)), [f"{'eager' if b.eager else b.budget}" for b in plan], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("tokens")
    ax.set_title(title, fontsize=10)


fig, axes = plt.subplots(1, 2, figsize=(12, 0.28 * len(plan) + 1.5))
draw_plan(axes[0], plan, budgets, f"budgets {budgets}: padding {stats.waste:.1%}")
draw_plan(axes[1], plan_s, suggested, f"suggested {suggested}: padding {stats_s.waste:.1%}")
fig.tight_layout()

# %% [markdown]
# ## 2 · Budget graphs on the GPU
#
# `VisionEncoder` is a small ViT-like model made of `cgraph.kernels` (patch embedding,
# bidirectional varlen attention, gated MLP, a 2x2 patch merger) with random weights.
# `EncoderGraphManager` captures it once per budget, largest first, into one pool. Its
# outputs must match the model run eagerly on each image alone; packing changes the GEMM
# shapes, so the comparison allows float16 rounding differences.

# %%
import cupy as cp

from cgraph.cuda.device import device_name
from cgraph.encoder import EncoderGraphManager, VisionEncoder
from cgraph.encoder.model import EncoderSpec

spec = EncoderSpec()                          # 3 channels, 8x8 patches, hidden 128, 2 layers
model = VisionEncoder(spec, seed=0)
images = [model.prepare(cp.asarray(im)) for im in make_images(grids, spec.channels, spec.patch, seed=SEED)]
assert [im.tokens for im in images] == list(tokens)
mgr = EncoderGraphManager(model, budgets, MAX_BATCH)
print(mgr, "on", device_name())
for b in budgets:
    g = mgr.graph(b)
    print(f"  budget {b:>4}: {g.num_nodes} nodes")
print(f"  shared pool: {mgr.pool.total_bytes() / 2**20:.1f} MiB")

outputs = mgr.execute(images)
worst = 0.0
for im, o in zip(images, outputs):
    ref_out = model.encode(im)
    assert o.shape == ref_out.shape == (im.tokens, spec.out_dim)
    worst = max(worst, float(cp.abs(o.astype(cp.float32) - ref_out.astype(cp.float32)).max()))
assert worst <= 5e-2, f"graph outputs differ from eager by {worst}"
s = mgr.stats
assert s.hits == expected_hits and s.misses == N_IMAGES - expected_hits
assert s.replays == stats.graph_batches
print(f"outputs match eager per image (max abs difference {worst:.1e})")
print(f"hit rate {s.hit_rate:.1%} ({s.hits} in graphs, {s.misses} eager), {s.replays} replays, "
      f"padding waste {s.padding_waste:.1%}; replays per budget {dict(s.budget_replays)}")

# %% [markdown]
# ## 3 · Against eager: one image at a time, and one packed forward
#
# The same pre-unfolded images, timed back to back: the encoder run eagerly on one image
# at a time, the encoder run eagerly on all images in *one packed varlen forward* (the
# simplest alternative a user has, and the baseline that matters), and `mgr.execute`
# (packing, staging, replays, output copies, eager misses). Each figure is the median of
# several passes with the device synchronised.

# %%
import statistics
import time


def median_ms(fn, reps=5):
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


timings = {"eager, one image at a time": median_ms(lambda: [model.encode(im) for im in images]),
           "eager, one packed batch": median_ms(lambda: model.encode_batch(images)),
           "budget graphs (execute)": median_ms(lambda: mgr.execute(images))}
base, packed = timings["eager, one image at a time"], timings["eager, one packed batch"]
for name, ms in timings.items():
    print(f"{name:>27}: {ms:7.2f} ms per pass  ({base / ms:5.1f}x one at a time, {packed / ms:4.2f}x packed)")

fig, ax = plt.subplots(figsize=(7, 2.4))
ax.barh(list(timings), [packed / ms for ms in timings.values()], color=["0.6", "0.75", "#3c78d8"])
ax.axvline(1.0, color="k", lw=0.8)
ax.set_xlabel("speed-up over one packed eager forward")
ax.set_title(f"{N_IMAGES} images, {MIN_TOKENS}..{MAX_TOKENS} tokens, on {device_name()}", fontsize=10)
ax.invert_yaxis()
fig.tight_layout()
mgr.close()

# %% [markdown]
# ## 4 · Serving-shaped steps
#
# A server does not encode hundreds of images at once: each step encodes the few images
# of the requests that just arrived. `serving_steps` draws such a stream (1..8 images per
# step, tokens log-uniform in 64..1024). The budgets are suggested from the step totals of
# a calibration stream with another seed, so every step is one replay. Per step, the
# manager's phases (`record_phases=True`) say where the time goes: host work to stage
# the batch (pinned slot + one copy), to launch the replay and to hand out the outputs
# (one copy + views), against the replay's GPU time.

# %%
from cgraph.encoder import suggest_budgets
from cgraph.encoder.workload import serving_steps

SERVING = dict(min_images=1, max_images=8, min_tokens=64, max_tokens=1024, max_side=spec.max_grid // 2)
stream_grids = serving_steps(60, seed=SEED, **SERVING)
calib = serving_steps(400, seed=SEED + 1, **SERVING)
serve_budgets = suggest_budgets([sum(grid_tokens(g)) for g in calib], 10, max_budget=8192)
steps = [[model.prepare(cp.asarray(im)) for im in make_images(g, spec.channels, spec.patch, seed=SEED + k)]
         for k, g in enumerate(stream_grids)]
smgr = EncoderGraphManager(model, serve_budgets, SERVING["max_images"])
for step in steps[:5]:
    for im, o in zip(step, smgr.execute(step)):
        d = float(cp.abs(o.astype(cp.float32) - model.encode(im).astype(cp.float32)).max())
        assert d <= 5e-2, f"graph output differs from eager by {d}"


def step_ms(fn):
    out = []
    for step in steps:
        t0 = time.perf_counter()
        fn(step)
        cp.cuda.Device().synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


for fn in (model.encode_batch, smgr.execute):  # warm-up
    step_ms(fn)
lat = {"eager packed": step_ms(model.encode_batch), "budget graphs": step_ms(smgr.execute)}
for name, ms in lat.items():
    print(f"{name:>14}: p50 {np.percentile(ms, 50):6.3f} ms, p99 {np.percentile(ms, 99):6.3f} ms per step")
print(f"graphs vs packed: p50 {np.percentile(lat['eager packed'], 50) / np.percentile(lat['budget graphs'], 50):.2f}x, "
      f"p99 {np.percentile(lat['eager packed'], 99) / np.percentile(lat['budget graphs'], 99):.2f}x; "
      f"budgets {serve_budgets}")

smgr.reset_stats()
smgr.record_phases = True
for step in steps:
    smgr.execute(step)
    cp.cuda.Device().synchronize()
phases = {k: v / len(steps) * 1e3 for k, v in smgr.phases.items()}
print(f"padding waste {smgr.stats.padding_waste:.1%}; ms per step: "
      + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))
fig, ax = plt.subplots(figsize=(7, 2.0))
left = 0.0
for k in ("prepare", "plan", "stage", "replay", "outputs"):
    ax.barh("graphs, host", phases[k], left=left, label=k)
    left += phases[k]
ax.barh("graphs, GPU", phases["replay_gpu"], color="#3c78d8")
ax.set_xlabel("ms per step")
ax.legend(fontsize=7, ncol=5, loc="lower right")
fig.tight_layout()
smgr.close()

# %% [markdown]
# ## 5 · The benchmark's figures, including a Qwen2.5-VL-sized vision tower
#
# `python -m cgraph.bench.encoder` measures the same comparison for the small model and
# for the `qwen2.5-vl` preset (32 layers, hidden 1280, 14x14 patches, 2x2 merger), and
# writes `notebooks/results/encoder.{json,md}` and the per-phase breakdown
# `encoder_breakdown.{json,md}`. The committed results are shown here.

# %%
import json
from pathlib import Path

results = Path("results") if Path("results/encoder.json").exists() else Path("notebooks/results")
if (results / "encoder.json").exists():
    data = json.loads((results / "encoder.json").read_text())
    print(f"measured on {data['device']}, {data['date']}")
    for r in data["rows"]:
        if r.get("vs_packed_p50") is not None:
            print(f"{r['model']:>10} | {r['workload'][:48]:<48} | {r['method'][:34]:<34} | "
                  f"p50 {r['ms_p50']:8.3f} ms  p99 {r['ms_p99']:8.3f} ms | vs packed "
                  f"{r['vs_packed_p50']:.2f}x / {r['vs_packed_p99']:.2f}x")
else:
    print("no benchmark results yet: run python -m cgraph.bench.encoder")
