"""BatchStager: the static inputs of an encoder's budget graphs, and how a batch gets into them (GPU).

The region [cu_seqlens | positions | patches] of :func:`cgraph.core.encoder_layout.staging_layout`
is one device allocation, and the same layout is mirrored by a few pinned host slots. To
stage a batch, the host writes its cu_seqlens, positions and, for items whose patches are
NumPy arrays, their patch rows into the next slot (NumPy copies, no device call), then one
asynchronous host-to-device copy moves the used prefix of the slot into the device
region. Items whose patches already live on the device are copied device-to-device, one
asynchronous copy each, after it (stream order keeps them on top of the slot's stale
rows). Pageable host memory would make the copy wait for the stream; pinned memory lets
the host run ahead. A slot is reused only after the device finished reading it (an event
per slot), so with several slots the host prepares batch k+1 while batch k runs.

Rows between a batch's end and its budget keep earlier batches' rows: row-independent
kernels leave them in padding outputs and attention never lets a real row see them. In
debug mode they are set to NaN, so a leak would show in real outputs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cgraph.core.encoder_layout import BatchOffsets, EncoderLayout, staging_layout
from cgraph.core.errors import ArgumentError
from cgraph.cuda.device import require_device

_H2D, _D2D = 1, 3  # cudaMemcpyKind


class BatchStager:
    """One device region of static inputs for batches of up to `max_items` items and
    `max_budget` output tokens, fed from `slots` pinned host slots."""

    def __init__(self, layout: EncoderLayout, dtype: Any, max_budget: int, max_items: int, *,
                 debug: bool | None = None, slots: int = 2) -> None:
        cp = require_device()
        self._cp = cp
        self.layout = layout
        self.region = r = staging_layout(layout, max_budget, max_items)
        # like StaticBuffers: debug defaults to the environment's CGRAPH_DEBUG
        self.debug = os.environ.get("CGRAPH_DEBUG", "") not in ("", "0") if debug is None else bool(debug)
        self.dtype = np.dtype(dtype)
        self.device = cp.zeros(r.nbytes, cp.uint8)  # zeros: every position slot holds a valid id
        self.cu_seqlens, self.positions, self.patches = self._views(cp, self.device)
        self._slots = []
        for _ in range(max(1, int(slots))):
            mem = cp.cuda.alloc_pinned_memory(r.nbytes)
            host = np.frombuffer(mem, np.uint8, r.nbytes)
            host[:] = 0
            self._slots.append((mem, host, *self._views(np, host), cp.cuda.Event(block=False,
                                                                                       disable_timing=True)))
        self._next = 0
        self._recorded = [False] * len(self._slots)
        self.wait_seconds = 0.0  # host time spent waiting for a slot (the device was behind)

    def _views(self, xp: Any, buf: Any) -> tuple[Any, Any, Any]:
        r = self.region
        cu = buf[r.cu_offset : r.cu_offset + 4 * (r.max_items + 1)].view(xp.int32)
        pos = buf[r.positions_offset : r.positions_offset + 4 * r.max_rows].view(xp.int32)
        pat = buf[r.patches_offset : r.patches_offset + r.max_rows * r.row_bytes].view(self.dtype)
        return cu, pos, pat.reshape(r.max_rows, r.patch_dim)

    def forward_inputs(self, rows: int) -> tuple[Any, Any, Any, int]:
        """The forward's arguments for a budget of `rows` input rows (prefix views)."""
        return self.patches[:rows], self.positions[:rows], self.cu_seqlens, rows

    def stage(self, items: Sequence[Any], offsets: BatchOffsets, padded_rows: int) -> None:
        """Write a batch (items in packing order, their offsets) into the device region
        on the current stream: one host-to-device copy plus one device copy per item
        whose patches are on the device."""
        cp = self._cp
        stream = cp.cuda.get_current_stream()
        k = self._next
        self._next = (k + 1) % len(self._slots)
        mem, _, cu, pos, pat, event = self._slots[k]
        if self._recorded[k]:
            t0 = time.perf_counter()
            event.synchronize()  # the device has read this slot's previous batch
            self.wait_seconds += time.perf_counter() - t0
        rows = offsets.rows
        cu[:] = offsets.cu_seqlens
        on_device = []
        if len(items) == 1:
            pos[:rows] = items[0].positions
        else:
            np.concatenate([it.positions for it in items], out=pos[:rows])
        self._check_positions(pos, items, offsets)
        for it, start in zip(items, offsets.row_starts):
            if isinstance(it.patches, np.ndarray):
                pat[start : start + it.patches.shape[0]] = it.patches
            else:
                on_device.append((it.patches, start))
        span = self.region.span(rows, patches=len(on_device) < len(items))
        cp.cuda.runtime.memcpyAsync(self.device.data.ptr, mem.ptr, span, _H2D, stream.ptr)
        event.record(stream)
        self._recorded[k] = True
        row_bytes = self.region.row_bytes
        base = self.patches.data.ptr
        for src, start in on_device:
            cp.cuda.runtime.memcpyAsync(base + start * row_bytes, src.data.ptr, src.shape[0] * row_bytes,
                                        _D2D, stream.ptr)
        if self.debug and padded_rows > rows:
            self.patches[rows:padded_rows].fill(float("nan"))

    def _check_positions(self, pos: np.ndarray, items: Sequence[Any], offsets: BatchOffsets) -> None:
        """Every position id of the batch in [0, position_limit), checked once per batch on
        the host: an id out of range would make the position lookup read outside its table."""
        rows, limit = offsets.rows, self.layout.position_limit
        lo, hi = int(pos[:rows].min()), int(pos[:rows].max())
        if lo >= 0 and hi < limit:
            return
        pos[:] = 0  # the slot's unused ids are copied with the next batch: keep them valid
        for it, start in zip(items, offsets.row_starts):
            bad = it.positions[(it.positions < 0) | (it.positions >= limit)]
            if bad.size:
                raise ArgumentError(
                    f"an image's position ids include {int(bad[0])}, outside [0, {limit}); the "
                    "encoder's position table is that large (EncoderSpec.max_grid)"
                )

    @property
    def nbytes(self) -> int:
        """Device bytes of the region (the pinned slots hold as much each)."""
        return self.region.nbytes
