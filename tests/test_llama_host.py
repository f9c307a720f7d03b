"""The Llama forward and the engine's metadata path on the host, with NumPy kernel stand-ins.

LlamaModel.forward is run on NumPy arrays with every cgraph.kernels launcher replaced by its
NumPy reference (cgraph.kernels.reference, results rounded to float16 as the kernels store
them). Steps come from the real scheduler, metadata from build_metadata + MetadataLayout,
padded like graph steps; logits are compared with an fp32 whole-sequence forward.
"""

from __future__ import annotations

import numpy as np
import pytest

from cgraph.engine import BlockAllocator, MetadataLayout, Request, Scheduler, build_metadata
from cgraph.kernels import reference as R
from cgraph.models import LlamaConfig, init_weights
from cgraph.models.llama import ForwardInputs, LlamaModel, workspace_specs, workspace_views

CFG = LlamaConfig(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
                  intermediate_size=96, vocab_size=128, max_seq_len=128)
F16 = np.float16


def _f16(z):
    return np.asarray(z).astype(F16)


class _NumpyKernels:
    """NumPy stand-ins with the launchers' signatures: write into `out`, round to float16."""

    @staticmethod
    def embedding(ids, table, *, out):
        out[...] = _f16(R.embedding(ids, table.astype(np.float32)))
        return out

    @staticmethod
    def rms_norm(x, weight, eps, *, out, residual=None):
        o, r = R.rms_norm(x.astype(np.float32), weight.astype(np.float32), eps,
                          None if residual is None else residual.astype(np.float32),
                          round_to=lambda z: z.astype(F16).astype(np.float64))
        if residual is not None:
            residual[...] = _f16(r)
        out[...] = _f16(o)
        return out

    @staticmethod
    def rotary_embedding(positions, q, k, cache, *, head_size):
        q[...] = _f16(R.rotary_embedding(positions, q.astype(np.float32), cache, head_size))
        k[...] = _f16(R.rotary_embedding(positions, k.astype(np.float32), cache, head_size))
        return q, k

    @staticmethod
    def gemm(a, w, *, out, bias=None):
        out[...] = _f16(R.gemm(a.astype(np.float32), w.astype(np.float32)))
        return out

    @staticmethod
    def silu_and_mul(x, *, out):
        out[...] = _f16(R.silu_and_mul(x))
        return out

    @staticmethod
    def reshape_and_cache(k, v, k_cache, v_cache, slot_mapping):
        kc, vc = R.reshape_and_cache(k, v, k_cache, v_cache, slot_mapping)
        k_cache[...], v_cache[...] = kc, vc

    @staticmethod
    def paged_attention(q, k_cache, v_cache, *, out, block_tables, seq_lens, query_start_loc,
                        num_seqs, max_query_len, scale):
        n = int(num_seqs[0])
        if max_query_len == 1:  # decode path contract: row i is sequence i
            assert (np.diff(query_start_loc[: n + 1]) == 1).all()
        out[...] = _f16(R.paged_attention(q.astype(np.float32), k_cache.astype(np.float32),
                                          v_cache.astype(np.float32), block_tables, seq_lens,
                                          query_start_loc, n, scale))
        return out

    @staticmethod
    def argmax(logits, *, out):
        out[...] = R.argmax(logits.astype(np.float32))
        return out


class _HostBuffers:
    def __init__(self, specs):
        self.arrays = {k: np.full(shape, np.nan if dt != "int32" else -7, dtype=dt)
                       for k, (shape, dt) in specs.items()}

    def view(self, name, rows):
        return self.arrays[name][:rows]


def _reference_logits(w, tokens):
    """fp32 whole-sequence forward (independent of the kernels' conventions)."""
    f = {k: v.astype(np.float32) for k, v in w.items()}
    t, d, hq, hkv = len(tokens), CFG.head_dim, CFG.num_heads, CFG.num_kv_heads

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + CFG.rms_eps) * g

    ang = np.arange(t)[:, None] * CFG.rope_base ** (-np.arange(0, d, 2) / d)[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):
        a, b = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    x = f["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for n in range(CFG.num_layers):
        p = f"model.layers.{n}."
        h = norm(x, f[p + "input_layernorm.weight"])
        q = rope((h @ f[p + "self_attn.q_proj.weight"].T).reshape(t, hq, d))
        k = np.repeat(rope((h @ f[p + "self_attn.k_proj.weight"].T).reshape(t, hkv, d)), hq // hkv, 1)
        v = np.repeat((h @ f[p + "self_attn.v_proj.weight"].T).reshape(t, hkv, d), hq // hkv, 1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + mask
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", pr, v).reshape(t, hq * d) @ f[p + "self_attn.o_proj.weight"].T
        h = norm(x, f[p + "post_attention_layernorm.weight"])
        g, u = h @ f[p + "mlp.gate_proj.weight"].T, h @ f[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ f[p + "mlp.down_proj.weight"].T
    return norm(x, f["model.norm.weight"]) @ f["lm_head.weight"].T


@pytest.fixture
def numpy_kernels(monkeypatch):
    import cgraph.kernels as K

    for name in ("embedding", "rms_norm", "rotary_embedding", "gemm", "silu_and_mul",
                 "reshape_and_cache", "paged_attention", "argmax"):
        monkeypatch.setattr(K, name, getattr(_NumpyKernels, name))


def test_forward_over_scheduled_padded_steps_matches_fp32_reference(numpy_kernels):
    rng = np.random.default_rng()
    w = init_weights(CFG, int(rng.integers(1 << 30)))
    model = LlamaModel(CFG, w, array_module=np)
    max_tokens, max_seqs, max_blocks = 64, 4, CFG.max_seq_len // 16
    layout = MetadataLayout(max_tokens, max_seqs, max_blocks)
    packed = np.zeros(layout.size, np.int32)
    bufs = _HostBuffers(workspace_specs(CFG, max_tokens, max_seqs))
    kv = model.make_kv_cache(40, 16)
    for kc, vc in kv:  # stale garbage in the cache must never be read
        kc[...] = rng.standard_normal(kc.shape)
        vc[...] = rng.standard_normal(vc.shape)
    sched = Scheduler(max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens,
                      allocator=BlockAllocator(40))
    seqs = {}
    for i in range(5):
        prompt = rng.integers(0, CFG.vocab_size, size=int(rng.integers(1, 30))).tolist()
        seqs[i] = list(prompt)
        sched.add(Request(i, prompt, max_new_tokens=int(rng.integers(1, 5))))
    kinds = set()
    while (batch := sched.schedule()) is not None:
        uniform = batch.uniform_decode
        kinds.add(uniform)
        padded = min(max_tokens, batch.num_tokens + int(rng.integers(0, 6)))
        seq_rows = min(padded, max_seqs)
        meta = build_metadata(batch, num_tokens=padded, num_seqs=seq_rows, max_blocks=max_blocks)
        layout.pack(meta, packed)
        inputs = ForwardInputs(**{n: packed[sl].reshape(shape)
                                  for n, (sl, shape) in layout.slices(padded, seq_rows).items()})
        ws = workspace_views(bufs, CFG, padded, seq_rows)
        ws.logits[...] = np.nan
        out = model.forward(inputs, ws, kv, max_query_len=1 if uniform else padded)
        tokens = out[: len(batch.seqs)].tolist()
        for row, seq in enumerate(batch.seqs):
            ref = _reference_logits(w, seqs[seq.request_id])[-1]
            np.testing.assert_allclose(ws.logits[row].astype(np.float32), ref, atol=0.05, rtol=0.05)
            assert tokens[row] == int(np.argmax(ws.logits[row]))
            seqs[seq.request_id].append(tokens[row])
        # q, k and v are views of one fused projection
        assert ws.q3.base is not None and np.shares_memory(ws.q3, ws.qkv) and np.shares_memory(ws.v3, ws.qkv)
        sched.update(batch, tokens)
    assert kinds == {True, False}
