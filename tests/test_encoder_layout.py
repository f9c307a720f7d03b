"""Pure pieces of the encoder's graph path: staging layout, batch offsets, the encoder
protocol check, serving workloads and the presets (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from cgraph.core.encoder_layout import EncoderLayout, batch_offsets, staging_layout
from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.encoder.protocol import SupportsEncoderGraphs, check_encoder, check_item
from cgraph.encoder.workload import grid_tokens, serving_steps

LAYOUT = EncoderLayout(patch_dim=48, rows_per_token=4, out_dim=32, position_limit=100)


def test_batch_offsets_of_random_batches():
    rng = np.random.default_rng()
    for _ in range(50):
        n = int(rng.integers(1, 9))
        rows = [4 * int(t) for t in rng.integers(1, 50, size=n)]
        o = batch_offsets(rows, 4, 8)
        assert o.rows == sum(rows) and o.tokens == sum(rows) // 4
        assert list(o.row_starts) == [sum(rows[:i]) for i in range(n)]
        assert list(o.token_starts) == [s // 4 for s in o.row_starts]
        assert len(o.cu_seqlens) == 9 and o.cu_seqlens[0] == 0
        assert np.all(np.diff(o.cu_seqlens) >= 0) and o.cu_seqlens[-1] == sum(rows)
        assert [o.cu_seqlens[i + 1] - o.cu_seqlens[i] for i in range(n)] == rows
        assert all(o.cu_seqlens[i] == sum(rows) for i in range(n, 9))  # unused sequences are empty


def test_batch_offsets_refuse_partial_tokens_and_oversize_batches():
    with pytest.raises(ArgumentError, match="multiple of rows_per_token=4"):
        batch_offsets([8, 6], 4, 8)
    with pytest.raises(ArgumentError, match="1..2 items"):
        batch_offsets([4, 4, 4], 4, 2)
    with pytest.raises(ArgumentError, match="1..2 items"):
        batch_offsets([], 4, 2)


def test_staging_layout_offsets_are_aligned_and_spans_cover_what_a_batch_needs():
    r = staging_layout(LAYOUT, max_budget=100, max_items=8)
    assert r.max_rows == 400 and r.row_bytes == 96
    assert r.positions_offset % 256 == 0 and r.patches_offset % 256 == 0
    assert r.positions_offset >= 4 * 9 and r.patches_offset >= r.positions_offset + 4 * 400
    assert r.nbytes >= r.patches_offset + 400 * 96
    assert r.span(40, patches=False) == r.positions_offset + 160
    assert r.span(40, patches=True) == r.patches_offset + 40 * 96
    with pytest.raises(ArgumentError, match="rows"):
        r.span(401, patches=True)


class _Item:
    def __init__(self, patches, positions, tokens):
        self.patches, self.positions, self.tokens = patches, positions, tokens


def test_check_item_accepts_good_items_and_names_each_fault():
    good = _Item(np.zeros((8, 48), np.float16), np.arange(8, dtype=np.int32), 2)
    assert check_item(good, LAYOUT, np.float16, 0) == 8
    with pytest.raises(ArgumentError, match=r"image 3: patches must be \[rows, 48\]"):
        check_item(_Item(np.zeros((8, 47), np.float16), good.positions, 2), LAYOUT, np.float16, 3)
    with pytest.raises(ArgumentTypeError, match="float16"):
        check_item(_Item(np.zeros((8, 48), np.float32), good.positions, 2), LAYOUT, np.float16, 0)
    with pytest.raises(ArgumentError, match="multiple of rows_per_token=4"):
        check_item(_Item(np.zeros((6, 48), np.float16), np.arange(6, dtype=np.int32), 1), LAYOUT, np.float16, 0)
    with pytest.raises(ArgumentError, match="tokens"):
        check_item(_Item(good.patches, good.positions, 3), LAYOUT, np.float16, 0)
    with pytest.raises(ArgumentError, match=r"outside \[0, 100\)"):
        check_item(_Item(good.patches, np.array([0, 1, 2, 3, 4, 5, 6, 100], np.int32), 2), LAYOUT, np.float16, 0)
    with pytest.raises(ArgumentError, match="outside"):
        check_item(_Item(good.patches, np.array([-1, 1, 2, 3, 4, 5, 6, 7], np.int32), 2), LAYOUT, np.float16, 0)
    with pytest.raises(ArgumentError, match="positions"):
        check_item(_Item(good.patches, np.arange(7, dtype=np.int32), 2), LAYOUT, np.float16, 0)
    with pytest.raises(ArgumentError, match="int32"):
        check_item(_Item(good.patches, np.arange(8, dtype=np.int64), 2), LAYOUT, np.float16, 0)
    # the manager checks the id range per batch while staging: check_bounds=False skips it here
    assert check_item(_Item(good.patches, np.full(8, 100, np.int32), 2), LAYOUT, np.float16, 0,
                      check_bounds=False) == 8


class _Encoder:
    dtype = np.dtype(np.float16)
    graph_layout = LAYOUT

    def prepare(self, image):
        return image

    def forward(self, patches, positions, cu_seqlens, max_seqlen):
        return patches

    def encode_batch(self, images):
        return images


def test_check_encoder_accepts_a_protocol_implementation_and_names_what_is_missing():
    assert isinstance(_Encoder(), SupportsEncoderGraphs)
    assert check_encoder(_Encoder()) == LAYOUT

    class NoForward(_Encoder):
        forward = None

    class Lacking:
        dtype = np.float16

    class BadLayout(_Encoder):
        graph_layout = (48, 4, 32)

    class WideDtype(_Encoder):
        dtype = np.dtype(np.float32)

    with pytest.raises(ArgumentTypeError, match="forward must be a method"):
        check_encoder(NoForward())
    with pytest.raises(ArgumentTypeError, match="lacks graph_layout, prepare, forward, encode_batch"):
        check_encoder(Lacking())
    with pytest.raises(ArgumentTypeError, match="must be an EncoderLayout"):
        check_encoder(BadLayout())
    with pytest.raises(ArgumentError, match="itemsize"):
        check_encoder(WideDtype())


def test_serving_steps_are_deterministic_and_within_bounds():
    a = serving_steps(300, min_images=1, max_images=8, min_tokens=64, max_tokens=1024, seed=3, max_side=64)
    assert a == serving_steps(300, min_images=1, max_images=8, min_tokens=64, max_tokens=1024, seed=3, max_side=64)
    assert a != serving_steps(300, min_images=1, max_images=8, min_tokens=64, max_tokens=1024, seed=4, max_side=64)
    counts = [len(s) for s in a]
    assert min(counts) == 1 and max(counts) == 8
    tokens = [t for s in a for t in grid_tokens(s)]
    assert min(tokens) >= 64 and max(tokens) <= 1024
    assert all(r <= 64 and c <= 64 for s in a for r, c in s)
    # log-uniform: about as many images below the geometric middle (256) as above it
    below = sum(t < 256 for t in tokens) / len(tokens)
    assert 0.35 < below < 0.65
    with pytest.raises(ArgumentError, match="min_images"):
        serving_steps(3, min_images=0)


def test_presets_and_merge_config_of_the_bundled_encoder():
    from cgraph.encoder.model import PRESETS, EncoderSpec

    big = PRESETS["qwen2.5-vl"]
    assert (big.layers, big.hidden, big.patch, big.merge) == (32, 1280, 14, 2)
    assert big.head_dim == 64 and big.patch_dim % 8 == 0 and big.mlp % 8 == 0
    assert EncoderSpec(merge=1).merge_patches == 1 and EncoderSpec().merge_patches == 4
    with pytest.raises(ArgumentError, match="merge must be 1"):
        EncoderSpec(merge=3)
    with pytest.raises(ArgumentError, match="multiple of merge"):
        EncoderSpec(max_grid=7)
