"""Batch metadata for paged attention, built on the host with NumPy (no CuPy).

A scheduled batch becomes flat int32 arrays padded to a graph's fixed sizes:
token ids, positions, slot mapping and token sources over `num_tokens` rows; block
tables, sequence lengths, query start offsets, logits row indices and sampling parameters
(cgraph.core.sampling.pack_sampling) over `num_seqs` rows; and the real sequence count.
Padding rows are inert: slot -1 (no KV write), position 0, token id 0, token source -1,
seq_len 0, query_start_loc repeating its last value, logits index 0, greedy sampling.

A row's sampling parameters do not change while its request runs, and the position its
sampler draws at is its seq_len (the position of the token it samples), which the device
advances with the rest of a decode step's metadata (kernels.advance_decode,
decode_loop_step): a step whose metadata the host does not rebuild still samples right.

token_source[t] >= 0 says that token t is the token the previous step sampled for its
row token_source[t] (a decode whose input the host has not read back yet: the model reads
it from that step's next-token buffer on the device); -1 keeps input_ids[t].

`MetadataLayout` packs all of them into one int32 vector at fixed offsets, so one
host-to-device copy per step fills every static metadata buffer.
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np

from cgraph.engine.blocks import BLOCK_SIZE, num_blocks_for
from cgraph.engine.scheduler import ScheduledBatch
from cgraph.core.errors import ArgumentError, NotFoundError
from cgraph.core.sampling import SAMPLING_WIDTH, pack_sampling


@attrs.frozen(eq=False)
class BatchMetadata:
    """Padded int32 arrays for one step (see module doc for the padding values)."""

    input_ids: np.ndarray        # [num_tokens]
    positions: np.ndarray        # [num_tokens]
    slot_mapping: np.ndarray     # [num_tokens]
    token_source: np.ndarray     # [num_tokens]: previous step's row feeding the token, or -1
    block_tables: np.ndarray     # [num_seqs, max_blocks]
    seq_lens: np.ndarray         # [num_seqs]
    query_start_loc: np.ndarray  # [num_seqs + 1]
    logits_indices: np.ndarray   # [num_seqs]: row of each sequence's last query token
    sampling: np.ndarray         # [num_seqs, SAMPLING_WIDTH]: packed sampling parameters
    num_seqs: int                # real sequences (rows past it are padding)
    num_tokens: int              # real tokens


def build_metadata(batch: ScheduledBatch, *, num_tokens: int, num_seqs: int,
                   max_blocks: int, block_size: int = BLOCK_SIZE) -> BatchMetadata:
    """Flatten a scheduled batch into arrays padded to (num_tokens, num_seqs) rows.

    Vectorized over tokens (one host step per sequence only to copy its block ids), as
    this runs on the host before every step.
    """
    seqs = batch.seqs
    n_seq = len(seqs)
    qlens = np.fromiter((len(s.token_ids) for s in seqs), np.int32, n_seq)
    n_tok = int(qlens.sum())
    if n_tok > num_tokens or n_seq > num_seqs:
        raise ArgumentError(f"batch of {n_tok} tokens / {n_seq} seqs does not fit padded sizes "
                         f"({num_tokens}, {num_seqs}); pad to at least the batch size")
    starts = np.fromiter((s.start for s in seqs), np.int32, n_seq)
    nblocks = np.fromiter((len(s.block_ids) for s in seqs), np.int32, n_seq)
    ends = starts + qlens
    short = np.nonzero((nblocks > max_blocks) | (-(-ends // block_size) > nblocks))[0]
    if short.size:
        s = seqs[int(short[0])]
        end = int(ends[short[0]])
        raise ArgumentError(f"request {s.request_id!r}: {end} tokens need "
                         f"{num_blocks_for(end, block_size)} blocks, it holds "
                         f"{len(s.block_ids)} (table width {max_blocks})")
    tables = np.zeros((num_seqs, max_blocks), np.int32)
    for row, s in enumerate(seqs):
        tables[row, :len(s.block_ids)] = s.block_ids
    qsl = np.full(num_seqs + 1, n_tok, np.int32)
    qsl[0] = 0
    np.cumsum(qlens, out=qsl[1:n_seq + 1])
    seq_of = np.repeat(np.arange(n_seq, dtype=np.int32), qlens)
    pos = np.zeros(num_tokens, np.int32)
    pos[:n_tok] = np.arange(n_tok, dtype=np.int32) - np.repeat(qsl[:n_seq] - starts, qlens)
    ids = np.zeros(num_tokens, np.int32)
    if n_tok:
        ids[:n_tok] = np.fromiter((t for s in seqs for t in s.token_ids), np.int32, n_tok)
    source = np.full(num_tokens, -1, np.int32)
    # only a decode whose token the host does not know yet (-1) is fed from the device
    rows = np.fromiter((s.source_row if s.token_ids[0] < 0 else -1 for s in seqs), np.int32, n_seq)
    source[:n_tok] = np.repeat(np.where(qlens == 1, rows, -1), qlens)
    slots = np.full(num_tokens, -1, np.int32)
    p = pos[:n_tok]
    slots[:n_tok] = tables[seq_of, p // block_size] * block_size + p % block_size
    lens = np.zeros(num_seqs, np.int32)
    lens[:n_seq] = ends
    logit_rows = np.zeros(num_seqs, np.int32)
    logit_rows[:n_seq] = qsl[1:n_seq + 1] - 1
    sampling = pack_sampling([s.sampling for s in seqs], num_seqs)
    return BatchMetadata(ids, pos, slots, source, tables, lens, qsl, logit_rows, sampling, n_seq, n_tok)


_FIELDS = ("input_ids", "positions", "slot_mapping", "token_source", "logits_indices", "seq_lens",
           "query_start_loc", "num_seqs", "sampling", "block_tables")
_ALIGN = 32  # elements: every field starts 128-byte aligned


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


_TOKEN_FIELDS = ("input_ids", "positions", "slot_mapping", "token_source")


@functools.lru_cache(maxsize=4096)
def _slices(layout: "MetadataLayout", num_tokens: int, num_seqs: int) -> tuple[tuple[str, slice, tuple[int, ...]], ...]:
    # (field, slice into the packed vector, shape): a pure function of its key, so cached
    out = []
    for name in _FIELDS:
        if name in _TOKEN_FIELDS:
            shape: tuple[int, ...] = (num_tokens,)
        elif name == "query_start_loc":
            shape = (num_seqs + 1,)
        elif name == "num_seqs":
            shape = (1,)
        elif name == "block_tables":
            shape = (num_seqs, layout.max_blocks)
        elif name == "sampling":
            shape = (num_seqs, SAMPLING_WIDTH)
        else:
            shape = (num_seqs,)
        o = layout.offset(name)
        out.append((name, slice(o, o + math.prod(shape)), shape))
    return tuple(out)


@attrs.frozen
class MetadataLayout:
    """Fixed offsets of every metadata field inside one packed int32 vector.

    Capacities: `max_tokens` token rows, `max_seqs` sequence rows, `max_blocks` table
    width. Block tables come last, so a step copies only the prefix it uses.
    """

    max_tokens: int
    max_seqs: int
    max_blocks: int

    def capacity(self, name: str) -> int:
        if name in _TOKEN_FIELDS:
            return self.max_tokens
        caps = {"logits_indices": self.max_seqs, "seq_lens": self.max_seqs,
                "query_start_loc": self.max_seqs + 1, "num_seqs": 1,
                "sampling": self.max_seqs * SAMPLING_WIDTH, "block_tables": self.max_seqs * self.max_blocks}
        if name not in caps:
            raise NotFoundError(f"unknown metadata field {name!r}; fields: {_FIELDS}")
        return caps[name]

    def offset(self, name: str) -> int:
        off = 0
        for f in _FIELDS:
            if f == name:
                return off
            off += _align(self.capacity(f))
        raise NotFoundError(f"unknown metadata field {name!r}; fields: {_FIELDS}")

    @property
    def size(self) -> int:
        return self.offset("block_tables") + self.capacity("block_tables")

    def used(self, num_seqs: int) -> int:
        """Prefix length that holds every field for a step padded to num_seqs rows."""
        return self.offset("block_tables") + num_seqs * self.max_blocks

    def slices(self, num_tokens: int, num_seqs: int) -> dict[str, tuple[slice, tuple[int, ...]]]:
        """For each field: (slice into the packed vector, shape) at the padded sizes."""
        if num_tokens > self.max_tokens or num_seqs > self.max_seqs:
            raise ArgumentError(f"padded sizes ({num_tokens} tokens, {num_seqs} seqs) exceed the "
                                f"layout's ({self.max_tokens}, {self.max_seqs}); build the layout "
                                "for the largest padded step")
        return {name: (sl, shape) for name, sl, shape in _slices(self, num_tokens, num_seqs)}

    def pack(self, meta: BatchMetadata, out: np.ndarray) -> int:
        """Write meta into the packed int32 vector `out`; return the prefix length used."""
        if out.dtype != np.int32 or out.shape != (self.size,):
            raise ArgumentError(f"packed metadata must be int32 of shape ({self.size},), got "
                                f"{out.dtype} {out.shape}")
        if meta.block_tables.shape[1] != self.max_blocks:
            raise ArgumentError(f"block table width {meta.block_tables.shape[1]} != layout's "
                                f"{self.max_blocks}")
        n_tok, n_seq = meta.input_ids.shape[0], meta.seq_lens.shape[0]
        if n_tok > self.max_tokens or n_seq > self.max_seqs:
            self.slices(n_tok, n_seq)  # raises, naming the sizes
        for name, sl, _ in _slices(self, n_tok, n_seq):
            if name == "num_seqs":
                out[sl.start] = meta.num_seqs
            else:
                out[sl] = getattr(meta, name).reshape(-1)
        return self.used(n_seq)
