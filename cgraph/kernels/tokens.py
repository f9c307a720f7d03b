"""Token bookkeeping on the device: feed each decode its previous step's sampled token."""

from __future__ import annotations

from typing import Any

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
