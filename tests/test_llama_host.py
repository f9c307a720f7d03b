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
# Logits are N(0, ~1) here (unit-scale activations, lm_head ~ N(0, 1/H)), so one absolute
# tolerance fits every row. The error comes from float16 storage of every activation (each
# stand-in rounds its output as the kernels do: residual stream, projections, attention, the
# logits themselves). Measured with scheduled_run over 3000 seeds (37.5k logit rows): worst
# |logit - fp32 reference| 0.0052, median of the per-run worst 0.0029. 0.015 is ~3x the worst;
# a sigmoid slope 5% off (either way, in the stand-in or the reference) gives >= 0.030 in
# every one of 300 runs, so it fails.
LOGIT_ATOL = 0.015


def _f16(z):
    return np.asarray(z).astype(F16)


class _NumpyKernels:
    """NumPy stand-ins with the launchers' signatures: write into `out`, round to float16."""

    @staticmethod
    def feed_tokens(input_ids, token_source, sampled):
        input_ids[...] = R.feed_tokens(input_ids, token_source, sampled)

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
    def gemm(a, w, *, out, bias=None, invariant=False):
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
    def rotary_and_cache(positions, q, k, v, cache, k_cache, v_cache, slot_mapping):
        """The fused launcher's contract: rotary_embedding, then reshape_and_cache."""
        t, hkv, d = k.shape
        _NumpyKernels.rotary_embedding(positions, q, k.reshape(t, hkv * d), cache, head_size=d)
        _NumpyKernels.reshape_and_cache(k, v, k_cache, v_cache, slot_mapping)

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

    @staticmethod
    def sample(logits, params, positions, *, out):
        from cgraph.core.sampling import unpack_sampling
        from cgraph.kernels import random_reference as RR

        rows = unpack_sampling(params)
        bits = RR.row_bits([r[3] for r in rows], positions)
        out[...] = [RR.sample_row(logits[i].astype(np.float32), t, k, p, b)
                    for i, ((t, p, k, _), b) in enumerate(zip(rows, bits))]
        return out


class _HostBuffers:
    def __init__(self, specs):
        self.arrays = {k: np.full(shape, np.nan if dt != "int32" else -7, dtype=dt)
                       for k, (shape, dt) in specs.items()}

    def view(self, name, rows):
        return self.arrays[name][:rows]

    def __getitem__(self, name):
        return self.arrays[name]


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

    for name in ("feed_tokens", "embedding", "rms_norm", "rotary_embedding", "gemm", "silu_and_mul",
                 "reshape_and_cache", "rotary_and_cache", "paged_attention", "argmax", "sample"):
        monkeypatch.setattr(K, name, getattr(_NumpyKernels, name))


def scheduled_run(rng: np.random.Generator, compare) -> set[bool]:
    """Serve 5 random requests through the real scheduler, padded like graph steps.

    compare(got, ref) is called for every sequence row of every step: got is the row's
    float16 logits from LlamaModel.forward (as float32), ref the fp32 whole-sequence
    reference. Returns the step kinds seen (uniform decode or not). Needs the NumPy
    kernels patched in (the numpy_kernels fixture).
    """
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
            compare(ws.logits[row].astype(np.float32), _reference_logits(w, seqs[seq.request_id])[-1])
            assert tokens[row] == int(np.argmax(ws.logits[row]))
            seqs[seq.request_id].append(tokens[row])
        # q, k and v are views of one fused projection
        assert ws.q3.base is not None and np.shares_memory(ws.q3, ws.qkv) and np.shares_memory(ws.v3, ws.qkv)
        sched.update(batch, tokens)
    return kinds


def test_forward_over_scheduled_padded_steps_matches_fp32_reference(numpy_kernels):
    def compare(got, ref):
        np.testing.assert_allclose(got, ref, atol=LOGIT_ATOL, rtol=0)

    assert scheduled_run(np.random.default_rng(), compare) == {True, False}


def _serve(model, requests, *, lag: int, rng_pad: np.random.Generator):
    """Serve requests as the engine does, recording each step's tokens `lag` steps late.

    With lag > 0 the host does not know a decode's input when it builds the metadata, so
    the forward must feed it from the previous step's samples (token_source), and a decode
    step of the same requests as the step before advances the metadata in place
    (reference.advance_decode) instead of building it, as the overlapped loop does; the
    caller copies next_tokens into the sampled buffer after every step, as Engine.launch
    does. Returns the outputs per request, the decode inputs fed from host-built
    metadata and the steps advanced.
    """
    max_tokens, max_seqs, max_blocks = 64, 4, CFG.max_seq_len // 16
    layout = MetadataLayout(max_tokens, max_seqs, max_blocks)
    packed = np.zeros(layout.size, np.int32)
    bufs = _HostBuffers(workspace_specs(CFG, max_tokens, max_seqs))
    kv = model.make_kv_cache(60, 16)
    sched = Scheduler(max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens, allocator=BlockAllocator(60))
    for r in requests:
        sched.add(r)
    pending, fed, advanced, previous = [], 0, 0, None
    while (batch := sched.schedule()) is not None:
        padded = min(max_tokens, batch.num_tokens + int(rng_pad.integers(0, 4)))
        if batch.uniform_decode:
            padded = max_seqs  # every decode pads to one graph size, as FULL decode graphs do
        seq_rows = min(padded, max_seqs)
        key = (tuple(q.request_id for q in batch.seqs), padded) if batch.uniform_decode else None
        inputs = ForwardInputs(**{n: packed[sl].reshape(shape)
                                  for n, (sl, shape) in layout.slices(padded, seq_rows).items()})
        if lag and key is not None and key == previous:  # the engine's device-side advance
            new = R.advance_decode(inputs.positions, inputs.seq_lens, inputs.slot_mapping, inputs.token_source,
                                   inputs.block_tables, int(inputs.num_seqs[0]), 16)
            for name, arr in zip(("positions", "seq_lens", "slot_mapping", "token_source"), new):
                getattr(inputs, name)[...] = arr
            advanced += 1
        else:
            meta = build_metadata(batch, num_tokens=padded, num_seqs=seq_rows, max_blocks=max_blocks)
            fed += int((meta.token_source >= 0).sum())
            layout.pack(meta, packed)
        previous = key
        ws = workspace_views(bufs, CFG, padded, seq_rows)
        out = model.forward(inputs, ws, kv, max_query_len=1 if batch.uniform_decode else padded)
        bufs["sampled"][:seq_rows] = out[:seq_rows]
        sched.update(batch)
        pending.append((batch, out[: len(batch.seqs)].tolist()))
        while len(pending) > lag:
            sched.record(*pending.pop(0))
    for item in pending:
        sched.record(*item)
    return {r.request_id: sched.finished[r.request_id] for r in requests}, fed, advanced


@pytest.mark.parametrize("lag", [1, 3])
def test_decodes_fed_on_the_device_generate_the_tokens_of_host_fed_decodes(numpy_kernels, lag):
    rng = np.random.default_rng()
    w = init_weights(CFG, int(rng.integers(1 << 30)))
    model = LlamaModel(CFG, w, array_module=np)
    requests = [Request(i, rng.integers(0, CFG.vocab_size, size=int(rng.integers(1, 30))).tolist(),
                        max_new_tokens=int(rng.integers(2, 9))) for i in range(7)]
    pad_seed = int(rng.integers(1 << 30))
    want, fed_now, advanced_now = _serve(model, requests, lag=0, rng_pad=np.random.default_rng(pad_seed))
    got, fed_late, advanced = _serve(model, requests, lag=lag, rng_pad=np.random.default_rng(pad_seed))
    # host-known inputs are never fed; late ones are
    assert fed_now == 0 == advanced_now and fed_late > 0
    assert got == want


def test_a_decode_run_of_the_same_requests_is_advanced_on_the_device(numpy_kernels):
    rng = np.random.default_rng()
    model = LlamaModel(CFG, init_weights(CFG, int(rng.integers(1 << 30))), array_module=np)
    requests = [Request(i, rng.integers(0, CFG.vocab_size, size=5).tolist(), max_new_tokens=10) for i in range(2)]
    want, _, _ = _serve(model, requests, lag=0, rng_pad=np.random.default_rng(0))
    got, _, advanced = _serve(model, requests, lag=2, rng_pad=np.random.default_rng(0))
    assert advanced == 8  # one prefill, one host-built decode, then eight advanced in place
    assert got == want
