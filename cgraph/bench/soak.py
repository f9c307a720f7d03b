"""Soak: `python -m cgraph.bench.soak [--steps 100000]`.

Serves an endless stream of random requests through the engine in every mode (steps
split evenly), so batches of every size and mix reach dispatch and the runners. Every
`--check-every`-th step is run a second time eagerly on the same padded inputs and the
greedy tokens are compared (target: 0 mismatches). GPU memory in use is read after
capture and at the end of each mode (target: flat), and after every engine is closed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cgraph.cuda.device import require_device
from cgraph.bench.report import add_out_argument, write_results
from cgraph.core.config import GraphConfig, default_capture_sizes

MODES = ("full", "piecewise", "full_decode_only", "full_and_piecewise", "none")


def _used_mib(cp) -> float:
    cp.cuda.Device().synchronize()
    free, total = cp.cuda.runtime.memGetInfo()
    return (total - free) / 2**20


def soak_mode(model, mode: str, steps: int, *, check_every: int, max_num_seqs: int, budget: int,
              max_prompt: int, max_new: int, rng: np.random.Generator, cp) -> dict:
    from cgraph.engine.engine import Engine
    from cgraph.engine.blocks import BLOCK_SIZE, BlockAllocator
    from cgraph.engine.scheduler import Request, Scheduler

    gcfg = GraphConfig(mode, capture_sizes=None if mode == "none" else default_capture_sizes(budget),
                       max_num_seqs=max_num_seqs, max_num_batched_tokens=budget)
    engine = Engine(model, gcfg)
    if mode != "none":
        engine.capture(progress=False)
    sched = Scheduler(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                      allocator=BlockAllocator(engine.num_kv_blocks, BLOCK_SIZE))
    vocab = model.cfg.vocab_size
    next_id = 0
    checked = mismatches = graph_steps = 0
    mem_start = None
    started = time.perf_counter()
    for i in range(steps):
        while sched.num_waiting < 4:
            prompt = rng.integers(0, vocab, size=int(rng.integers(1, max_prompt + 1)))
            sched.add(Request(next_id, prompt, max_new_tokens=int(rng.integers(1, max_new + 1))))
            next_id += 1
        batch = sched.schedule()
        tokens, record = engine.step(batch)
        graph_steps += record.mode != "none"
        if i % check_every == 0:
            reference, _ = engine.step(batch, eager=True)
            checked += 1
            mismatches += reference != tokens
        sched.update(batch, tokens)
        if i == 100:
            mem_start = _used_mib(cp)  # after the first steps: caches and kernels are warm
    seconds = time.perf_counter() - started
    mem_end = _used_mib(cp)
    engine.close()
    return {"mode": mode, "steps": steps, "requests": next_id, "checked_vs_eager": checked,
            "mismatches": mismatches, "graph_steps": graph_steps, "steps_per_s": steps / seconds,
            "gpu_mib_start": mem_start, "gpu_mib_end": mem_end}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="total steps over all modes")
    parser.add_argument("--check-every", type=int, default=20)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    from cgraph.models.config import demo_config
    from cgraph.models.llama import LlamaModel

    model = LlamaModel(demo_config(args.layers, args.hidden, vocab_size=4096, max_seq_len=256),
                       seed=args.seed)
    rng = np.random.default_rng(args.seed)
    before = _used_mib(cp)
    rows = [soak_mode(model, mode, args.steps // len(MODES), check_every=args.check_every,
                      max_num_seqs=16, budget=256, max_prompt=96, max_new=48, rng=rng, cp=cp)
            for mode in MODES]
    cp.get_default_memory_pool().free_all_blocks()
    after = _used_mib(cp)
    total = sum(r["steps"] for r in rows)
    bad = sum(r["mismatches"] for r in rows)
    write_results("soak", rows, title=f"Soak: {total} engine steps over {len(MODES)} modes",
                  notes=[f"mismatches against eager: {bad} of {sum(r['checked_vs_eager'] for r in rows)} "
                         "checked steps (target 0)",
                         f"GPU memory in use before the engines: {before:.0f} MiB, after closing them "
                         f"all: {after:.0f} MiB"], out_dir=args.out)
    if bad:
        raise SystemExit(f"soak: {bad} steps differ from eager")


if __name__ == "__main__":
    main()
