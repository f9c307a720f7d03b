"""Tensor-parallel sharding of the Llama decoder's weights (pure NumPy; no CuPy).

Megatron-style, over `tp` ranks of one host:
- column parallel (each rank holds a contiguous block of output rows): q, k and v
  (whole heads: rank r holds query heads [r*Hq/tp, (r+1)*Hq/tp) and the KV heads they
  read, so grouped-query attention stays inside a rank), gate and up;
- row parallel (each rank holds the matching block of input columns): o and down; each
  rank's product is a partial sum, and one all-reduce (sum) over the ranks gives the
  layer's output before the residual add;
- vocabulary parallel: rank r holds vocabulary rows [r*V/tp, (r+1)*V/tp) of the
  embedding and of lm_head. Its embedding looks up `ids - r*V/tp` (ids outside its range
  give zero rows, as cgraph.kernels.embedding does), and the all-reduce sums them; its
  logits cover its range, and `combine_argmax` picks the greedy token from every rank's
  (best logit, index) without gathering the logits.
Norm weights are replicated. Each rank's shard has exactly the documented layout of
`rank_config(cfg, tp)`, so it loads into that config's model as is.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import attrs
import numpy as np

from cgraph.core.checks import check_int
from cgraph.core.errors import ArgumentError
from cgraph.models.config import LlamaConfig
from cgraph.models.weights import validate_weights

__all__ = ["check_tensor_parallel", "rank_config", "vocab_range", "shard_weights", "combine_argmax"]

_COLUMN = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
           "mlp.gate_proj.weight", "mlp.up_proj.weight")
_ROW = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
_VOCAB = ("model.embed_tokens.weight", "lm_head.weight")


def check_tensor_parallel(cfg: LlamaConfig, tp: int) -> int:
    """Raise ArgumentError naming every dimension `tp` does not divide; return tp."""
    tp = check_int(tp, "tp", 1, hint="the number of GPUs the model is split over")
    dims = {"num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads,
            "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size}
    bad = [f"{name}={value}" for name, value in dims.items() if value % tp]
    if bad:
        raise ArgumentError(f"tensor parallel size tp={tp} must divide {', '.join(bad)}; pick a tp that divides "
                            f"every one of {dims}")
    return tp


def rank_config(cfg: LlamaConfig, tp: int) -> LlamaConfig:
    """The config of one rank's shard: heads, intermediate size and vocabulary over tp."""
    tp = check_tensor_parallel(cfg, tp)
    return attrs.evolve(cfg, num_heads=cfg.num_heads // tp, num_kv_heads=cfg.num_kv_heads // tp,
                        intermediate_size=cfg.intermediate_size // tp, vocab_size=cfg.vocab_size // tp)


def vocab_range(cfg: LlamaConfig, tp: int, rank: int) -> tuple[int, int]:
    """[start, stop) of the vocabulary rows rank `rank` holds."""
    tp = check_tensor_parallel(cfg, tp)
    rank = check_int(rank, "rank", 0, tp - 1, hint=f"ranks are 0..{tp - 1}")
    per = cfg.vocab_size // tp
    return rank * per, (rank + 1) * per


def shard_weights(weights: Mapping[str, np.ndarray], cfg: LlamaConfig, tp: int,
                  rank: int) -> dict[str, np.ndarray]:
    """Rank `rank`'s shard of full weights (documented layout; a missing lm_head is tied
    to the embedding, so each rank gets its own rows of it) as contiguous arrays in the
    layout of rank_config(cfg, tp)."""
    full = validate_weights(cfg, weights)
    start, stop = vocab_range(cfg, tp, rank)
    shard: dict[str, np.ndarray] = {}
    for name, w in full.items():
        if name in _VOCAB:
            part = w[start:stop]
        elif name.endswith(_COLUMN):
            part = np.split(w, tp, axis=0)[rank]
        elif name.endswith(_ROW):
            part = np.split(w, tp, axis=1)[rank]
        else:  # norms: replicated
            part = w
        shard[name] = np.ascontiguousarray(part)
    return validate_weights(rank_config(cfg, tp), shard, source=f"rank {rank} of tp={tp}")


def combine_argmax(best: Sequence[np.ndarray], index: Sequence[np.ndarray], starts: Sequence[int]) -> np.ndarray:
    """The greedy tokens of vocabulary-parallel logits, from each rank's per-row maximum
    `best[r]` and its local index `index[r]` (rank r's vocabulary starts at starts[r]).

    The highest logit wins; a tie goes to the lowest vocabulary id, as np.argmax over the
    gathered logits would pick (ranks hold ascending ranges). Returns int32 [T].
    """
    if not (len(best) == len(index) == len(starts)) or not best:
        raise ArgumentError(f"combine_argmax needs one (best, index, start) per rank, got {len(best)}, "
                            f"{len(index)} and {len(starts)}")
    order = np.argsort(np.asarray(starts), kind="stable")
    values = np.stack([np.asarray(best[r], dtype=np.float64) for r in order])  # [R, T]
    ids = np.stack([np.asarray(index[r], dtype=np.int64) + int(starts[r]) for r in order])
    winner = np.argmax(values, axis=0)  # first maximum: the lowest range, then its lowest id
    return ids[winner, np.arange(values.shape[1])].astype(np.int32)
