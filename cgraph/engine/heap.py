"""The host heap during generation: keep Python's cyclic collector off the graphs' objects.

A captured engine holds many long-lived Python objects (graphs, their argument trees and
keep-alive lists, static buffer views). A full collection during a generation walks all
of them again, a pause of many steps' host work that leaves the GPU idle until the host
catches up. Such collections are rare, so this is a stall now and then, not a steady
cost. `frozen_heap` moves the objects alive when generation starts into the permanent
generation (gc.freeze) for its duration: collections then scan only what generation
itself allocates. Pure Python.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While the block runs, the collector skips every object alive when it began.

    On exit (exceptions included) gc.unfreeze() returns those objects to the oldest
    generation, so nothing outlives the block frozen and cyclic garbage made meanwhile is
    still collected. A no-op when the collector is disabled or the caller froze objects
    itself (gc.get_freeze_count() > 0): that caller's policy is left as it is.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
