"""LlamaConfig: the shape of a Llama-style decoder, as a frozen value."""

from __future__ import annotations

import math

import attrs

from cgraph.core.errors import ArgumentError

_DTYPES = ("float16", "bfloat16")


def _positive(inst, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"LlamaConfig.{attribute.name}={value!r}: expected a positive int")


@attrs.frozen
class LlamaConfig:
    """Sizes of a Llama-style decoder (pre-norm, RMSNorm, rotary neox, GQA, SwiGLU MLP).

    Defaults are the demo's small model. `num_heads` must be a multiple of
    `num_kv_heads`; `head_dim` is free (q/k/v projections map hidden -> heads * head_dim).
    """

    num_layers: int = attrs.field(default=4, validator=_positive)
    hidden_size: int = attrs.field(default=512, validator=_positive)
    num_heads: int = attrs.field(default=8, validator=_positive)
    num_kv_heads: int = attrs.field(default=4, validator=_positive)
    head_dim: int = attrs.field(default=64, validator=_positive)
    intermediate_size: int = attrs.field(default=1408, validator=_positive)
    vocab_size: int = attrs.field(default=8192, validator=_positive)
    max_seq_len: int = attrs.field(default=1024, validator=_positive)
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    dtype: str = "float16"

    def __attrs_post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ArgumentError(
                f"LlamaConfig: num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}; choose num_kv_heads dividing num_heads")
        if self.head_dim % 2:
            raise ArgumentError(f"LlamaConfig.head_dim={self.head_dim}: rotary needs an even head_dim")
        if self.dtype not in _DTYPES:
            raise ArgumentError(f"LlamaConfig.dtype={self.dtype!r}: expected one of {_DTYPES}")
        if not self.rms_eps > 0 or not self.rope_base > 0:
            raise ArgumentError(f"LlamaConfig: rms_eps={self.rms_eps} and rope_base={self.rope_base} "
                             "must be positive")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def weight_shapes(self, *, tied: bool = False) -> dict[str, tuple[int, ...]]:
        """Every tensor of the documented layout (see cgraph.models.weights) and its shape."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
        for n in range(self.num_layers):
            p = f"model.layers.{n}."
            shapes.update({
                p + "input_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (self.q_size, h),
                p + "self_attn.k_proj.weight": (self.kv_size, h),
                p + "self_attn.v_proj.weight": (self.kv_size, h),
                p + "self_attn.o_proj.weight": (h, self.q_size),
                p + "post_attention_layernorm.weight": (h,),
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
            })
        shapes["model.norm.weight"] = (h,)
        if not tied:
            shapes["lm_head.weight"] = (v, h)
        return shapes

    def num_parameters(self) -> int:
        """Parameter count of the untied layout."""
        return sum(math.prod(s) for s in self.weight_shapes().values())


def demo_config(layers: int = 4, hidden: int = 512, *, vocab_size: int = 8192,
                max_seq_len: int = 1024) -> LlamaConfig:
    """The demo's model family: head dim 64, half as many KV heads, intermediate ~2.75x hidden."""
    if hidden % 64:
        raise ArgumentError(f"hidden={hidden}: must be a multiple of 64 (head dim 64)")
    heads = hidden // 64
    return LlamaConfig(num_layers=layers, hidden_size=hidden, num_heads=heads,
                       num_kv_heads=max(1, heads // 2), head_dim=64,
                       intermediate_size=-(-hidden * 11 // 4 // 64) * 64,
                       vocab_size=vocab_size, max_seq_len=max_seq_len)
