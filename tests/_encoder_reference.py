"""An independent NumPy model of VisionEncoder's forward (cgraph/encoder/model.py), for the tests.

Written from the encoder's documented architecture, not from its code or from
cgraph.kernels.reference. For an image [C, H, W] (H, W multiples of 2 * patch):

    patches   the p x p patches, features in (channel, y, x) order, listed in merge-window
              order: 2x2 windows in row-major order, inside a window (0,0) (0,1) (1,0) (1,1);
              position id of the patch at grid (row, col) = row * max_grid + col
    x         = patches @ patch_w.T + patch_b + pos_table[position]
    per block   h = RMSNorm(x) * norm1;  q | k | v = h @ w_qkv.T  (heads of head_dim each)
                x = x + softmax(q k^T / sqrt(head_dim)) v @ wo.T   (all patches of the image:
                                                                    bidirectional, per image)
                h = RMSNorm(x) * norm2;  g | u = h @ w_gate_up.T;  x = x + (silu(g) * u) @ w_down.T
    h         = RMSNorm(x) * final_norm;   RMSNorm(z) = z / sqrt(mean(z^2) + eps)
    merger    each window's 4 rows of h side by side [4 * hidden] -> g | u = . @ merge_w1.T
              -> out = (silu(g) * u) @ merge_w2.T: one [out_dim] token per 2x2 window

Everything is float64. `float16=True` also rounds every activation to float16 where the GPU
stores one (each kernel's output, the input patches, and the attention probabilities the
tensor-core kernel feeds to its P @ V product), which is how the tolerance of the GPU test
was derived: see simulated_error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

MERGE = 2  # 2x2 windows


@dataclass(frozen=True)
class RefSpec:
    """The shape fields of an EncoderSpec (same names)."""

    channels: int
    patch: int
    hidden: int
    heads: int
    layers: int
    mlp: int
    merger: int
    out_dim: int
    max_grid: int
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class RefWeights:
    """Every weight of the encoder as float64 host arrays; blocks[i] has the keys of VisionEncoder.blocks."""

    spec: RefSpec
    patch_w: np.ndarray     # [hidden, C*p*p]
    patch_b: np.ndarray     # [hidden]
    pos_table: np.ndarray   # [max_grid^2, hidden]
    blocks: tuple[dict[str, np.ndarray], ...]
    final_norm: np.ndarray  # [hidden]
    merge_w1: np.ndarray    # [2 * merger, 4 * hidden]
    merge_w2: np.ndarray    # [out_dim, merger]


_BLOCK_KEYS = ("norm1", "w_qkv", "wo", "norm2", "w_gate_up", "w_down")
_SPEC_FIELDS = ("channels", "patch", "hidden", "heads", "layers", "mlp", "merger", "out_dim", "max_grid", "eps")


def weights_of(model: Any) -> RefWeights:
    """The weights of a VisionEncoder (device arrays) copied to the host as float64."""
    host = lambda a: np.asarray(a.get() if hasattr(a, "get") else a).astype(np.float64)  # noqa: E731
    spec = RefSpec(**{f: getattr(model.spec, f) for f in _SPEC_FIELDS})
    blocks = tuple({k: host(b[k]) for k in _BLOCK_KEYS} for b in model.blocks)
    return RefWeights(spec, host(model.patch_w), host(model.patch_b), host(model.pos_table), blocks,
                      host(model.final_norm), host(model.merge_w1), host(model.merge_w2))


def random_spec(rng: np.random.Generator, max_side: int = 8) -> dict[str, Any]:
    """EncoderSpec keyword arguments of a small random encoder, for images up to max_side
    output tokens a side. The GPU test draws from exactly this family, and the tolerance
    was derived over it: head sizes that take the tensor-core attention (64, 128) and the
    CUDA-core one (32), one to four heads, K not a multiple of 8 in the patch GEMM (C=3, p=2)."""
    heads, head_dim = [(1, 32), (1, 64), (1, 128), (2, 32), (2, 64), (2, 128), (4, 32), (4, 64)][
        int(rng.integers(8))]
    patch = int(rng.choice([2, 4]))
    return dict(channels=int(rng.choice([1, 3])), patch=patch, hidden=heads * head_dim, heads=heads,
                layers=int(rng.integers(1, 4)), mlp=8 * int(rng.integers(4, 49)),
                merger=8 * int(rng.integers(4, 33)), out_dim=8 * int(rng.integers(2, 25)),
                max_grid=MERGE * (max_side + int(rng.integers(0, 4))))


def random_weights(spec: RefSpec, rng: np.random.Generator) -> RefWeights:
    """Random weights distributed as VisionEncoder's (N(0, 1/fan_in) linears, 1 + N(0, 0.1^2)
    norms, 0.02 * N(0, 1) bias, 0.5 * N(0, 1) positions), rounded to float16 values as the
    model stores them. For the CPU checks, which have no model."""
    f16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    lin = lambda n, k: f16(rng.standard_normal((n, k)) / np.sqrt(k))  # noqa: E731
    norm = lambda n: f16(1.0 + 0.1 * rng.standard_normal(n))  # noqa: E731
    s, pd = spec, spec.channels * spec.patch ** 2
    blocks = tuple(dict(norm1=norm(s.hidden), w_qkv=lin(3 * s.hidden, s.hidden), wo=lin(s.hidden, s.hidden),
                        norm2=norm(s.hidden), w_gate_up=lin(2 * s.mlp, s.hidden), w_down=lin(s.hidden, s.mlp))
                   for _ in range(s.layers))
    return RefWeights(s, lin(s.hidden, pd), f16(0.02 * rng.standard_normal(s.hidden)),
                      f16(0.5 * rng.standard_normal((s.max_grid ** 2, s.hidden))), blocks, norm(s.hidden),
                      lin(2 * s.merger, MERGE * MERGE * s.hidden), lin(s.out_dim, s.merger))


def random_image(rng: np.random.Generator, spec: RefSpec, tokens_h: int, tokens_w: int) -> np.ndarray:
    """A float16 N(0, 1) image [C, H, W] whose output is a tokens_h x tokens_w grid of tokens."""
    step = MERGE * spec.patch
    return rng.standard_normal((spec.channels, tokens_h * step, tokens_w * step)).astype(np.float16)


def window_patches(image: np.ndarray, patch: int, max_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(patches [n, C*p*p] float64, position ids [n] int) of an image in merge-window order.

    Spelled out as loops over windows, so it shares nothing with the model's reshape.
    """
    c, h, w = image.shape
    rows, cols = h // patch, w // patch
    patches, positions = [], []
    for wr in range(rows // MERGE):
        for wc in range(cols // MERGE):
            for dr in range(MERGE):
                for dc in range(MERGE):
                    r, col = MERGE * wr + dr, MERGE * wc + dc
                    block = image[:, r * patch:(r + 1) * patch, col * patch:(col + 1) * patch]
                    patches.append(np.asarray(block, np.float64).reshape(-1))  # (channel, y, x)
                    positions.append(r * max_grid + col)
    return np.stack(patches), np.asarray(positions)


def _rms_norm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def _silu_mul(z: np.ndarray) -> np.ndarray:
    a, b = np.split(z, 2, axis=-1)
    return a / (1.0 + np.exp(-a)) * b


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, store: Callable) -> np.ndarray:
    """Bidirectional softmax attention of one image: q, k, v [n, heads, head_dim] -> same."""
    s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    total = p.sum(axis=-1)  # the kernels keep the softmax sum in fp32
    p = store(p)            # the tensor-core kernel rounds P to float16 for its P @ V product
    return np.einsum("hqk,khd->qhd", p, v) / total.T[:, :, None]


def forward(w: RefWeights, patches: np.ndarray, positions: np.ndarray, lengths: Sequence[int], *,
            float16: bool = False) -> np.ndarray:
    """Packed images (rows of each image consecutive, `lengths` patches each, multiples of 4)
    -> [sum(lengths) / 4, out_dim]; attention never crosses from one image to another."""
    s = w.spec
    store = (lambda z: z.astype(np.float16).astype(np.float64)) if float16 else (lambda z: z)  # noqa: E731
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    assert bounds[-1] == len(patches) and all(n % (MERGE * MERGE) == 0 for n in lengths)
    x = store(store(patches) @ w.patch_w.T + w.patch_b)
    x = store(x + w.pos_table[positions])
    h = store(_rms_norm(x, w.blocks[0]["norm1"], s.eps))
    for i, blk in enumerate(w.blocks):
        q, k, v = (store(h @ part.T).reshape(-1, s.heads, s.head_dim) for part in np.split(blk["w_qkv"], 3))
        att = np.concatenate([store(_attention(q[lo:hi], k[lo:hi], v[lo:hi], store))
                              for lo, hi in zip(bounds[:-1], bounds[1:])])
        x = store(x + store(att.reshape(-1, s.hidden) @ blk["wo"].T))
        h = store(_rms_norm(x, blk["norm2"], s.eps))
        m = store(_silu_mul(store(h @ blk["w_gate_up"].T)))
        x = store(x + store(m @ blk["w_down"].T))
        nxt = w.blocks[i + 1]["norm1"] if i + 1 < len(w.blocks) else w.final_norm
        h = store(_rms_norm(x, nxt, s.eps))
    windows = h.reshape(-1, MERGE * MERGE * s.hidden)  # the 4 consecutive rows of a window
    m = store(_silu_mul(store(windows @ w.merge_w1.T)))
    return store(m @ w.merge_w2.T)


def encode_packed(w: RefWeights, images: Sequence[np.ndarray], *, float16: bool = False) -> list[np.ndarray]:
    """The outputs [tokens_i, out_dim] of several images encoded as one packed batch."""
    parts = [window_patches(im, w.spec.patch, w.spec.max_grid) for im in images]
    out = forward(w, np.concatenate([p for p, _ in parts]), np.concatenate([q for _, q in parts]),
                  [len(p) for p, _ in parts], float16=float16)
    ends = np.cumsum([len(p) // (MERGE * MERGE) for p, _ in parts])
    return [out[e - len(p) // (MERGE * MERGE):e] for e, (p, _) in zip(ends, parts)]


def encode(w: RefWeights, image: np.ndarray, *, float16: bool = False) -> np.ndarray:
    """One image [C, H, W] -> [(H/p/2) * (W/p/2), out_dim] float64."""
    return encode_packed(w, [image], float16=float16)[0]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| over the elements, in units of the reference output's RMS."""
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.sqrt(np.mean(ref * ref)))


def image_sizes(rng: np.random.Generator, max_side: int = 8) -> list[tuple[int, int]]:
    """Output-token grids for one trial: a one-token image, a full max_side x max_side one
    (more than 64 patches: several key tiles and query blocks in the attention), and two
    random ones, non-square in general."""
    return [(1, 1), (max_side, max_side)] + [tuple(int(v) for v in rng.integers(1, max_side + 1, 2))
                                             for _ in range(2)]


def simulated_error(rng: np.random.Generator) -> float:
    """Worst relative_error of the float16 simulation against float64, for one random spec,
    random weights and the images of image_sizes: what float16 storage alone costs."""
    spec = RefSpec(**random_spec(rng))
    w = random_weights(spec, rng)
    images = [random_image(rng, spec, th, tw) for th, tw in image_sizes(rng)]
    return max(relative_error(encode(w, im, float16=True), encode(w, im)) for im in images)
