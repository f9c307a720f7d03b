"""The decode benchmark's torch peer (cgraph.bench.torch_peer) on the CPU: its paged-to-
contiguous slot map, and (where torch is installed) its decoder against the NumPy
reference forward, one token at a time with rows at different positions."""

from __future__ import annotations

import numpy as np
import pytest

from cgraph.bench.torch_peer import paged_slots
from cgraph.core.errors import ArgumentError
from cgraph.models import LlamaConfig, init_weights
from tests._llama_reference import reference_logits

CFG = LlamaConfig(num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=2, head_dim=16,
                  intermediate_size=160, vocab_size=96, max_seq_len=64, dtype="float16")


def test_paged_slots_follow_each_rows_blocks():
    rng = np.random.default_rng()
    bs, rows, per = 4, 3, 5
    tables = rng.permutation(rows * per + 7)[:rows * per].reshape(rows, per).astype(np.int32)
    length = int(rng.integers(1, per * bs + 1))
    got = paged_slots(tables, length, bs)
    assert got.shape == (rows, length) and got.dtype == np.int64
    for r in range(rows):
        for p in range(length):
            assert got[r, p] == tables[r, p // bs] * bs + p % bs


def test_paged_slots_refuse_a_length_past_the_tables_and_bad_tables():
    tables = np.zeros((2, 3), np.int32)
    with pytest.raises(ArgumentError, match="length=13"):
        paged_slots(tables, 13, 4)
    with pytest.raises(ArgumentError, match="block_tables"):
        paged_slots(np.zeros(3, np.int32), 2, 4)
    with pytest.raises(ArgumentError, match="block_tables"):
        paged_slots(np.zeros((2, 3), np.float32), 2, 4)


@pytest.mark.parametrize("gqa", ["fold", "enable", "repeat"])
def test_the_peer_decodes_the_reference_logits(gqa):
    torch = pytest.importorskip("torch")
    from cgraph.bench.torch_peer import TorchPeer

    rng = np.random.default_rng()
    w = init_weights(CFG, int(rng.integers(1 << 30)))
    n = 9
    seqs = rng.integers(0, CFG.vocab_size, size=(2, n))
    want = [reference_logits(CFG, [w], seqs[r].tolist()) for r in range(2)]
    peer = TorchPeer(CFG, w, gqa=gqa, device="cpu")
    peer.model.setup_caches(2, n + 3)
    scale = max(float(np.abs(x).max()) for x in want)
    for s in range(n + 2):
        # row 1 trails row 0 by two positions (repeating position 0 rewrites the same K/V)
        pos = np.array([min(s, n - 1), max(s - 2, 0)])
        ids = seqs[[0, 1], pos]
        toks, logits = peer.forward_eager(ids, pos)
        for r in range(2):
            np.testing.assert_allclose(logits[r], want[r][pos[r]], atol=0.01 * scale,
                                       err_msg=f"row {r} at position {pos[r]}, gqa {gqa}")
        np.testing.assert_array_equal(toks, logits.argmax(-1))
    assert torch.is_tensor(peer.model.layers[0].k_cache)


def test_load_cache_copies_each_rows_paged_keys():
    torch = pytest.importorskip("torch")
    from cgraph.bench.torch_peer import TorchPeer

    rng = np.random.default_rng()
    peer = TorchPeer(CFG, init_weights(CFG, 1), device="cpu")
    bs, rows, per, ctx = 4, 3, 4, 14
    shape = (rows * per + 2, bs, CFG.num_kv_heads, CFG.head_dim)
    paged = [(torch.randn(shape, dtype=torch.float16), torch.randn(shape, dtype=torch.float16))
             for _ in range(CFG.num_layers)]
    tables = rng.permutation(shape[0])[:rows * per].reshape(rows, per)
    peer.load_cache(paged, tables, ctx, ctx + 8, bs)
    for layer, (k, v) in zip(peer.model.layers, paged):
        assert tuple(layer.k_cache.shape) == (rows, CFG.num_kv_heads, ctx + 8, CFG.head_dim)
        for r in range(rows):
            for p in (0, ctx // 2, ctx - 1):
                blk, off = tables[r, p // bs], p % bs
                assert torch.equal(layer.k_cache[r, :, p], k[blk, off])
                assert torch.equal(layer.v_cache[r, :, p], v[blk, off])
        assert not layer.k_cache[:, :, ctx:].any()
    with pytest.raises(ArgumentError, match="max_len"):
        peer.load_cache(paged, tables, ctx, ctx, bs)
