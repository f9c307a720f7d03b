"""Host-side weights of the Llama decoder: the documented layout, random init, files.

Layout (names and shapes follow Hugging Face Llama checkpoints, so a converted one
loads as is; H hidden, I intermediate, V vocab, D head_dim, Hq/Hkv heads, L layers):

    model.embed_tokens.weight                         [V, H]
    model.layers.{l}.input_layernorm.weight           [H]
    model.layers.{l}.self_attn.q_proj.weight          [Hq*D, H]
    model.layers.{l}.self_attn.k_proj.weight          [Hkv*D, H]
    model.layers.{l}.self_attn.v_proj.weight          [Hkv*D, H]
    model.layers.{l}.self_attn.o_proj.weight          [H, Hq*D]
    model.layers.{l}.post_attention_layernorm.weight  [H]
    model.layers.{l}.mlp.gate_proj.weight             [I, H]
    model.layers.{l}.mlp.up_proj.weight               [I, H]
    model.layers.{l}.mlp.down_proj.weight             [H, I]
    model.norm.weight                                 [H]
    lm_head.weight                                    [V, H]   (absent: tied to embed_tokens)

Linear weights are [out, in] (y = x @ W.T). Rotary is neox style (rotate halves),
which is what Hugging Face Llama checkpoints expect. Files: .npz (np.savez, keys as
above) or .safetensors (F32/F16/BF16). Tensors named `*.rotary_emb.inv_freq` are
ignored (rotary tables are recomputed); any other unknown name is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from cgraph.models.config import LlamaConfig
from cgraph.models.safetensors import read_safetensors, write_safetensors
from cgraph.core.errors import ArgumentError, ArgumentTypeError, MissingFileError

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def host_dtype(cfg: LlamaConfig) -> np.dtype:
    """The NumPy dtype holding the model's weights on the host."""
    if cfg.dtype == "float16":
        return np.dtype(np.float16)
    try:
        import ml_dtypes  # noqa: PLC0415 - optional, only for bfloat16 models
    except ImportError as exc:
        raise ArgumentError("LlamaConfig.dtype='bfloat16' needs the ml_dtypes package on the host "
                         "(pip install ml_dtypes), or use dtype='float16'") from exc
    return np.dtype(ml_dtypes.bfloat16)


def init_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with a fixed seed: the same (cfg, seed) gives the same bytes.

    Linear weights ~ N(0, 1/fan_in) so activations keep unit scale through the layers;
    norm weights ~ 1 + N(0, 0.1^2); embeddings ~ N(0, 1).
    """
    rng = np.random.default_rng(seed)
    dt = host_dtype(cfg)
    out: dict[str, np.ndarray] = {}
    for name, shape in cfg.weight_shapes().items():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name == "model.embed_tokens.weight":
            w = rng.standard_normal(shape, dtype=np.float32)
        else:
            w = rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[1] ** -0.5)
        out[name] = w.astype(dt)
    return out


def validate_weights(cfg: LlamaConfig, weights: Mapping[str, np.ndarray], *,
                     source: str = "weights") -> dict[str, np.ndarray]:
    """Check names and shapes against cfg; return them cast to the model dtype.

    A missing lm_head.weight is tied to model.embed_tokens.weight.
    """
    names = {k: v for k, v in weights.items() if not k.endswith(_IGNORED_SUFFIXES)}
    tied = "lm_head.weight" not in names
    expected = cfg.weight_shapes(tied=tied)
    missing = sorted(set(expected) - set(names))
    unknown = sorted(set(names) - set(expected))
    if missing or unknown:
        raise ArgumentError(
            f"{source} do not match the Llama layout for {cfg}: missing {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''} ({len(missing)}), unknown {unknown[:6]}"
            f"{'...' if len(unknown) > 6 else ''} ({len(unknown)}); see cgraph.models.weights "
            "for the layout, or fix the LlamaConfig (num_layers, sizes)")
    dt = host_dtype(cfg)
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        arr = np.asarray(names[name])
        if tuple(arr.shape) != shape:
            raise ArgumentError(f"{source}: {name} has shape {tuple(arr.shape)}, expected {shape} for "
                             f"{cfg}; fix the config or the file")
        if arr.dtype.kind != "f" and arr.dtype != dt:
            raise ArgumentTypeError(f"{source}: {name} has dtype {arr.dtype}, expected floating point")
        out[name] = np.ascontiguousarray(arr.astype(dt, copy=False))
    if tied:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def load_weights(path: str | Path, cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """Load weights from a .npz or .safetensors file in the documented layout."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"weights file {path} does not exist; check the path, or save weights "
                               "with cgraph.models.save_weights")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    elif suffix == ".safetensors":
        raw = read_safetensors(path)
    else:
        raise ArgumentError(f"weights file {path}: suffix {suffix!r} is not supported; "
                         "use .npz or .safetensors")
    return validate_weights(cfg, raw, source=str(path))


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray]) -> None:
    """Save weights as .npz or .safetensors (chosen by suffix), in the documented layout."""
    path = Path(path)
    suffix = path.suffix.lower()
    arrays = {k: np.asarray(v) for k, v in weights.items()}
    if any(a.dtype.kind == "V" or a.dtype.name == "bfloat16" for a in arrays.values()):
        # NumPy formats cannot hold bfloat16: store float32, which loads back exactly
        arrays = {k: a.astype(np.float32) for k, a in arrays.items()}
    if suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix == ".safetensors":
        write_safetensors(path, arrays)
    else:
        raise ArgumentError(f"weights file {path}: suffix {suffix!r} is not supported; "
                         "use .npz or .safetensors")
