"""Token bookkeeping on the device: feed each decode its previous step's sampled token, and
advance a decode step's metadata to the next step of the same sequences."""

from __future__ import annotations

from typing import Any

from cgraph.core.checks import check_int
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


_RECORD = Spec("record_step_tokens", Arr("history", ("K", "S"), INT32), Arr("sampled", ("S",), INT32),
               Arr("step", (1,), INT32))


def record_step_tokens(history: Any, sampled: Any, step: Any, *, stream: Any = None) -> None:
    """history[step[0], :] = sampled, with step[0] read on the device (nothing is written
    for a step outside [0, K)). history int32 [K, S], sampled int32 [S], step int32 [1]."""
    b = _RECORD.bind(history=history, sampled=sampled, step=step).on_device()
    s = b.dims["S"]
    if s == 0:
        return
    launch("tokens", "record_step_tokens", (-(-s // _THREADS),), _THREADS,
           (history, sampled, step, I32(s), I32(b.dims["K"])), stream)
