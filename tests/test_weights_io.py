"""Weights: config validation, seeded init, .npz / .safetensors round trips, layout errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from cgraph.models import LlamaConfig, init_weights, load_weights, save_weights, validate_weights
from cgraph.models.safetensors import SafetensorsError, read_safetensors, write_safetensors

SMALL = LlamaConfig(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
                    intermediate_size=48, vocab_size=64, max_seq_len=64)


def test_config_rejects_bad_shapes_with_clear_messages():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        LlamaConfig(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="hidden_size"):
        LlamaConfig(hidden_size=0)
    with pytest.raises(ValueError, match="even head_dim"):
        LlamaConfig(head_dim=7)
    with pytest.raises(ValueError, match="dtype"):
        LlamaConfig(dtype="float64")


def test_layout_shapes_and_parameter_count():
    shapes = SMALL.weight_shapes()
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == (16, 32)
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == (32, 32)
    assert shapes["lm_head.weight"] == (64, 32)
    per_layer = 32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 48 * 32 + 2 * 32
    assert SMALL.num_parameters() == 2 * 64 * 32 + 32 + 2 * per_layer
    assert "lm_head.weight" not in SMALL.weight_shapes(tied=True)


def test_init_is_seeded_and_scaled():
    a, b = init_weights(SMALL, seed=3), init_weights(SMALL, seed=3)
    c = init_weights(SMALL, seed=4)
    assert set(a) == set(SMALL.weight_shapes())
    for k in a:
        assert a[k].dtype == np.float16 and a[k].shape == SMALL.weight_shapes()[k]
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["lm_head.weight"], c["lm_head.weight"])
    w = a["model.layers.0.mlp.down_proj.weight"].astype(np.float32)
    assert 0.5 < w.std() * np.sqrt(48) < 1.5  # ~N(0, 1/fan_in)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_then_load_round_trips_exactly(tmp_path, suffix):
    w = init_weights(SMALL, seed=int(np.random.default_rng().integers(1 << 30)))
    path = tmp_path / f"m{suffix}"
    save_weights(path, w)
    back = load_weights(path, SMALL)
    assert set(back) == set(w)
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])


def test_missing_lm_head_ties_to_embeddings_and_inv_freq_is_ignored(tmp_path):
    w = init_weights(SMALL, seed=1)
    del w["lm_head.weight"]
    w["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
    save_weights(tmp_path / "t.npz", w)
    back = load_weights(tmp_path / "t.npz", SMALL)
    np.testing.assert_array_equal(back["lm_head.weight"], w["model.embed_tokens.weight"])


def test_float32_files_are_cast_to_the_model_dtype(tmp_path):
    rng = np.random.default_rng()
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in SMALL.weight_shapes().items()}
    write_safetensors(tmp_path / "f.safetensors", w)
    back = load_weights(tmp_path / "f.safetensors", SMALL)
    for k in w:
        assert back[k].dtype == np.float16
        np.testing.assert_array_equal(back[k], w[k].astype(np.float16))


def test_bf16_tensors_decode_exactly(tmp_path):
    rng = np.random.default_rng()
    vals = rng.standard_normal(37).astype(np.float32)
    bits = (vals.view(np.uint32) >> 16).astype(np.uint16)  # truncate to bf16
    header = {"x": {"dtype": "BF16", "shape": [37], "data_offsets": [0, 74]},
              "__metadata__": {"format": "pt"}}
    text = json.dumps(header).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bits.tobytes())
    x = read_safetensors(tmp_path / "b.safetensors")["x"]
    np.testing.assert_array_equal(x, (bits.astype(np.uint32) << 16).view(np.float32))
    assert np.abs(x - vals).max() <= np.abs(vals).max() * 2 ** -7


def test_safetensors_other_dtypes_and_metadata_round_trip(tmp_path):
    rng = np.random.default_rng()
    t = {"a": rng.integers(-5, 5, size=(3, 4)).astype(np.int32),
         "b": rng.standard_normal((2, 2, 2)), "c": rng.integers(0, 255, size=7).astype(np.uint8)}
    write_safetensors(tmp_path / "x.safetensors", t, metadata={"k": "v"})
    raw = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and json.loads(raw[8:8 + n])["__metadata__"] == {"k": "v"}
    back = read_safetensors(tmp_path / "x.safetensors")
    for k in t:
        assert back[k].dtype == t[k].dtype
        np.testing.assert_array_equal(back[k], t[k])


def test_corrupt_safetensors_raise_clear_errors(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="too short"):
        read_safetensors(p)
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(SafetensorsError, match="header length"):
        read_safetensors(p)
    text = json.dumps({"x": {"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}}).encode()
    p.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 8)
    with pytest.raises(SafetensorsError, match="offsets"):
        read_safetensors(p)
    text = json.dumps({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    p.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 8)
    with pytest.raises(SafetensorsError, match="C64"):
        read_safetensors(p)


def test_layout_mismatches_name_the_tensor(tmp_path):
    w = init_weights(SMALL, seed=2)
    bad = dict(w)
    bad["model.layers.1.mlp.up_proj.weight"] = np.zeros((3, 3), np.float16)
    with pytest.raises(ValueError, match="up_proj.*shape"):
        validate_weights(SMALL, bad)
    missing = {k: v for k, v in w.items() if "layers.1." not in k}
    with pytest.raises(ValueError, match="missing"):
        validate_weights(SMALL, missing)
    with pytest.raises(ValueError, match="unknown"):
        validate_weights(SMALL, {**w, "model.layers.2.mlp.up_proj.weight": w["model.norm.weight"]})
    (tmp_path / "x.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="suffix"):
        load_weights(tmp_path / "x.bin", SMALL)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nope.npz", SMALL)
