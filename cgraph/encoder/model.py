"""A small ViT-like vision encoder built from cgraph.kernels (GPU).

Per image [C, H, W] (H, W multiples of merge * patch):
  patch embedding + learned 2-D position table -> L x (RMSNorm, bidirectional varlen
  attention over cu_seqlens, RMSNorm, gated MLP with silu_and_mul) -> RMSNorm ->
  merge x merge patch merger (merge^2 neighbouring patches -> one output token, a gated
  MLP; merge=1 makes it a per-patch projection) -> [tokens, out_dim].
Output tokens per image = (H / patch / merge) * (W / patch / merge).

Patches are laid out in *merge-window order*: the merge^2 patches of each window are
consecutive, so a packed batch of images merges with one reshape. `forward` is the
graph-safe body: no host sync, no cuBLAS, no host-to-device copy; it allocates its
activations (from a graph pool when captured). Weights are random with a fixed seed.
VisionEncoder implements cgraph.encoder.protocol.SupportsEncoderGraphs.

PRESETS names two shapes: "bench" (the small benchmark model) and "qwen2.5-vl" (a vision
tower of realistic size, see its comment).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import attrs
import numpy as np

from cgraph.core.encoder_layout import EncoderLayout
from cgraph.cuda.device import require_device
from cgraph.core.errors import ArgumentError, ArgumentTypeError

MERGE = 2  # the default 2x2 patch merger
MERGE_PATCHES = MERGE * MERGE
# embedding and silu_and_mul put rows on grid.y, which CUDA caps at 65535 blocks
ROW_CHUNK = 65535


def _row_chunks(rows: int):
    return ((a, min(rows, a + ROW_CHUNK)) for a in range(0, rows, ROW_CHUNK))


def _positive(_inst: Any, attr: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgumentError(f"EncoderSpec.{attr.name} must be a positive int, got {value!r}")


@attrs.frozen
class EncoderSpec:
    """Shape of the encoder. hidden must split into heads of a size the kernel supports."""

    channels: int = attrs.field(default=3, validator=_positive)
    patch: int = attrs.field(default=8, validator=_positive)
    hidden: int = attrs.field(default=128, validator=_positive)
    heads: int = attrs.field(default=2, validator=_positive)
    layers: int = attrs.field(default=2, validator=_positive)
    mlp: int = attrs.field(default=256, validator=_positive)
    merger: int = attrs.field(default=256, validator=_positive)
    out_dim: int = attrs.field(default=256, validator=_positive)
    max_grid: int = attrs.field(default=128, validator=_positive)  # patches per side, max
    eps: float = 1e-6
    merge: int = attrs.field(default=MERGE, validator=_positive)  # merger window side (1: none)

    def __attrs_post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ArgumentError(
                f"hidden ({self.hidden}) must be divisible by heads ({self.heads})"
            )
        if self.merge not in (1, 2):
            raise ArgumentError(f"EncoderSpec.merge must be 1 (no merger) or 2 (2x2 merger), got {self.merge}")
        if self.max_grid % self.merge:
            raise ArgumentError(f"max_grid ({self.max_grid}) must be a multiple of merge ({self.merge})")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch * self.patch

    @property
    def merge_patches(self) -> int:
        """Patches per output token (merge^2)."""
        return self.merge * self.merge


PRESETS = {
    "bench": EncoderSpec(channels=3, patch=8, hidden=128, heads=2, layers=2, mlp=256, merger=256,
                         out_dim=256, max_grid=128),
    # Qwen2.5-VL's vision tower in this model's terms: 32 layers, hidden 1280, RMSNorm, SwiGLU,
    # 14x14 patches over 3 channels x 2 frames (channels=6: patch rows of 1176 features),
    # 2x2 merger to 3584 features. Differences: 20 heads of 64 (Qwen uses 16 of 80; the
    # tensor-core attention kernel takes head sizes 64 and 128), MLP 3456 (3420 rounded up to
    # a multiple of 128: the GEMM fast path needs K % 8 == 0), a gated merger of width 2560
    # (its first GEMM is Qwen's 5120 x 5120), a learned position table instead of 2-D RoPE.
    "qwen2.5-vl": EncoderSpec(channels=6, patch=14, hidden=1280, heads=20, layers=32, mlp=3456,
                              merger=2560, out_dim=3584, max_grid=128),
}


@attrs.frozen(eq=False)
class PreparedImage:
    """An image unfolded into patches (merge-window order) with its position ids.

    patches: [n, C*p*p] in the model dtype, a CuPy array (device images) or a NumPy array
    (host images: the manager stages them through pinned memory); positions: numpy int32
    [n]; grid: (patch rows, patch cols); merge: the merger window side. tokens = n / merge^2.
    """

    patches: Any
    positions: np.ndarray
    grid: tuple[int, int]
    merge: int = MERGE

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        return self.num_patches // (self.merge * self.merge)


@functools.lru_cache(maxsize=1024)
def _window_positions(rows: int, cols: int, max_grid: int, m: int = MERGE) -> np.ndarray:
    """Position ids row * max_grid + col of each patch, in merge-window order (window side m)."""
    r = np.arange(rows).reshape(rows // m, 1, m, 1)
    c = np.arange(cols).reshape(1, cols // m, 1, m)
    pos = (r * max_grid + c).astype(np.int32)  # [rows/m, cols/m, m, m] by broadcasting
    pos = np.broadcast_to(pos, (rows // m, cols // m, m, m))
    out = np.ascontiguousarray(pos).reshape(-1)
    out.flags.writeable = False
    return out


class VisionEncoder:
    """Random-weight ViT-like encoder; `forward` is capturable, `encode` runs one image eagerly."""

    def __init__(self, spec: EncoderSpec | None = None, *, seed: int = 0, dtype: str = "float16") -> None:
        self.spec = spec if spec is not None else EncoderSpec()
        if not isinstance(self.spec, EncoderSpec):
            raise ArgumentTypeError(f"spec must be an EncoderSpec, got {type(spec).__name__}")
        if dtype not in ("float16", "bfloat16"):
            raise ArgumentError(f"dtype must be 'float16' or 'bfloat16', got {dtype!r}")
        cp = require_device()
        import cgraph.kernels as K  # noqa: PLC0415 - GPU layer, loaded with the model

        self._cp, self._K = cp, K
        self.dtype = cp.dtype(dtype) if dtype == "float16" else _bf16(cp)
        s = self.spec
        rng = np.random.default_rng(seed)

        def w(*shape: int) -> Any:
            fan_in = shape[-1]
            # float32 draws: the qwen2.5-vl preset has 0.6 G weights, float64 would double the time
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= np.float32(1 / math.sqrt(fan_in))
            return cp.asarray(x).astype(self.dtype)

        def norm_w(n: int) -> Any:
            return cp.asarray((1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)).astype(self.dtype)

        self.patch_w = w(s.hidden, s.patch_dim)
        self.patch_b = cp.asarray((0.02 * rng.standard_normal(s.hidden)).astype(np.float32)).astype(self.dtype)
        self.pos_table = cp.asarray((0.5 * rng.standard_normal((s.max_grid * s.max_grid, s.hidden))).astype(np.float32)).astype(self.dtype)
        self.blocks = []
        for _ in range(s.layers):
            self.blocks.append(dict(
                norm1=norm_w(s.hidden), w_qkv=w(3 * s.hidden, s.hidden),
                wo=w(s.hidden, s.hidden), norm2=norm_w(s.hidden),
                w_gate_up=w(2 * s.mlp, s.hidden), w_down=w(s.hidden, s.mlp),
            ))
        self.final_norm = norm_w(s.hidden)
        self.merge_w1 = w(2 * s.merger, s.merge_patches * s.hidden)
        self.merge_w2 = w(s.out_dim, s.merger)

    # ------------------------------------------------------------------ inputs
    def output_tokens(self, height: int, width: int) -> int:
        """Output tokens of an H x W image: (H / p / merge) * (W / p / merge)."""
        step = self.spec.patch * self.spec.merge
        return (height // step) * (width // step)

    @property
    def graph_layout(self) -> EncoderLayout:
        """What EncoderGraphManager needs to know (cgraph.encoder.protocol)."""
        s = self.spec
        return EncoderLayout(s.patch_dim, s.merge_patches, s.out_dim, s.max_grid * s.max_grid,
                             self.dtype.itemsize)

    def prepare(self, image: Any) -> PreparedImage:
        """Unfold a [C, H, W] image into merge-window-ordered patches.

        A CuPy image gives CuPy patches; a NumPy image is unfolded on the host and gives
        NumPy patches (what a server's preprocessing hands over). Eager, outside any capture.
        """
        if isinstance(image, PreparedImage):
            return image
        cp, s = self._cp, self.spec
        shape = getattr(image, "shape", None)
        if shape is None or len(shape) != 3:
            raise ArgumentError(f"an image must be an array [C, H, W], got shape {shape}")
        c, h, wd = (int(d) for d in shape)
        m = s.merge
        step = s.patch * m
        if c != s.channels or h % step or wd % step or h == 0 or wd == 0:
            raise ArgumentError(
                f"image of shape {tuple(shape)} does not fit the encoder: need {s.channels} "
                f"channels and H, W positive multiples of {m} * patch = {step} (multiples of 2 "
                "with the 2x2 merger); resize or pad it"
            )
        rows, cols = h // s.patch, wd // s.patch
        if rows > s.max_grid or cols > s.max_grid:
            raise ArgumentError(
                f"image of shape {tuple(shape)} has a {rows}x{cols} patch grid; the position "
                f"table holds at most {s.max_grid}x{s.max_grid} (EncoderSpec.max_grid)"
            )
        xp = np if isinstance(image, np.ndarray) else cp
        x = xp.asarray(image).astype(self.dtype, copy=False)
        p = s.patch
        x = x.reshape(c, rows // m, m, p, cols // m, m, p)
        # -> [window row, window col, row in window, col in window, C, p, p]
        x = x.transpose(1, 4, 2, 5, 0, 3, 6).reshape(rows * cols, c * p * p)
        patches = xp.ascontiguousarray(x)
        return PreparedImage(patches, _window_positions(rows, cols, s.max_grid, m), (rows, cols), m)

    # ------------------------------------------------------------------ forward
    def forward(self, patches: Any, positions: Any, cu_seqlens: Any, max_seqlen: int) -> Any:
        """Encode packed images: patches [T, C*p*p], positions int32 [T], cu_seqlens int32 [n+1].

        T must be a multiple of merge^2 (4 with the 2x2 merger); sequences are whole images
        in merge-window order; rows at or beyond cu_seqlens[n] are padding (their outputs
        are not meaningful). Returns [T / merge^2, out_dim]. Graph-safe (no sync, no
        cuBLAS, no host copies).
        """
        cp, K, s = self._cp, self._K, self.spec
        t = patches.shape[0]
        mp = s.merge_patches
        if t % mp:
            raise ArgumentError(f"patch rows ({t}) must be a multiple of {mp} (merge {s.merge}x{s.merge})")
        dt = self.dtype
        hd, nh = s.head_dim, s.heads
        x = K.patch_embed(patches, self.patch_w, out=cp.empty((t, s.hidden), dt), bias=self.patch_b)
        pos = cp.empty((t, s.hidden), dt)
        for a, b in _row_chunks(t):
            K.embedding(positions[a:b], self.pos_table, out=pos[a:b])
        x += pos
        h = cp.empty((t, s.hidden), dt)
        K.rms_norm(x, self.blocks[0]["norm1"], s.eps, out=h)
        scale = 1.0 / math.sqrt(hd)
        for li, blk in enumerate(self.blocks):
            qkv = K.gemm(h, blk["w_qkv"], out=cp.empty((t, 3 * s.hidden), dt))
            # q, k, v are row-strided views of one fused projection (the kernel allows that)
            q, k, v = (qkv[:, i * s.hidden : (i + 1) * s.hidden].reshape(t, nh, hd) for i in range(3))
            a = K.varlen_attention(
                q, k, v,
                out=cp.empty((t, nh, hd), dt), cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                causal=False, scale=scale,
            )
            o = K.gemm(a.reshape(t, s.hidden), blk["wo"], out=cp.empty((t, s.hidden), dt))
            K.rms_norm(o, blk["norm2"], s.eps, out=h, residual=x)  # x += o; h = norm(x)
            gu = K.gemm(h, blk["w_gate_up"], out=cp.empty((t, 2 * s.mlp), dt))
            m = cp.empty((t, s.mlp), dt)
            for a, b in _row_chunks(t):
                K.silu_and_mul(gu[a:b], out=m[a:b])
            d = K.gemm(m, blk["w_down"], out=cp.empty((t, s.hidden), dt))
            nxt = self.blocks[li + 1]["norm1"] if li + 1 < len(self.blocks) else self.final_norm
            K.rms_norm(d, nxt, s.eps, out=h, residual=x)  # x += d; h = norm(x)
        merged = h.reshape(t // mp, mp * s.hidden)
        g = K.gemm(merged, self.merge_w1, out=cp.empty((t // mp, 2 * s.merger), dt))
        mm = cp.empty((t // mp, s.merger), dt)
        for a, b in _row_chunks(t // mp):
            K.silu_and_mul(g[a:b], out=mm[a:b])
        return K.gemm(mm, self.merge_w2, out=cp.empty((t // mp, s.out_dim), dt))

    def encode(self, image: Any) -> Any:
        """Eagerly encode one image ([C, H, W] or PreparedImage) -> [tokens, out_dim]."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: list[Any]) -> list[Any]:
        """Eagerly encode images in one packed varlen forward (no padding) -> outputs in order."""
        cp = self._cp
        items = [self.prepare(im) for im in images]
        if not items:
            return []
        parts = [cp.asarray(it.patches) for it in items]  # host patches go over here
        patches = parts[0] if len(parts) == 1 else cp.concatenate(parts)
        positions = cp.asarray(np.concatenate([it.positions for it in items]))
        lens = np.array([it.num_patches for it in items], np.int64)
        cu = cp.asarray(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        out = self.forward(patches, positions, cu, int(lens.max()))
        ends = np.cumsum([it.tokens for it in items])
        return [out[e - it.tokens : e] for e, it in zip(ends, items)]


def _bf16(cp: Any) -> Any:
    try:
        import ml_dtypes  # noqa: PLC0415

        return cp.dtype(ml_dtypes.bfloat16)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ArgumentError("bfloat16 needs the ml_dtypes package; use dtype='float16'") from exc
