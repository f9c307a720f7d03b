"""Where a budget batch's inputs and outputs live (pure: NumPy and attrs only).

An encoder served by budget graphs declares an :class:`EncoderLayout`: features per input
row, input rows per output token (4 for a 2x2 patch merger, 1 without one), features per
output token and the bound on position ids. From it and the manager's capacity,
:func:`staging_layout` places the static inputs of every graph in *one* contiguous region,

    [cu_seqlens (max_items + 1) | positions (max_rows) | patches (max_rows, patch_dim)]

which exists twice: on the device (what the graphs read) and in pinned host slots with the
same byte offsets, so a batch whose patches come from the host is staged with one
host-to-device copy of a prefix of the region (:meth:`StagingLayout.span`).
:func:`batch_offsets` gives a batch's per-item row and token starts and its cu_seqlens.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import attrs

from cgraph.core.checks import check_int, int_converter
from cgraph.core.errors import ArgumentError

_ALIGN = 256  # every sub-buffer starts on a 256-byte boundary (kernels want 16-byte alignment)


def _round_up(n: int, k: int = _ALIGN) -> int:
    return -(-n // k) * k


@attrs.frozen
class EncoderLayout:
    """What an encoder tells the budget-graph manager about its inputs and outputs.

    patch_dim: features per input row; rows_per_token: input rows that make one output
    token (an item's rows are a multiple of it); out_dim: features per output token;
    position_limit: position ids must lie in [0, position_limit) (the manager checks
    them on the host, since the device would read out of bounds); itemsize: bytes per
    patch feature (2 for float16/bfloat16).
    """

    patch_dim: int = attrs.field(converter=int_converter("EncoderLayout.patch_dim", 1))
    rows_per_token: int = attrs.field(converter=int_converter("EncoderLayout.rows_per_token", 1))
    out_dim: int = attrs.field(converter=int_converter("EncoderLayout.out_dim", 1))
    position_limit: int = attrs.field(converter=int_converter("EncoderLayout.position_limit", 1))
    itemsize: int = attrs.field(default=2, converter=int_converter("EncoderLayout.itemsize", 1))


@attrs.frozen
class StagingLayout:
    """Byte offsets of the static input region for `max_items` items and `max_rows` rows."""

    max_items: int
    max_rows: int
    patch_dim: int
    itemsize: int

    @property
    def cu_offset(self) -> int:
        return 0

    @property
    def positions_offset(self) -> int:
        return _round_up(4 * (self.max_items + 1))

    @property
    def patches_offset(self) -> int:
        return self.positions_offset + _round_up(4 * self.max_rows)

    @property
    def row_bytes(self) -> int:
        """Bytes of one patch row."""
        return self.patch_dim * self.itemsize

    @property
    def nbytes(self) -> int:
        return self.patches_offset + _round_up(self.max_rows * self.row_bytes)

    def span(self, rows: int, *, patches: bool) -> int:
        """Bytes from the region's start that a batch of `rows` real rows must copy: its
        cu_seqlens and positions, and with patches=True its patch rows too (then every
        position slot is in the span; unused slots keep earlier, valid ids)."""
        rows = check_int(rows, "rows", 0, self.max_rows, hint="a batch fits the largest budget")
        if patches:
            return self.patches_offset + rows * self.row_bytes
        return self.positions_offset + 4 * rows


def staging_layout(layout: EncoderLayout, max_budget: int, max_items: int) -> StagingLayout:
    """The static input region of a manager whose largest budget is `max_budget` output
    tokens and whose batches hold at most `max_items` items."""
    max_budget = check_int(max_budget, "max_budget", 1, hint="a budget holds at least 1 token")
    max_items = check_int(max_items, "max_items", 1, hint="a batch holds at least 1 item")
    return StagingLayout(max_items, max_budget * layout.rows_per_token, layout.patch_dim, layout.itemsize)


@attrs.frozen
class BatchOffsets:
    """Where each item of a batch goes: row_starts / token_starts per item (packing
    order), rows / tokens in all, and cu_seqlens (max_items + 1 entries; the entries of
    unused sequences repeat the total, so they are empty)."""

    row_starts: tuple[int, ...]
    token_starts: tuple[int, ...]
    rows: int
    tokens: int
    cu_seqlens: tuple[int, ...]


def batch_offsets(item_rows: Sequence[int], rows_per_token: int, max_items: int) -> BatchOffsets:
    """Offsets of a batch whose items have `item_rows` input rows each (packing order).

    Every entry must be a positive multiple of `rows_per_token` (whole output tokens), and
    there must be 1..max_items of them.
    """
    rows = list(item_rows)
    if not 1 <= len(rows) <= max_items:
        raise ArgumentError(
            f"a batch holds 1..{max_items} items (max_batch_size), got {len(rows)}; "
            "plan batches with plan_batches(..., max_batch_size)"
        )
    for i, r in enumerate(rows):
        if type(r) is not int or r <= 0 or r % rows_per_token:
            raise ArgumentError(
                f"item {i} has {r!r} input rows; expected a positive multiple of "
                f"rows_per_token={rows_per_token} (whole output tokens)"
            )
    ends = list(accumulate(rows))
    starts = [0, *ends[:-1]]
    total = ends[-1]
    cu = (0, *ends, *([total] * (max_items - len(rows))))
    return BatchOffsets(tuple(starts), tuple(s // rows_per_token for s in starts), total,
                        total // rows_per_token, cu)
