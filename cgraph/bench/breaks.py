"""Per-break overhead of breakable graphs: `python -m cgraph.bench.breaks`.

For a chain of S segments (S - 1 eager breaks), all measured in one run as wall time per
call with the device synchronised after each call (median of many):
  T_breakable: BreakableCapture.replay()
  T_full:      one graph holding the same segment kernels and break kernels
  T_eager:     the breaks alone, called eagerly
  overhead per break = (T_breakable - T_full - T_eager) / (S - 1).
Each segment is three small raw kernels; each break launches one raw kernel eagerly.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from cgraph._gpu import require_device
from cgraph.bench._report import write_results

_SRC = r"""
extern "C" __global__ void bump(float* x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * a + 1.0f;
}
"""


def _wall_us(call, sync, reps: int = 300, warm: int = 20) -> float:
    for _ in range(warm):
        call()
    sync()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        call()
        sync()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return statistics.median(samples)


def main() -> None:
    cp = require_device()
    from cgraph.breakable import BreakableCapture, eager_break
    from cgraph.capture import capture

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

            t_b = _wall_us(cap.replay, sync)
            t_f = _wall_us(full.replay, sync)
            t_e = _wall_us(breaks_only, sync)
            per_break = (t_b - t_f - t_e) / (segments - 1)
            rows.append({"segments": segments, "breaks": segments - 1, "breakable_us": t_b,
                         "full_graph_us": t_f, "breaks_eager_us": t_e, "overhead_per_break_us": per_break})
            cap.close()
            full.close()
    worst = max(r["overhead_per_break_us"] for r in rows)
    write_results("breaks", rows, title="Per-break overhead of breakable replay",
                  notes=[f"worst per-break overhead {worst:.2f} us (target <= 4 us)"])


if __name__ == "__main__":
    main()
