"""Per-break overhead of breakable graphs: `python -m cgraph.bench.breaks`.

For a chain of S segments (S - 1 eager breaks), measured interleaved in one run:
  T_breakable: BreakableCapture.replay()
  T_full:      one graph holding the same segment kernels and break kernels
  T_eager:     the breaks alone, called eagerly
  overhead per break = (T_breakable - T_full - T_eager) / (S - 1)
once with wall time (each call followed by a sync) and once with host time (calls issued
back to back). In wall time the GPU runs graph segments while the host issues the next
break, so the subtraction can go below zero; the host-time figure is the cost a break
adds to the host's critical path (one more graph launch and a Python call).
Each segment is three small raw kernels; each break launches one raw kernel eagerly.
"""

from __future__ import annotations

import argparse

import numpy as np

from cgraph.cuda.device import require_device
from cgraph.bench.report import add_out_argument, write_results
from cgraph.bench.timing import host_us, wall_us

_SRC = r"""
extern "C" __global__ void bump(float* x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * a + 1.0f;
}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out_argument(parser)
    args = parser.parse_args(argv)
    cp = require_device()
    from cgraph.cuda.breakable import BreakableCapture, eager_break
    from cgraph.cuda.graph import capture

    bump = cp.RawKernel(_SRC, "bump")
    x = cp.asarray(np.random.default_rng().uniform(1, 2, 1024).astype(np.float32))
    n = np.int32(x.size)

    def segment() -> None:
        for a in (0.5, 0.25, 0.75):
            bump((4,), (256,), (x, np.float32(a), n))

    @eager_break
    def attention_stand_in() -> None:
        bump((4,), (256,), (x, np.float32(0.9), n))

    rows = []
    stream = cp.cuda.Stream(non_blocking=True)
    sync = stream.synchronize
    with stream:
        for segments in (16, 32, 64):
            def chain() -> None:
                for i in range(segments):
                    segment()
                    if i < segments - 1:
                        attention_stand_in()

            with BreakableCapture() as cap:
                chain()
            assert cap.num_graphs == segments and cap.num_breaks == segments - 1
            full = capture(chain)

            def breaks_only() -> None:
                for _ in range(segments - 1):
                    attention_stand_in()

            paths = {"breakable": cap.replay, "full": full.replay, "eager": breaks_only}
            wall = wall_us(paths, sync)
            host = host_us(paths, sync, batch=20, rounds=40)
            rows.append({
                "segments": segments, "breaks": segments - 1,
                "breakable_us": wall["breakable"], "full_graph_us": wall["full"],
                "breaks_eager_us": wall["eager"],
                "wall_overhead_per_break_us": (wall["breakable"] - wall["full"] - wall["eager"]) / (segments - 1),
                "host_overhead_per_break_us": (host["breakable"] - host["full"] - host["eager"]) / (segments - 1),
            })
            cap.close()
            full.close()
    worst_wall = max(r["wall_overhead_per_break_us"] for r in rows)
    worst_host = max(r["host_overhead_per_break_us"] for r in rows)
    write_results("breaks", rows, title="Per-break overhead of breakable replay",
                  notes=[f"worst per-break overhead: wall {worst_wall:.2f} us, host {worst_host:.2f} us "
                         "(target <= 4 us)"], out_dir=args.out)


if __name__ == "__main__":
    main()
