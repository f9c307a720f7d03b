"""The Llama-style decoder on the GPU, built only on cgraph.kernels.

`LlamaModel` holds device weights (q/k/v kept as three Linear weights, gate and up
fused into one [2I, H] weight so `silu_and_mul` reads [gate | up]) and the rotary table.
`LlamaModel.forward` is one function for every graph mode: it reads only the arrays it
is given (static input views, a workspace, the KV cache) and writes the next-token ids
into the workspace, so the same call runs eagerly, captured whole (FULL) or captured
with attention as an eager break (PIECEWISE). It allocates nothing and never syncs.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np

from cgraph._gpu import require_device
from cgraph.models.config import LlamaConfig
from cgraph.models.weights import init_weights, validate_weights


@attrs.frozen(eq=False)
class ForwardInputs:
    """Device views of one step's static metadata, padded to (num_tokens, num_seqs) rows."""

    input_ids: Any        # [T] int32
    positions: Any        # [T] int32
    slot_mapping: Any     # [T] int32 (-1: padding, no KV write)
    block_tables: Any     # [S, max_blocks] int32
    seq_lens: Any         # [S] int32
    query_start_loc: Any  # [S+1] int32
    num_seqs: Any         # [1] int32: real sequences (read on device)
    logits_indices: Any   # [S] int32: row of each sequence's last token


@attrs.frozen(eq=False)
class Workspace:
    """Temporaries of one forward at T token rows and S sequence rows (views of static memory)."""

    residual: Any     # [T, H]
    hidden: Any       # [T, H] normed input of the next projection
    delta: Any        # [T, H] output of o_proj / down_proj, added into residual
    q: Any            # [T, Hq*D]
    k: Any            # [T, Hkv*D]
    v: Any            # [T, Hkv*D]
    attn: Any         # [T, Hq*D]
    gate_up: Any      # [T, 2I]
    act: Any          # [T, I]
    last: Any         # [S, H] hidden rows of each sequence's last token
    logits: Any       # [S, V]
    next_tokens: Any  # [S] int32: greedy samples (the step's output)


def workspace_specs(cfg: LlamaConfig, max_tokens: int, max_seqs: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """StaticBuffers specs for a Workspace holding up to max_tokens / max_seqs rows."""
    t, s, dt = max_tokens, max_seqs, cfg.dtype
    h, i = cfg.hidden_size, cfg.intermediate_size
    return {
        "residual": ((t, h), dt), "hidden": ((t, h), dt), "delta": ((t, h), dt),
        "q": ((t, cfg.q_size), dt), "k": ((t, cfg.kv_size), dt), "v": ((t, cfg.kv_size), dt),
        "attn": ((t, cfg.q_size), dt), "gate_up": ((t, 2 * i), dt), "act": ((t, i), dt),
        "last": ((s, h), dt), "logits": ((s, cfg.vocab_size), dt), "next_tokens": ((s,), "int32"),
    }


def workspace_views(bufs: Any, num_tokens: int, num_seqs: int) -> Workspace:
    """The Workspace of prefix views for one padded size, from StaticBuffers made with workspace_specs."""
    seq_rows = ("last", "logits", "next_tokens")
    return Workspace(**{f.name: bufs.view(f.name, num_seqs if f.name in seq_rows else num_tokens)
                        for f in attrs.fields(Workspace)})


def _attention(q: Any, k: Any, v: Any, k_cache: Any, v_cache: Any, inp: ForwardInputs, out: Any,
               max_query_len: int, scale: float) -> None:
    """Write this step's K/V into the paged cache, then paged attention into `out`."""
    from cgraph import kernels as K

    K.reshape_and_cache(k, v, k_cache, v_cache, inp.slot_mapping)
    K.paged_attention(q, k_cache, v_cache, out=out, block_tables=inp.block_tables,
                      seq_lens=inp.seq_lens, query_start_loc=inp.query_start_loc,
                      num_seqs=inp.num_seqs, max_query_len=max_query_len, scale=scale)


def _make_attention_break() -> Any:
    from cgraph import eager_break

    return eager_break(_attention)


class LlamaModel:
    """Device weights of a Llama decoder and its forward pass (see module doc)."""

    def __init__(self, cfg: LlamaConfig, weights: Mapping[str, np.ndarray] | None = None, *,
                 seed: int = 0) -> None:
        cp = require_device()
        self.cfg = cfg
        host = init_weights(cfg, seed) if weights is None else validate_weights(cfg, weights)
        dev = lambda a: cp.ascontiguousarray(cp.asarray(a))  # noqa: E731
        self.embed = dev(host["model.embed_tokens.weight"])
        self.lm_head = (self.embed if host["lm_head.weight"] is host["model.embed_tokens.weight"]
                        else dev(host["lm_head.weight"]))
        self.final_norm = dev(host["model.norm.weight"])
        self.layers = []
        for n in range(cfg.num_layers):
            p = f"model.layers.{n}."
            gate_up = np.concatenate([host[p + "mlp.gate_proj.weight"], host[p + "mlp.up_proj.weight"]])
            self.layers.append({
                "input_norm": dev(host[p + "input_layernorm.weight"]),
                "wq": dev(host[p + "self_attn.q_proj.weight"]),
                "wk": dev(host[p + "self_attn.k_proj.weight"]),
                "wv": dev(host[p + "self_attn.v_proj.weight"]),
                "wo": dev(host[p + "self_attn.o_proj.weight"]),
                "post_norm": dev(host[p + "post_attention_layernorm.weight"]),
                "w_gate_up": dev(gate_up),
                "w_down": dev(host[p + "mlp.down_proj.weight"]),
            })
        from cgraph import kernels as K

        self.cos_sin = K.make_cos_sin_cache(cfg.max_seq_len, cfg.head_dim, base=cfg.rope_base)
        self.scale = float(cfg.head_dim) ** -0.5
        self._attention = _make_attention_break()

    @property
    def weight_bytes(self) -> int:
        """Bytes of every weight a decode step reads (embedding rows excluded)."""
        total = self.final_norm.nbytes + self.lm_head.nbytes
        for layer in self.layers:
            total += sum(w.nbytes for w in layer.values())
        return total

    def make_kv_cache(self, num_blocks: int, block_size: int) -> list[tuple[Any, Any]]:
        """One (k_cache, v_cache) per layer, each [num_blocks, block_size, Hkv, D], zeroed."""
        cp = require_device()
        shape = (num_blocks, block_size, self.cfg.num_kv_heads, self.cfg.head_dim)
        return [(cp.zeros(shape, self.cfg.dtype), cp.zeros(shape, self.cfg.dtype))
                for _ in range(self.cfg.num_layers)]

    def forward(self, inp: ForwardInputs, ws: Workspace, kv_cache: list[tuple[Any, Any]], *,
                max_query_len: int) -> Any:
        """One step: logits of each sequence's last token, greedy ids into ws.next_tokens.

        max_query_len: 1 when every row is its own sequence (decode path), else an upper
        bound on any sequence's query length (a graph passes its padded token count).
        Returns ws.next_tokens ([S] int32; rows past num_seqs are padding, ignore them).
        """
        from cgraph import kernels as K

        cfg = self.cfg
        t = ws.residual.shape[0]
        eps = cfg.rms_eps
        hq, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        K.embedding(inp.input_ids, self.embed, out=ws.residual)
        for n, layer in enumerate(self.layers):
            if n == 0:
                K.rms_norm(ws.residual, layer["input_norm"], eps, out=ws.hidden)
            else:
                K.rms_norm(ws.delta, layer["input_norm"], eps, out=ws.hidden, residual=ws.residual)
            K.gemm(ws.hidden, layer["wq"], out=ws.q)
            K.gemm(ws.hidden, layer["wk"], out=ws.k)
            K.gemm(ws.hidden, layer["wv"], out=ws.v)
            K.rotary_embedding(inp.positions, ws.q, ws.k, self.cos_sin, head_size=d)
            k_cache, v_cache = kv_cache[n]
            self._attention(ws.q.reshape(t, hq, d), ws.k.reshape(t, hkv, d), ws.v.reshape(t, hkv, d),
                            k_cache, v_cache, inp, ws.attn.reshape(t, hq, d), max_query_len, self.scale)
            K.gemm(ws.attn, layer["wo"], out=ws.delta)
            K.rms_norm(ws.delta, layer["post_norm"], eps, out=ws.hidden, residual=ws.residual)
            K.gemm(ws.hidden, layer["w_gate_up"], out=ws.gate_up)
            K.silu_and_mul(ws.gate_up, out=ws.act)
            K.gemm(ws.act, layer["w_down"], out=ws.delta)
        K.rms_norm(ws.delta, self.final_norm, eps, out=ws.hidden, residual=ws.residual)
        # gather each sequence's last row (embedding is a row gather over the T hidden rows)
        K.embedding(inp.logits_indices, ws.hidden, out=ws.last)
        K.gemm(ws.last, self.lm_head, out=ws.logits)
        K.argmax(ws.logits, out=ws.next_tokens)
        return ws.next_tokens
