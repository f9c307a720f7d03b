"""GraphPool: device memory that only captured graphs use.

CuPy graphs hold no reference to the memory they touch. A GraphPool is a private CuPy
``MemoryPool`` plus the non-blocking stream that captures into it. Allocations made while
capturing come from here, so outside code can never be handed memory a graph reads or
writes. Several graphs may share one pool as long as they never run at the same time
(replays on one stream never do); capturing the largest graph first lets the smaller ones
reuse its freed temporaries, so the pool ends up near the size of the largest graph
rather than the sum of all of them.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator

from cgraph.core.checks import check_int
from cgraph.core.errors import GraphClosedError
from cgraph.cuda.device import require_device


class _RetainingAllocator:
    """The device allocations under a GraphPool's CuPy pool, held until the pool closes.

    A graph's temporaries are blocks Python freed after the capture: CuPy keeps them cached
    for reuse by the next capture, and every replay still reads and writes them. CuPy
    returns its cached blocks to the device when an allocation fails (it frees them and
    retries), which would leave graphs writing into freed memory. Holding every allocation
    here keeps that memory valid whatever CuPy does with its cache; the pool's limit is
    enforced here too, before the device is asked.
    """

    __slots__ = ("chunks", "nbytes", "limit")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.nbytes = 0
        self.limit = 0  # 0: none

    def __call__(self, size: int) -> Any:
        cp = require_device()
        if self.limit and self.nbytes + size > self.limit:
            raise cp.cuda.memory.OutOfMemoryError(size, self.nbytes, self.limit)
        mem = cp.cuda.memory.Memory(size)
        self.chunks.append(mem)
        self.nbytes += size
        return cp.cuda.memory.MemoryPointer(mem, 0)

    def release(self) -> None:
        self.chunks.clear()
        self.nbytes = 0


class GraphPool:
    """A private memory pool and capture stream shared by graphs that never run concurrently.

    The pool stays alive while any graph captured into it is alive (graphs keep a
    reference). ``limit_bytes`` caps what the pool may take from the device (None: no
    cap); an allocation past it fails, so a capture that would exceed it raises
    CaptureError and leaves nothing behind. ``close()`` closes every graph captured into
    the pool, then returns the pool's memory to the device.
    """

    __slots__ = ("_pool", "_device", "_stream", "_graphs", "_closed", "__weakref__")

    def __init__(self, *, limit_bytes: int | None = None) -> None:
        cp = require_device()
        self._device = _RetainingAllocator()
        self._pool = cp.cuda.MemoryPool(allocator=self._device)
        self._closed = False
        if limit_bytes is not None:
            self.set_limit(limit_bytes)
        # Memory freed by one capture is reusable only by allocations on the same stream
        # (CuPy's arenas are per stream), so every capture into this pool uses this stream.
        self._stream = cp.cuda.Stream(non_blocking=True)
        self._graphs: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def stream(self) -> Any:
        """The non-blocking stream captures into this pool run on."""
        self.ensure_open()
        return self._stream

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def limit_bytes(self) -> int | None:
        """The cap on the pool's device memory, or None."""
        return None if self._closed else (self._device.limit or None)

    def set_limit(self, limit_bytes: int | None) -> None:
        """Cap the pool's device memory at `limit_bytes` (None: no cap) from now on."""
        self.ensure_open()
        self._device.limit = 0 if limit_bytes is None else check_int(limit_bytes, "limit_bytes", 1,
                                                                     hint="or None for no limit")

    def total_bytes(self) -> int:
        """Bytes the pool holds from the device (in use, cached, and held for graphs)."""
        return 0 if self._closed else self._device.nbytes

    def used_bytes(self) -> int:
        """Bytes held by live arrays (graph outputs and kept temporaries)."""
        return 0 if self._closed else int(self._pool.used_bytes())

    @contextlib.contextmanager
    def allocating(self) -> Iterator[None]:
        """Route this thread's CuPy allocations to the pool for the duration."""
        self.ensure_open()
        cp = require_device()
        with cp.cuda.using_allocator(self._pool.malloc):
            yield

    def track(self, graph: Any) -> None:
        """Remember a graph captured into this pool, so close() can close it first."""
        self.ensure_open()
        self._graphs.add(graph)

    def close(self) -> None:
        """Close every graph captured into this pool, then free the pool's memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for graph in list(self._graphs):
            graph.close()
        self._graphs.clear()
        # A replay may still be running on any stream: wait before memory goes back.
        require_device().cuda.Device().synchronize()
        self._pool.free_all_blocks()
        self._device.release()

    def ensure_open(self) -> None:
        """Raise GraphClosedError if the pool was closed."""
        if self._closed:
            raise GraphClosedError(
                "this GraphPool was closed; create a new GraphPool() and capture again"
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.total_bytes() / 2**20:.1f} MiB"
        return f"GraphPool({state}, graphs={len(self._graphs)})"
