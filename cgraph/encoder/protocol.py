"""The protocol an encoder implements to be served by EncoderGraphManager (importable without a GPU).

An encoder that supports budget graphs provides four things:

- ``graph_layout``: an :class:`~cgraph.core.encoder_layout.EncoderLayout` (features per
  input row, input rows per output token, features per output token, bound on position
  ids, bytes per feature) and ``dtype``, the dtype of its input rows and outputs;
- ``prepare(image)``: turns one input into an *item*: an object with ``patches`` (a
  C-contiguous NumPy or CuPy array [rows, patch_dim] of ``dtype``), ``positions`` (a
  NumPy int32 array [rows]) and ``tokens`` (rows / rows_per_token). An item passed in
  already must come back unchanged. NumPy patches are staged through pinned memory,
  CuPy ones copied on the device;
- ``forward(patches, positions, cu_seqlens, max_seqlen)``: the graph-safe body over a
  packed batch: patches [T, patch_dim] and positions [T] are prefix views of the
  manager's static buffers, cu_seqlens int32 [max_items + 1] (device) bounds each item's
  rows (rows at or past cu_seqlens[-1] are padding), max_seqlen is a host bound on any
  item's rows. It returns [T / rows_per_token, out_dim]; output token j comes only from
  input rows [j * rows_per_token, (j + 1) * rows_per_token), so an item's tokens are the
  contiguous rows after the tokens of the items before it. No host sync, no host copies;
- ``encode_batch(images)``: the same computation eagerly over a list (the reference the
  graphs must match, and the path for items larger than every budget).

:func:`check_encoder` verifies an object against the protocol with clear errors and
:func:`check_item` verifies one prepared item on the host before it is staged.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from cgraph.core.encoder_layout import EncoderLayout
from cgraph.core.errors import ArgumentError, ArgumentTypeError


@runtime_checkable
class SupportsEncoderGraphs(Protocol):
    """Structural type of an encoder EncoderGraphManager can capture (see the module)."""

    dtype: Any

    @property
    def graph_layout(self) -> EncoderLayout: ...

    def prepare(self, image: Any) -> Any: ...

    def forward(self, patches: Any, positions: Any, cu_seqlens: Any, max_seqlen: int) -> Any: ...

    def encode_batch(self, images: list[Any]) -> list[Any]: ...


def check_encoder(model: Any) -> EncoderLayout:
    """The model's EncoderLayout, or ArgumentTypeError naming what the model lacks."""
    missing = [name for name in ("dtype", "graph_layout", "prepare", "forward", "encode_batch")
               if not hasattr(model, name)]
    if missing:
        raise ArgumentTypeError(
            f"{type(model).__name__} does not implement SupportsEncoderGraphs: it lacks "
            f"{', '.join(missing)}; see cgraph.encoder.protocol for what an encoder provides"
        )
    for name in ("prepare", "forward", "encode_batch"):
        if not callable(getattr(model, name)):
            raise ArgumentTypeError(f"{type(model).__name__}.{name} must be a method, got "
                                    f"{type(getattr(model, name)).__name__}")
    layout = model.graph_layout
    if not isinstance(layout, EncoderLayout):
        raise ArgumentTypeError(
            f"{type(model).__name__}.graph_layout must be an EncoderLayout, got {type(layout).__name__}"
        )
    if np.dtype(model.dtype).itemsize != layout.itemsize:
        raise ArgumentError(
            f"{type(model).__name__}: dtype {np.dtype(model.dtype)} has {np.dtype(model.dtype).itemsize}-byte "
            f"features but graph_layout.itemsize is {layout.itemsize}; make them agree"
        )
    return layout


def check_item(item: Any, layout: EncoderLayout, dtype: Any, index: int, *, check_bounds: bool = True) -> int:
    """Input rows of a prepared item, after checking it can be staged safely.

    Checks (host only; nothing reads device memory): patches is a C-contiguous NumPy or
    device array [rows, patch_dim] of `dtype`; rows is a positive multiple of
    rows_per_token and equals tokens * rows_per_token; positions is a NumPy int32 array
    [rows] with every id in [0, position_limit) (an id out of range would make the
    position lookup read outside its table). check_bounds=False leaves the id range to
    the caller (the manager checks a whole batch's ids at once while staging it).
    """
    patches, positions = getattr(item, "patches", None), getattr(item, "positions", None)
    shape = getattr(patches, "shape", None)
    if shape is None or len(shape) != 2 or int(shape[1]) != layout.patch_dim:
        raise ArgumentError(
            f"image {index}: patches must be [rows, {layout.patch_dim}], got shape {shape}; "
            "pass the item model.prepare(image) returned"
        )
    rows = int(shape[0])
    if patches.dtype != dtype or not patches.flags.c_contiguous:
        raise ArgumentTypeError(
            f"image {index}: patches must be C-contiguous {np.dtype(dtype)}, got {patches.dtype}"
            f"{'' if patches.flags.c_contiguous else ' (not contiguous)'}; use model.prepare(image)"
        )
    rpt = layout.rows_per_token
    tokens = getattr(item, "tokens", None)
    if rows == 0 or rows % rpt or tokens != rows // rpt:
        raise ArgumentError(
            f"image {index}: {rows} patch rows and tokens={tokens!r}; expected a positive multiple "
            f"of rows_per_token={rpt} rows and tokens = rows / {rpt}"
        )
    if not isinstance(positions, np.ndarray) or positions.shape != (rows,) or positions.dtype != np.int32:
        raise ArgumentError(
            f"image {index}: positions must be a NumPy int32 array of shape ({rows},), got "
            f"{type(positions).__name__} {getattr(positions, 'dtype', '')} {getattr(positions, 'shape', None)}"
        )
    if check_bounds:
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0 or hi >= layout.position_limit:
            raise ArgumentError(
                f"image {index}: position ids span [{lo}, {hi}], outside [0, {layout.position_limit}); "
                "the encoder's position table is that large (EncoderSpec.max_grid)"
            )
    return rows
