"""Tensor-parallel sharding of the Llama weights (pure; no GPU): every rank's shard has
its rank config's layout, the shards put back together are the full weights, and the
sharded forward (row-parallel partial sums added as the all-reduce adds them,
vocabulary-parallel embedding and logits) computes the unsharded model's logits."""

from __future__ import annotations

import numpy as np
import pytest

from cgraph.models import LlamaConfig, init_weights, validate_weights
from cgraph.models.tensor_parallel import (check_tensor_parallel, combine_argmax, rank_config, shard_weights,
                                           vocab_range)
from tests._llama_reference import reference_logits

CFG = LlamaConfig(num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4, head_dim=16,
                  intermediate_size=192, vocab_size=96, max_seq_len=64, dtype="float16")


@pytest.fixture(scope="module")
def weights():
    return init_weights(CFG, int(np.random.default_rng().integers(1 << 30)))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_shards_have_the_rank_layout_and_reassemble_into_the_full_weights(weights, tp):
    rc = rank_config(CFG, tp)
    assert (rc.num_heads, rc.num_kv_heads, rc.intermediate_size, rc.vocab_size) == (8 // tp, 4 // tp, 192 // tp,
                                                                                    96 // tp)
    shards = [shard_weights(weights, CFG, tp, r) for r in range(tp)]
    for shard in shards:
        validate_weights(rc, shard)  # loads into the rank's model as is
        assert all(a.flags.c_contiguous for a in shard.values())
    for name, full in weights.items():
        parts = [s[name] for s in shards]
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            joined = np.concatenate(parts, axis=1)
        elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            assert all(np.array_equal(p, full) for p in parts)
            continue
        else:
            joined = np.concatenate(parts, axis=0)
        np.testing.assert_array_equal(joined, full, err_msg=name)
    assert [vocab_range(CFG, tp, r) for r in range(tp)] == [(r * 96 // tp, (r + 1) * 96 // tp) for r in range(tp)]


@pytest.mark.parametrize("tp", [2, 4])
def test_the_sharded_forward_computes_the_unsharded_logits(weights, tp):
    rng = np.random.default_rng()
    tokens = rng.integers(0, CFG.vocab_size, size=int(rng.integers(3, 20))).tolist()
    want = reference_logits(CFG, [weights], tokens)
    shards = [shard_weights(weights, CFG, tp, r) for r in range(tp)]
    got = reference_logits(CFG, shards, tokens, rank_cfg=rank_config(CFG, tp))
    assert got.shape == want.shape == (len(tokens), CFG.vocab_size)
    # the same products, summed in another order: float32 rounding apart
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # the greedy tokens from each rank's own (max, index), without gathering the logits
    per = CFG.vocab_size // tp
    parts = [got[:, r * per:(r + 1) * per] for r in range(tp)]
    picked = combine_argmax([p.max(-1) for p in parts], [p.argmax(-1) for p in parts], [r * per for r in range(tp)])
    np.testing.assert_array_equal(picked, got.argmax(-1))


def test_combine_argmax_breaks_ties_toward_the_lowest_id_in_any_rank_order():
    rng = np.random.default_rng()
    logits = rng.integers(0, 4, size=(50, 24)).astype(np.float32)  # many ties, within and across ranks
    starts = [0, 8, 16]
    parts = [logits[:, s:s + 8] for s in starts]
    best, index = [p.max(-1) for p in parts], [p.argmax(-1) for p in parts]
    order = [2, 0, 1]  # ranks reported in any order
    got = combine_argmax([best[i] for i in order], [index[i] for i in order], [starts[i] for i in order])
    np.testing.assert_array_equal(got, logits.argmax(-1))
    with pytest.raises(ValueError, match="one .* per rank"):
        combine_argmax([], [], [])


def test_a_tp_that_does_not_divide_the_model_is_refused_naming_the_dimensions(weights):
    with pytest.raises(ValueError, match="num_heads=8.*num_kv_heads=4") as info:
        check_tensor_parallel(CFG, 3)
    assert "intermediate_size=192" not in str(info.value)  # 192 is a multiple of 3
    with pytest.raises(ValueError, match="num_kv_heads=4"):
        rank_config(CFG, 8)
    with pytest.raises(ValueError, match="ranks are 0..1"):
        shard_weights(weights, CFG, 2, 2)
    with pytest.raises(TypeError, match="tp must be an int"):
        rank_config(CFG, 2.0)
