"""Helpers of cgraph.bench.encoder: device-made images, step timing and the per-step breakdown."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def device_items(cp: Any, model: Any, grids: Sequence[tuple[int, int]], seed: int) -> list[Any]:
    """Random images for the grids, made on the device (fast for large ones) and prepared."""
    rs = cp.random.RandomState(seed)
    s = model.spec
    step = s.patch * s.merge
    out = []
    for r, c in grids:
        im = rs.standard_normal((s.channels, r * step, c * step), dtype=cp.float32).astype(model.dtype)
        out.append(model.prepare(im))
    return out


def host_items(items: Sequence[Any]) -> list[Any]:
    """The same prepared items with their patches copied to host (NumPy) memory."""
    import attrs  # noqa: PLC0415

    return [attrs.evolve(it, patches=it.patches.get()) for it in items]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100, NumPy's linear interpolation) of `values`."""
    return float(np.percentile(np.asarray(values, np.float64), q))


def time_steps(cp: Any, methods: Mapping[str, Callable[[Sequence[Any]], Any]], steps: Sequence[Sequence[Any]],
               warm: int = 2) -> dict[str, list[float]]:
    """Wall seconds of every step for each method, device synchronised after each call.

    Methods run interleaved step by step (method order rotates), so drift hits all alike;
    the first `warm` steps are run once more up front and not counted.
    """
    sync = cp.cuda.Device().synchronize
    names = list(methods)
    for step in steps[:warm]:
        for n in names:
            methods[n](step)
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for k, step in enumerate(steps):
        order = names[k % len(names):] + names[: k % len(names)]
        for n in order:
            t0 = time.perf_counter()
            methods[n](step)
            sync()
            times[n].append(time.perf_counter() - t0)
    return times


def eager_breakdown(cp: Any, fn: Callable[[Sequence[Any]], Any], steps: Sequence[Sequence[Any]]) -> dict[str, float]:
    """Mean ms per step of an eager method: host time until the call returns (issuing the
    kernels) and GPU time between events around it."""
    sync = cp.cuda.Device().synchronize
    stream = cp.cuda.get_current_stream()
    host = gpu = 0.0
    for step in steps:
        sync()
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(stream)
        t0 = time.perf_counter()
        fn(step)
        host += time.perf_counter() - t0
        b.record(stream)
        b.synchronize()
        gpu += cp.cuda.get_elapsed_time(a, b) / 1e3
    n = max(1, len(steps))
    return {"host_issue_ms": host / n * 1e3, "gpu_ms": gpu / n * 1e3}


def graph_breakdown(cp: Any, mgr: Any, steps: Sequence[Sequence[Any]]) -> dict[str, float]:
    """Mean ms per step of the manager's phases (record_phases on for this pass only)."""
    sync = cp.cuda.Device().synchronize
    mgr.reset_stats()
    mgr.record_phases = True
    try:
        for step in steps:
            mgr.execute(step)
            sync()
        ph = mgr.phases
        replays = mgr.stats.replays
    finally:
        mgr.record_phases = False
        mgr.reset_stats()
    n = max(1, len(steps))
    out = {f"{k}_ms": v / n * 1e3 for k, v in ph.items()}
    out["host_total_ms"] = sum(v for k, v in ph.items() if k not in ("replay_gpu", "stage_wait")) / n * 1e3
    out["replays_per_step"] = replays / n
    return out


def check_outputs(cp: Any, model: Any, items: Sequence[Any], outs: Sequence[Any], label: str,
                  tol: float = 5e-2) -> float:
    """Largest |graph - eager| / max(1, max |eager|) over the items, each image encoded
    eagerly alone; raises when over `tol` (guards every figure)."""
    worst = 0.0
    for it, o in zip(items, outs):
        ref = model.encode_batch([it])[0].astype(cp.float32)
        if o.shape != ref.shape:
            raise RuntimeError(f"{label}: output shape {o.shape}, eager {ref.shape}")
        err = float(cp.abs(o.astype(cp.float32) - ref).max()) / max(1.0, float(cp.abs(ref).max()))
        worst = max(worst, err)
    if not worst <= tol:
        raise RuntimeError(f"{label}: graph output differs from eager by {worst} (relative)")
    return worst
