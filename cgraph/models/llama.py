"""The Llama-style decoder on the GPU, built only on cgraph.kernels.

`LlamaModel` holds device weights (q, k and v fused into one [(Hq+2Hkv)*D, H] weight whose
output rows are viewed, strided, as q, k and v; gate and up fused into one [2I, H] weight
so `silu_and_mul` reads [gate | up]) and the rotary table.
`LlamaModel.forward` is one function for every graph mode: it reads only the arrays it
is given (static input views, a workspace, the KV cache) and writes the next-token ids
into the workspace, so the same call runs eagerly, captured whole (FULL) or captured
with attention as an eager break (PIECEWISE). It allocates nothing and never syncs.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np

from cgraph.cuda.device import require_device
from cgraph.models.config import LlamaConfig
from cgraph.models.weights import init_weights, validate_weights


@attrs.frozen(eq=False)
class ForwardInputs:
    """Device views of one step's static metadata, padded to (num_tokens, num_seqs) rows."""

    input_ids: Any        # [T] int32
    positions: Any        # [T] int32
    slot_mapping: Any     # [T] int32 (-1: padding, no KV write)
    token_source: Any     # [T] int32: previous step's row whose sampled token is this input, or -1
    block_tables: Any     # [S, max_blocks] int32
    seq_lens: Any         # [S] int32
    query_start_loc: Any  # [S+1] int32
    num_seqs: Any         # [1] int32: real sequences (read on device)
    logits_indices: Any   # [S] int32: row of each sequence's last token
    sampling: Any = None  # [S, SAMPLING_WIDTH] int32 (cgraph.core.sampling); None: every row greedy


@attrs.frozen(eq=False)
class Workspace:
    """Temporaries of one forward at T token rows and S sequence rows (views of static memory)."""

    residual: Any     # [T, H]
    hidden: Any       # [T, H] normed input of the next projection
    delta: Any        # [T, H] output of o_proj / down_proj, added into residual
    qkv: Any          # [T, (Hq + 2*Hkv)*D]: one projection; q/k/v below are strided views of it
    q: Any            # [T, Hq*D]
    k: Any            # [T, Hkv*D]
    q3: Any           # [T, Hq, D]
    k3: Any           # [T, Hkv, D]
    v3: Any           # [T, Hkv, D]
    attn: Any         # [T, Hq*D]
    attn3: Any        # [T, Hq, D] (same memory as attn)
    gate_up: Any      # [T, 2I]
    act: Any          # [T, I]
    last: Any         # [S, H] hidden rows of each sequence's last token
    logits: Any       # [S, V]
    next_tokens: Any  # [S] int32: sampled tokens (the step's output)
    sampled: Any      # [max_seqs] int32: the previous step's samples (the caller copies next_tokens here)


def workspace_specs(cfg: LlamaConfig, max_tokens: int, max_seqs: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """StaticBuffers specs for a Workspace holding up to max_tokens / max_seqs rows."""
    t, s, dt = max_tokens, max_seqs, cfg.dtype
    h, i = cfg.hidden_size, cfg.intermediate_size
    return {
        "residual": ((t, h), dt), "hidden": ((t, h), dt), "delta": ((t, h), dt),
        "qkv": ((t, cfg.q_size + 2 * cfg.kv_size), dt),
        "attn": ((t, cfg.q_size), dt), "gate_up": ((t, 2 * i), dt), "act": ((t, i), dt),
        "last": ((s, h), dt), "logits": ((s, cfg.vocab_size), dt), "next_tokens": ((s,), "int32"),
        "sampled": ((s,), "int32"),
    }


def workspace_views(bufs: Any, cfg: LlamaConfig, num_tokens: int, num_seqs: int) -> Workspace:
    """The Workspace of prefix views for one padded size, from StaticBuffers made with workspace_specs."""
    t, d, hq, hkv = num_tokens, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    qkv = bufs.view("qkv", t)
    if isinstance(qkv, np.ndarray):  # host-side tests
        from numpy.lib.stride_tricks import as_strided
    else:
        from cupy.lib.stride_tricks import as_strided
    row, item = qkv.strides[0], qkv.itemsize
    q = qkv[:, :cfg.q_size]
    k = qkv[:, cfg.q_size:cfg.q_size + cfg.kv_size]
    v = qkv[:, cfg.q_size + cfg.kv_size:]
    heads = lambda x, h: as_strided(x, shape=(t, h, d), strides=(row, d * item, item))  # noqa: E731
    attn = bufs.view("attn", t)
    plain = {name: bufs.view(name, num_tokens) for name in
             ("residual", "hidden", "delta", "gate_up", "act")}
    plain.update({name: bufs.view(name, num_seqs) for name in ("last", "logits", "next_tokens")})
    return Workspace(qkv=qkv, q=q, k=k, q3=heads(q, hq), k3=heads(k, hkv), v3=heads(v, hkv),
                     attn=attn, attn3=attn.reshape(t, hq, d), sampled=bufs["sampled"], **plain)


def _attention(q: Any, k_cache: Any, v_cache: Any, inp: ForwardInputs, out: Any,
               max_query_len: int, scale: float) -> None:
    """Paged attention of q into `out` over caches that already hold this step's K/V."""
    import cgraph.kernels as K

    K.paged_attention(q, k_cache, v_cache, out=out, block_tables=inp.block_tables,
                      seq_lens=inp.seq_lens, query_start_loc=inp.query_start_loc,
                      num_seqs=inp.num_seqs, max_query_len=max_query_len, scale=scale)


def _make_attention_break() -> Any:
    from cgraph.cuda.breakable import eager_break

    return eager_break(_attention)


class LlamaModel:
    """Device weights of a Llama decoder and its forward pass (see module doc)."""

    def __init__(self, cfg: LlamaConfig, weights: Mapping[str, np.ndarray] | None = None, *,
                 seed: int = 0, array_module: Any = None, batch_invariant: bool = False) -> None:
        """Upload weights (validated, or random from `seed`) to the device.

        batch_invariant: every GEMM runs the batch-invariant plan (cgraph.kernels.gemm,
        invariant=True), so a request's logits, and its tokens, do not depend on which
        other requests share its steps or on its row (slower; the default plan already
        makes graphs and eager agree for one workload, padding included).
        array_module: where the arrays live (default: CuPy on the current device). NumPy is
        accepted for host-side tests that substitute NumPy versions of the kernels.
        """
        cp = array_module if array_module is not None else require_device()
        self.xp = cp
        self.cfg = cfg
        self.batch_invariant = bool(batch_invariant)
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
                "w_qkv": dev(np.concatenate([host[p + "self_attn.q_proj.weight"],
                                             host[p + "self_attn.k_proj.weight"],
                                             host[p + "self_attn.v_proj.weight"]])),
                "wo": dev(host[p + "self_attn.o_proj.weight"]),
                "post_norm": dev(host[p + "post_attention_layernorm.weight"]),
                "w_gate_up": dev(gate_up),
                "w_down": dev(host[p + "mlp.down_proj.weight"]),
            })
        import cgraph.kernels.reference as reference

        # the fp32 [cos | sin] table, computed on the host once and uploaded
        self.cos_sin = dev(reference.cos_sin_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_base))
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
        xp = self.xp
        shape = (num_blocks, block_size, self.cfg.num_kv_heads, self.cfg.head_dim)
        return [(xp.zeros(shape, self.cfg.dtype), xp.zeros(shape, self.cfg.dtype))
                for _ in range(self.cfg.num_layers)]

    def forward(self, inp: ForwardInputs, ws: Workspace, kv_cache: list[tuple[Any, Any]], *,
                max_query_len: int) -> Any:
        """One step: logits of each sequence's last token, sampled ids into ws.next_tokens.

        Each row samples with its parameters in inp.sampling (greedy rows: the argmax, as
        with inp.sampling None) at the position of the token it samples, inp.seq_lens[row]
        (cgraph.kernels.sample: a token depends on its request's seed and position only).

        First every input id whose token_source is a row (>= 0) is replaced, in place, by
        ws.sampled[row]: the token that row sampled in the previous step (-1 keeps the id).
        ws.sampled is read, never written, so the forward stays idempotent (a capture's
        warm-up runs it twice); the caller copies next_tokens into it between steps.
        max_query_len: 1 when every row is its own sequence (decode path), else an upper
        bound on any sequence's query length (a graph passes its padded token count).
        Returns ws.next_tokens ([S] int32; rows past num_seqs are padding, ignore them).
        """
        import cgraph.kernels as K

        cfg = self.cfg
        eps = cfg.rms_eps
        inv = self.batch_invariant
        # decodes read the token their request sampled last step, still on the device
        K.feed_tokens(inp.input_ids, inp.token_source, ws.sampled)
        K.embedding(inp.input_ids, self.embed, out=ws.residual)
        for n, layer in enumerate(self.layers):
            if n == 0:
                K.rms_norm(ws.residual, layer["input_norm"], eps, out=ws.hidden)
            else:
                K.rms_norm(ws.delta, layer["input_norm"], eps, out=ws.hidden, residual=ws.residual)
            K.gemm(ws.hidden, layer["w_qkv"], out=ws.qkv, invariant=inv)
            k_cache, v_cache = kv_cache[n]
            # rotary on q and k, and this step's k and v into the paged cache, in one launch
            K.rotary_and_cache(inp.positions, ws.q, ws.k3, ws.v3, self.cos_sin, k_cache, v_cache,
                               inp.slot_mapping)
            self._attention(ws.q3, k_cache, v_cache, inp, ws.attn3, max_query_len, self.scale)
            K.gemm(ws.attn, layer["wo"], out=ws.delta, invariant=inv)
            K.rms_norm(ws.delta, layer["post_norm"], eps, out=ws.hidden, residual=ws.residual)
            K.gemm(ws.hidden, layer["w_gate_up"], out=ws.gate_up, invariant=inv)
            K.silu_and_mul(ws.gate_up, out=ws.act)
            K.gemm(ws.act, layer["w_down"], out=ws.delta, invariant=inv)
        K.rms_norm(ws.delta, self.final_norm, eps, out=ws.hidden, residual=ws.residual)
        # gather each sequence's last row (embedding is a row gather over the T hidden rows)
        K.embedding(inp.logits_indices, ws.hidden, out=ws.last)
        K.gemm(ws.last, self.lm_head, out=ws.logits, invariant=inv)
        if inp.sampling is None:
            K.argmax(ws.logits, out=ws.next_tokens)
        else:
            K.sample(ws.logits, inp.sampling, inp.seq_lens, out=ws.next_tokens)
        return ws.next_tokens
