"""Token bookkeeping on the device: feed each decode its previous step's sampled token,
advance a decode step's metadata to the next step of the same sequences, and the start
and per-iteration bookkeeping of a multi-step decode loop (cgraph.engine.multistep)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cgraph.core.checks import check_int
from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.cuda.device import cupy
from cgraph.kernels.launch import I32, launch
from cgraph.kernels.spec import INT32, Arr, Spec

_FEED_TOKENS = Spec("feed_tokens",
                    Arr("input_ids", ("T",), INT32),
                    Arr("token_source", ("T",), INT32),
                    Arr("sampled", ("N",), INT32))
_THREADS = 256


def feed_tokens(input_ids: Any, token_source: Any, sampled: Any, *, stream: Any = None) -> Any:
    """In place: input_ids[t] = sampled[token_source[t]] where 0 <= token_source[t] < N;
    every other id is kept (a source of -1 marks a token whose id is already known).

    input_ids and token_source int32 [T], sampled int32 [N], all C-contiguous; the host
    never waits for the sampled tokens. Returns input_ids.
    """
    b = _FEED_TOKENS.bind(input_ids=input_ids, token_source=token_source, sampled=sampled).on_device()
    t = b.dims["T"]
    if t == 0:
        return input_ids
    launch("tokens", "feed_tokens", (-(-t // _THREADS),), _THREADS,
           (input_ids, token_source, sampled, I32(t), I32(b.dims["N"])), stream)
    return input_ids


_PUBLISH = Spec("publish_tokens", Arr("next_tokens", ("N",), INT32), Arr("sampled", ("N",), INT32))
_HOST_ADDRESSES: dict[int, int] = {}


def _host_address(host: Any, n: int) -> int:
    """The device address of a pinned int32 NumPy array of at least n elements (cached:
    pinned staging buffers live as long as their engine)."""
    cp = cupy()
    if not isinstance(host, np.ndarray) or host.dtype != np.int32 or not host.flags.c_contiguous or host.size < n:
        raise ArgumentTypeError(f"publish_tokens: host must be a C-contiguous pinned int32 NumPy array of >= {n} "
                                f"elements, got {type(host).__name__} {getattr(host, 'dtype', '')} "
                                f"{getattr(host, 'shape', '')}; allocate it with cupyx.empty_pinned")
    ptr = host.ctypes.data
    dev = _HOST_ADDRESSES.get(ptr)
    if dev is None:
        attrs = cp.cuda.runtime.pointerGetAttributes(ptr)
        if attrs.type != cp.cuda.runtime.memoryTypeHost:
            raise ArgumentTypeError("publish_tokens: host is not pinned (page-locked) memory, which a kernel "
                                    "cannot write; allocate it with cupyx.empty_pinned")
        dev = _HOST_ADDRESSES[ptr] = int(attrs.devicePointer)
    return dev


def publish_tokens(next_tokens: Any, sampled: Any, host: Any, *, stream: Any = None) -> None:
    """sampled[:] = next_tokens and host[:N] = next_tokens, in one launch (host: a pinned
    int32 NumPy array, written by the kernel through its device address; read it after an
    event recorded behind this launch has completed). next_tokens and sampled int32 [N]."""
    b = _PUBLISH.bind(next_tokens=next_tokens, sampled=sampled).on_device()
    n = b.dims["N"]
    if n == 0:
        return
    launch("tokens", "publish_tokens", (-(-n // _THREADS),), _THREADS,
           (next_tokens, sampled, np.uint64(_host_address(host, n)), I32(n)), stream)


_ADVANCE = Spec("advance_decode",
                Arr("positions", ("S",), INT32),
                Arr("seq_lens", ("S",), INT32),
                Arr("slot_mapping", ("S",), INT32),
                Arr("token_source", ("S",), INT32),
                Arr("block_tables", ("S", "B"), INT32),
                Arr("num_seqs", (1,), INT32))


def advance_decode(positions: Any, seq_lens: Any, slot_mapping: Any, token_source: Any, block_tables: Any,
                   num_seqs: Any, *, block_size: int, stream: Any = None) -> None:
    """In place, for a uniform decode step (row i is sequence i) whose next step decodes the
    same sequences in the same rows: every row i < num_seqs[0] moves one position on,
    seq_lens[i] = positions[i] + 1, slot_mapping[i] follows from block_tables[i] (-1 past
    the table: no KV write) and token_source[i] = i (its input is the token it sampled).
    Rows past num_seqs are left as they are. All int32 and C-contiguous, [S] and [S, B].
    """
    b = _ADVANCE.bind(positions=positions, seq_lens=seq_lens, slot_mapping=slot_mapping,
                      token_source=token_source, block_tables=block_tables, num_seqs=num_seqs).on_device()
    block_size = check_int(block_size, "block_size", 1, hint="tokens per KV cache block")
    s = b.dims["S"]
    if s == 0:
        return
    launch("tokens", "advance_decode", (-(-s // _THREADS),), _THREADS,
           (positions, seq_lens, slot_mapping, token_source, block_tables, num_seqs, I32(s), I32(b.dims["B"]),
            I32(block_size)), stream)


_START_LOOP = Spec("start_decode_loop", Arr("count", (1,), INT32), Arr("done", ("S",), INT32),
                   Arr("limit", (1,), INT32), Arr("pred", (1,), INT32))


def start_decode_loop(count: Any, done: Any, limit: Any, pred: Any, *, stream: Any = None) -> None:
    """Before a multi-step decode loop, on the device: count[0] = 0, done[:] = 0 and
    pred[0] = limit[0] > 0. All int32, C-contiguous: count, limit, pred [1], done [S]."""
    b = _START_LOOP.bind(count=count, done=done, limit=limit, pred=pred).on_device()
    launch("tokens", "start_decode_loop", (1,), _THREADS, (count, done, limit, pred, I32(b.dims["S"])), stream)


_LOOP_STEP = Spec("decode_loop_step",
                  Arr("history", ("K", "S"), INT32),
                  Arr("next_tokens", ("S",), INT32),
                  Arr("sampled", ("S",), INT32),
                  Arr("positions", ("S",), INT32),
                  Arr("seq_lens", ("S",), INT32),
                  Arr("slot_mapping", ("S",), INT32),
                  Arr("token_source", ("S",), INT32),
                  Arr("block_tables", ("S", "B"), INT32),
                  Arr("num_seqs", (1,), INT32),
                  Arr("stop_ids", ("S", "M"), INT32),
                  Arr("done", ("S",), INT32),
                  Arr("count", (1,), INT32),
                  Arr("limit", (1,), INT32),
                  Arr("pred", (1,), INT32))


def decode_loop_step(history: Any, next_tokens: Any, sampled: Any, positions: Any, seq_lens: Any,
                     slot_mapping: Any, token_source: Any, block_tables: Any, num_seqs: Any, stop_ids: Any,
                     done: Any, count: Any, limit: Any, pred: Any, *, block_size: int,
                     stream: Any = None) -> None:
    """The end of one iteration c = count[0] of a multi-step decode loop, in one launch.

    Every row i < S: history[c, i] = sampled[i] = next_tokens[i] (history untouched for c
    outside [0, K)). Every live row i < num_seqs[0]: its metadata advances as
    advance_decode's does, and done[i] becomes 1 once next_tokens[i] is one of
    stop_ids[i, :] (-1 pads: a token id is never negative). Then count[0] = c + 1 and
    pred[0] = 1 if c + 1 < limit[0] and some live row is not done, else 0.
    All int32 and C-contiguous.
    """
    b = _LOOP_STEP.bind(history=history, next_tokens=next_tokens, sampled=sampled, positions=positions,
                        seq_lens=seq_lens, slot_mapping=slot_mapping, token_source=token_source,
                        block_tables=block_tables, num_seqs=num_seqs, stop_ids=stop_ids, done=done, count=count,
                        limit=limit, pred=pred).on_device()
    block_size = check_int(block_size, "block_size", 1, hint="tokens per KV cache block")
    d = b.dims
    if d["S"] == 0:
        raise ArgumentError("decode_loop_step needs at least one row (S = 0): a loop over no sequence "
                            "never starts; launch it only for a decode batch")
    launch("tokens", "decode_loop_step", (1,), _THREADS,
           (history, next_tokens, sampled, positions, seq_lens, slot_mapping, token_source, block_tables,
            num_seqs, stop_ids, done, count, limit, pred, I32(d["S"]), I32(d["K"]), I32(d["B"]),
            I32(block_size), I32(d["M"])), stream)
