"""Decoder models built only on cgraph.kernels (GPU parts import CuPy lazily)."""

from cgraph.models.config import LlamaConfig
from cgraph.models.weights import init_weights, load_weights, save_weights, validate_weights

__all__ = ["LlamaConfig", "init_weights", "load_weights", "save_weights", "validate_weights",
           "LlamaModel"]


def __getattr__(name: str):
    if name == "LlamaModel":
        from cgraph.models.llama import LlamaModel

        return LlamaModel
    raise AttributeError(f"module 'cgraph.models' has no attribute {name!r}")
