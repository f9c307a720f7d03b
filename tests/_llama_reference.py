"""An fp32 NumPy forward of the Llama decoder over whole sequences, single-rank or
tensor parallel (each rank's shard computed on its own, the row-parallel partial sums
added as an all-reduce would, the vocabulary-parallel logits concatenated)."""

from __future__ import annotations

import numpy as np

from cgraph.models import LlamaConfig


def reference_logits(cfg: LlamaConfig, shards: list[dict], tokens: list[int],
                     rank_cfg: LlamaConfig | None = None) -> np.ndarray:
    """Logits at every position of `tokens` [T, V]. shards: the full weights as one
    shard (rank_cfg None), or every rank's shard in rank order with their config."""
    rc = rank_cfg or cfg
    fs = [{k: v.astype(np.float32) for k, v in w.items()} for w in shards]
    t, d, hq, hkv = len(tokens), cfg.head_dim, rc.num_heads, rc.num_kv_heads
    tokens = np.asarray(tokens)

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.rms_eps) * g

    inv = cfg.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(x):  # [t, heads, d], neox halves
        a, b = x[..., : d // 2], x[..., d // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * c - b * s, b * c + a * s], -1)

    def embed(f, r):  # vocabulary parallel: ids outside the rank's rows give zeros
        local = tokens - r * rc.vocab_size
        inside = (local >= 0) & (local < rc.vocab_size)
        out = np.zeros((t, cfg.hidden_size), np.float32)
        out[inside] = f["model.embed_tokens.weight"][local[inside]]
        return out

    x = sum(embed(f, r) for r, f in enumerate(fs))  # the all-reduce
    mask = np.triu(np.full((t, t), -np.inf, np.float32), 1)
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."
        h = norm(x, fs[0][p + "input_layernorm.weight"])
        partial = []
        for f in fs:
            q = rope((h @ f[p + "self_attn.q_proj.weight"].T).reshape(t, hq, d))
            k = rope((h @ f[p + "self_attn.k_proj.weight"].T).reshape(t, hkv, d))
            v = (h @ f[p + "self_attn.v_proj.weight"].T).reshape(t, hkv, d)
            k, v = np.repeat(k, hq // hkv, 1), np.repeat(v, hq // hkv, 1)
            s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + mask
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", pr, v).reshape(t, hq * d)
            partial.append(o @ f[p + "self_attn.o_proj.weight"].T)
        x = x + sum(partial)
        h = norm(x, fs[0][p + "post_attention_layernorm.weight"])
        partial = []
        for f in fs:
            g, u = h @ f[p + "mlp.gate_proj.weight"].T, h @ f[p + "mlp.up_proj.weight"].T
            partial.append((g / (1 + np.exp(-g)) * u) @ f[p + "mlp.down_proj.weight"].T)
        x = x + sum(partial)
    h = norm(x, fs[0]["model.norm.weight"])
    return np.concatenate([h @ f["lm_head.weight"].T for f in fs], axis=-1)
