"""Host-time measurement helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def host_us_per_call(call: Callable[[], Any], sync: Callable[[], Any], *, batch: int = 200,
                     batches: int = 60, warm: int = 3) -> float:
    """Median host microseconds per call: `batch` calls timed back to back, syncing between batches.

    Batches stay well under the driver's launch queue, so launches never block on the GPU
    and the figure is the host cost of issuing work.
    """
    for _ in range(warm):
        for _ in range(batch):
            call()
        sync()
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter_ns() - t0) / batch / 1e3)
        sync()
    return statistics.median(samples)


def device_us_per_call(call: Callable[[], Any], cp: Any, *, reps: int = 50, warm: int = 5) -> float:
    """Median wall microseconds per call including the GPU (events around each call)."""
    for _ in range(warm):
        call()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    samples = []
    for _ in range(reps):
        start.record()
        call()
        end.record()
        end.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, end) * 1e3)
    return statistics.median(samples)
