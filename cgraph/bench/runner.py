"""Runner overhead and capture cost: `python -m cgraph.bench.runner`.

Measures, side by side in one run on one graph of a single tiny raw kernel:
- bare `cupy.cuda.Graph.launch` (the floor),
- `CapturedGraph.replay`,
- a full runner step: `dispatch` + `GraphRunner.run` (lookup + replay),
- torch.cuda.CUDAGraph.replay behind a minimal vLLM-style wrapper (dict lookup + replay),
  capturing the same CuPy kernel on torch's stream (skipped where torch is absent);
then capture seconds per graph and for a whole default table (51 sizes) of a 24-kernel
function, the pool bytes of that table against its largest graph alone, and rebind
(cudaGraphExecUpdate) against a fresh capture.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cgraph import GraphConfig, GraphMode, build_dispatch_table, dispatch
from cgraph.cuda.device import require_device
from cgraph.bench.report import add_out_argument, write_results
from cgraph.bench.timing import host_us

_SRC = r"""
extern "C" __global__ void bump(float* x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * a + 1.0f;
}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="kernel pairs in the capture-cost model")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    from cgraph.cuda.graph import capture
    from cgraph.cuda.pool import GraphPool
    from cgraph.cuda.context import capture_phase
    from cgraph.cuda.runner import GraphRunner
    from cgraph.cuda.tables import capture_all

    bump = cp.RawKernel(_SRC, "bump")
    x = cp.asarray(np.random.default_rng().uniform(1, 2, 512).astype(np.float32))

    def one_kernel(x):
        bump((2,), (256,), (x, np.float32(0.5), np.int32(x.size)))
        return x

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        one_kernel(x)
        bare = stream.end_capture()
    bare.upload(stream)
    sync = cp.cuda.Device().synchronize

    rows = []
    with cp.cuda.Stream(non_blocking=True) as run_stream:
        g = capture(one_kernel, x)
        cfg = GraphConfig(GraphMode.FULL, max_num_seqs=256)
        table = build_dispatch_table(cfg)
        runner = GraphRunner(one_kernel, GraphMode.FULL, name="one_kernel")
        mode, desc = dispatch(table, 5)
        with capture_phase():
            runner.run(mode, desc, x)

        def step() -> None:
            m, d = dispatch(table, 5)
            runner.run(m, d, x)

        paths = {
            "bare cupy Graph.launch": bare.launch,
            "CapturedGraph.replay": g.replay,
            "runner step (dispatch + run)": step,
        }
        torch_call = _torch_wrapper(cp, bump, x)
        if torch_call is not None:
            paths["torch CUDAGraph.replay behind vLLM-style wrapper"] = torch_call
        timings = host_us(paths, sync)
    bare_us = timings["bare cupy Graph.launch"]
    runner_us = timings["runner step (dispatch + run)"]
    torch_us = timings.get("torch CUDAGraph.replay behind vLLM-style wrapper")
    for path, us in timings.items():
        rows.append({"path": path, "host_us": us, "minus_bare_us": us - bare_us})

    capture_rows, extra = _capture_costs(cp, capture, GraphPool, GraphRunner, capture_all, table, args.layers)
    write_results(
        "runner",
        rows,
        title="Host overhead per step (one-kernel graph)",
        notes=[
            f"runner step - bare launch = {runner_us - bare_us:.2f} us (target <= 1.5 us)",
            (f"runner step / torch wrapper = {runner_us / torch_us:.2f}" if torch_us else "torch not installed"),
            *capture_rows,
        ],
        extra=extra, out_dir=args.out
    )


def _torch_wrapper(cp, bump, x):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    graphs: dict = {}
    key = ("FULL", 8)
    tstream = torch.cuda.Stream()
    # Replays go to a non-default torch stream, as the cupy paths use a non-default stream.
    torch.cuda.set_stream(torch.cuda.Stream())
    with torch.cuda.stream(tstream):
        ext = cp.cuda.Stream.from_external(torch.cuda.current_stream())
        with ext:
            bump((2,), (256,), (x, np.float32(0.5), np.int32(x.size)))
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=tstream):
        ext = cp.cuda.Stream.from_external(torch.cuda.current_stream())
        with ext:
            bump((2,), (256,), (x, np.float32(0.5), np.int32(x.size)))
    graphs[key] = g

    def wrapped() -> None:
        # What vLLM's wrapper does per step once captured: a mode check, a lookup, replay.
        mode, size = key
        if mode == "NONE":
            return
        entry = graphs.get((mode, size))
        entry.replay()

    return wrapped


def _capture_costs(cp, capture, GraphPool, GraphRunner, capture_all, table, layers):
    cap = table.config.max_capture_size
    hidden = 1024
    xs = cp.asarray(np.random.default_rng().uniform(1, 2, (cap, hidden)).astype(np.float32))
    ws = cp.asarray(np.random.default_rng().uniform(1, 2, (hidden,)).astype(np.float32))
    out = cp.empty_like(xs)

    def model(x, w, out):
        h = x
        for _ in range(layers):
            t = h * w  # a fresh temporary per layer: pool reuse matters
            h = cp.tanh(t) + x
        cp.copyto(out, h)
        return out

    single = GraphPool()
    t0 = time.perf_counter()
    g = capture(model, xs, ws, out, pool=single)
    one_graph_s = time.perf_counter() - t0
    largest_bytes = single.total_bytes()
    fresh_capture_s = g.capture_seconds
    rebind_note = "rebind: cuda-bindings not installed"
    rebind_s = None
    try:
        xs2, out2 = xs.copy(), cp.empty_like(out)
        rebind_s = min(g.rebind(xs2, ws, out2) for _ in range(5))
        rebind_note = (f"rebind (recapture + cudaGraphExecUpdate) {rebind_s * 1e3:.2f} ms vs fresh "
                       f"capture+instantiate {fresh_capture_s * 1e3:.2f} ms "
                       f"({fresh_capture_s / rebind_s:.1f}x faster)")
    except Exception as exc:  # noqa: BLE001 - reported in the notes
        rebind_note = f"rebind failed: {exc}"
    single.close()

    runner = GraphRunner(model, GraphMode.FULL, name="model")
    report = capture_all(runner, table, lambda d: (xs[: d.num_tokens], ws, out[: d.num_tokens]),
                         progress=False)
    nodes = report.graphs[0].nodes
    # lazy capture: each key captured on its first use while serving (smallest first here,
    # the order a warming server meets them), against the same keys captured up front
    from cgraph.core.dispatch import capture_descriptors  # noqa: PLC0415
    from cgraph.cuda.runner import LazyCapture  # noqa: PLC0415

    lazy = GraphRunner(model, GraphMode.FULL, name="lazy", lazy=LazyCapture())
    first_use = []
    for desc in reversed(capture_descriptors(table)[GraphMode.FULL]):
        n = desc.num_tokens
        t0 = time.perf_counter()
        lazy.run(GraphMode.FULL, desc, xs[:n], ws, out[:n])
        cp.cuda.get_current_stream().synchronize()
        first_use.append(time.perf_counter() - t0)
    lazy_pool = lazy.pool.total_bytes()
    lazy.close()
    notes = [
        f"capture of the largest graph ({nodes} nodes): {one_graph_s * 1e3:.1f} ms including warm-up; "
        f"capture+instantiate alone {fresh_capture_s * 1e3:.2f} ms",
        f"whole default table ({len(report.graphs)} sizes): {report.total_seconds:.2f} s, "
        f"{report.total_seconds / len(report.graphs) * 1e3:.1f} ms per graph",
        f"pool bytes, whole table: {report.pool_bytes / 2**20:.1f} MiB vs largest graph alone "
        f"{largest_bytes / 2**20:.1f} MiB (ratio {report.pool_bytes / largest_bytes:.2f})",
        rebind_note,
        f"lazy capture on first use (LazyCapture, smallest first): median "
        f"{sorted(first_use)[len(first_use) // 2] * 1e3:.2f} ms, largest {max(first_use) * 1e3:.2f} ms per "
        f"key (capture + first replay), against {report.total_seconds / len(report.graphs) * 1e3:.2f} ms per "
        f"graph in capture_all; pool {lazy_pool / 2**20:.1f} MiB",
    ]
    runner.close()
    extra = {"table_graphs": len(report.graphs), "table_capture_s": report.total_seconds,
             "table_pool_bytes": report.pool_bytes, "largest_graph_bytes": largest_bytes,
             "rebind_s": rebind_s, "fresh_capture_s": fresh_capture_s,
             "lazy_first_use_s": first_use, "lazy_pool_bytes": lazy_pool}
    return notes, extra


if __name__ == "__main__":
    main()
