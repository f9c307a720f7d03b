"""GPU tests of the GEMM kernels against the float64 NumPy reference, element by element.

Every forced plan asserts the plan that ran (cgraph.kernels.matmul.launch_gemm returns
it), so a test named after a kernel tests that kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cgraph.kernels as K
from cgraph.kernels import reference as ref
from cgraph.kernels.gemm_plan import GEMV_MAX_M, GEMV_ROWS, TILES, WGMMA_SPLITS, WGMMA_TILES
from cgraph.kernels.matmul import launch_gemm
from tests._kernel_checks import RNG, assert_close, copy_into, dev, empty, gemm_atol, host, poison, rand, round_host

pytestmark = pytest.mark.gpu

DTYPES = ["float16", "bfloat16"]


@pytest.fixture(scope="module")
def cp():
    from cgraph.cuda.device import require_device

    return require_device()


def _gemm_case(cp, dt, m, n, k, bias, expect_kind=None, expect_kernel=None, **force):
    a_h, w_h = round_host(rand((m, k)), dt), round_host(rand((n, k), 1 / math.sqrt(k)), dt)
    b_h = round_host(rand(n), dt) if bias else None
    out = empty(cp, (m, n), dt)
    b = dev(cp, b_h, dt) if bias else None
    plan = launch_gemm(dev(cp, a_h, dt), dev(cp, w_h, dt), out=out, bias=b, **force)
    what = f"gemm M={m} N={n} K={k} {force} ran {plan}"
    if expect_kind is not None:
        assert plan.kind == expect_kind, what
    if expect_kernel is not None:
        assert plan.kernel == expect_kernel, what
    assert_close(host(out), ref.gemm(a_h, w_h, b_h), dt, what,
                 atol=gemm_atol(a_h, w_h, b_h, fallback=plan.kind == "fallback"))
    return plan


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m, n, k", [
    (1, 1024, 1024), (2, 200, 64), (3, 1000, 520), (5, 4096, 1024), (8, 1024, 4096), (16, 4096, 1024),
    (17, 1024, 4096), (64, 1000, 1024), (100, 1024, 1024), (128, 11008, 4096), (300, 520, 768),
    (2048, 1024, 1024),
])
def test_gemm_default_plan(cp, dt, m, n, k):
    plan = _gemm_case(cp, dt, m, n, k, bias=(m % 2 == 1))
    assert plan.kind != "fallback", "aligned inputs with K % 8 == 0 take a tensor-core path"


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("tile", sorted(TILES))
@pytest.mark.parametrize("split", [1, 2, 4, 8])
def test_gemm_every_tile_and_cluster_split(cp, dt, tile, split):
    if split > 1 and int(cp.cuda.Device().compute_capability) < 90:
        pytest.skip("cluster split needs sm_90")
    _gemm_case(cp, dt, int(RNG.integers(1, 200)), 300 + 8 * int(RNG.integers(0, 40)), 1000, bias=True,
               expect_kind="tile", expect_kernel=f"{tile}_s{split}", tile=tile, split=split)


def _needs_wgmma(cp):
    if int(cp.cuda.Device().compute_capability) != 90:
        pytest.skip("the wgmma kernels run on compute capability 9.0 (H100/H200) only")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("tile", sorted(WGMMA_TILES))
@pytest.mark.parametrize("split", WGMMA_SPLITS)
def test_gemm_every_wgmma_tile_and_split(cp, dt, tile, split):
    _needs_wgmma(cp)
    # M, N not multiples of the tile (the TMA fills the edges with zeros), K not a multiple
    # of the 64-wide slice; M = 1 and M far below the tile height as well
    for m in (1, int(RNG.integers(2, 128)), int(RNG.integers(129, 400))):
        n, k = 8 * int(RNG.integers(1, 90)) + 4, 8 * int(RNG.integers(1, 200))
        _gemm_case(cp, dt, m, n, k, bias=bool(m % 2), expect_kind="wgmma", expect_kernel=f"{tile}_s{split}",
                   tile=tile, split=split)


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_wgmma_short_k_and_empty_splits(cp, dt):
    _needs_wgmma(cp)
    # K = 8: one slice for the whole split; split 4 over 2 slices leaves CTAs with no K at all
    _gemm_case(cp, dt, 100, 300, 8, bias=True, expect_kernel="w128x128s6_s4", tile="w128x128s6", split=4)
    _gemm_case(cp, dt, 77, 64, 72, bias=False, expect_kernel="w128x64s8_s4", tile="w128x64s8", split=4)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m, padded", [(3, 4), (5, 8), (20, 24), (40, 48), (65, 72), (100, 128), (130, 136),
                                       (250, 256)])
@pytest.mark.parametrize("n, k", [(1000, 1024), (3000, 4096)])  # streamed / not streamed at M <= 32
def test_gemm_rows_do_not_change_when_the_batch_is_padded(cp, dt, m, padded, n, k):
    # a graph replays the padded batch, eager runs the real one: rows must agree bit for bit
    a_h = round_host(rand((padded, k)), dt)
    w = dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    full, part = empty(cp, (padded, n), dt), empty(cp, (m, n), dt)
    K.gemm(dev(cp, a_h, dt), w, out=full)
    K.gemm(dev(cp, a_h[:m], dt), w, out=part)
    assert np.array_equal(host(full.view(cp.uint16))[:m], host(part.view(cp.uint16))), f"M={m} vs {padded}"
    assert not np.isnan(host(part)).any()


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_wgmma_captured_in_a_graph_replays_with_new_inputs(cp, dt):
    _needs_wgmma(cp)
    m, n, k = 100, 520, 1000
    a, out = empty(cp, (m, k), dt), empty(cp, (m, n), dt)
    w = dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    b = dev(cp, round_host(rand(n), dt), dt)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        assert launch_gemm(a, w, out=out, bias=b).kind == "wgmma"  # compile and load outside capture
        stream.synchronize()
        stream.begin_capture()
        try:
            K.gemm(a, w, out=out, bias=b)
        finally:
            graph = stream.end_capture()
    for replay in range(3):
        a_h = round_host(rand((m, k)), dt)
        copy_into(a, dev(cp, a_h, dt))
        poison(cp, out)
        cp.cuda.Device().synchronize()
        graph.launch(stream)
        stream.synchronize()
        assert_close(host(out), ref.gemm(a_h, host(w), host(b)), dt, f"replay {replay}",
                     atol=gemm_atol(a_h, host(w), host(b), fallback=False))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [1032, 8192])
def test_gemm_gemv_kernel_for_up_to_four_rows(cp, dt, m, k):
    # K = 1032: a lane's last group of loads is partial; 8192: eight groups per row
    rows = next(r for r in GEMV_ROWS if r >= m)
    _gemm_case(cp, dt, m, 777, k, bias=bool(m % 2), expect_kind="gemv", expect_kernel=f"m{rows}")


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_gemv_kernels_give_a_row_the_same_bits_at_every_row_count(cp, dt):
    """Every GEMV kernel (1, 2 and 4 rows) sums a row's products in one order, so a row's
    output does not depend on M within the GEMV range or on the row's place in the batch."""
    n, k = 1000, 4104
    a_h = round_host(rand((GEMV_MAX_M, k)), dt)
    a, w = dev(cp, a_h, dt), dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    first_seen = {}  # input row -> its output bits the first time it ran
    for m in range(1, GEMV_MAX_M + 1):
        for first in range(0, GEMV_MAX_M + 1 - m):
            out = empty(cp, (m, n), dt)
            plan = launch_gemm(a[first:first + m], w, out=out)
            assert plan.kind == "gemv", plan
            bits = out.view(cp.uint16).get()
            for i in range(m):
                want = first_seen.setdefault(first + i, bits[i])
                np.testing.assert_array_equal(bits[i], want, err_msg=f"row {first + i} at M={m} ({plan.kernel})")
    assert_close(host(out), ref.gemm(a_h, host(w), None), dt, f"M={GEMV_MAX_M} against NumPy",
                 atol=gemm_atol(a_h, host(w), None, fallback=False))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m", [1, 3, 5, 8, 16, 17, 31, 32])
@pytest.mark.parametrize("warps", [2, 4, 8, 16])
def test_gemm_streaming_kernel_any_n_and_k(cp, dt, m, warps):
    # N not a multiple of the 16-wide slice, K not a multiple of the 128-wide K group
    n, k = int(RNG.integers(1, 700)), 8 * int(RNG.integers(1, 300))
    plan = _gemm_case(cp, dt, m, n, k, bias=bool(m % 2), expect_kind="stream", expect_kernel="stream",
                      streaming=True, warps=warps)
    assert plan.block == 32 * warps


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n, k", [(256, 128), (1000, 1024), (3072, 2048), (520, 4096)])
def test_gemm_invariant_plan_gives_every_row_the_same_bits_at_any_m(cp, dt, n, k):
    """invariant=True: a row's output does not depend on M or on the row's place, across
    every tile height (K split fixed by N, K); the default plan changes kernel with M."""
    rows = round_host(rand((300, k)), dt)
    w_h = round_host(rand((n, k), 1 / math.sqrt(k)), dt)
    w, b = dev(cp, w_h, dt), dev(cp, round_host(rand(n), dt), dt)
    probe = rows[:3]  # the rows every batch below carries, at a random place
    kernels, want = set(), None
    for m in (3, 1, 4, 5, 8, 17, 32, 33, 64, 65, 129, 300):  # 3 first: the reference rows
        at = int(RNG.integers(0, m - 2)) if m >= 3 else 0
        a_h = rows[:m].copy()
        a_h[at:at + min(3, m)] = probe[:min(3, m)]
        out = empty(cp, (m, n), dt)
        plan = launch_gemm(dev(cp, a_h, dt), w, out=out, bias=b, invariant=True)
        kernels.add(plan.kernel)
        got = host(out.view(cp.uint16))[at:at + min(3, m)]
        if want is None:
            want = got
            assert_close(host(out), ref.gemm(a_h, w_h, host(b)), dt, f"invariant plan M={m}",
                         atol=gemm_atol(a_h, w_h, host(b), fallback=False))
        assert np.array_equal(got, want[:len(got)]), f"M={m}, rows at {at}: bits moved ({plan})"
    splits = {name.split("_s")[1] for name in kernels}
    assert len(splits) == 1 and all(name.startswith("t") for name in kernels), kernels
    assert len(kernels) >= 3, f"the batches should cross tile heights: {kernels}"


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m, n, k", [(8, 4096, 1024), (32, 1000, 4096), (100, 11008, 512), (700, 520, 768)])
def test_gemm_default_plan_is_bit_reproducible(cp, dt, m, n, k):
    # the engine compares graph replays with eager runs bit for bit: same inputs, same bits
    a = dev(cp, round_host(rand((m, k)), dt), dt)
    w = dev(cp, round_host(rand((n, k), 1 / math.sqrt(k)), dt), dt)
    b = dev(cp, round_host(rand(n), dt), dt)
    first, again = empty(cp, (m, n), dt), empty(cp, (m, n), dt)
    K.gemm(a, w, out=first, bias=b)
    K.gemm(a, w, out=again, bias=b)
    assert np.array_equal(host(first.view(cp.uint16)), host(again.view(cp.uint16)))
    assert not np.isnan(host(first)).any()


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_fallback_for_odd_k_and_misaligned_views(cp, dt):
    _gemm_case(cp, dt, 33, 70, 588, bias=True, expect_kind="fallback")  # K % 8 != 0 (14x14x3 patches)
    a_h, w_h = round_host(rand((9, 65)), dt), round_host(rand((40, 64)), dt)
    # a contiguous [9, 64] view starting 2 bytes into its buffer: not 16-byte aligned
    flat = dev(cp, np.concatenate([[0.0], a_h[:, 1:].reshape(-1)]), dt)[1:].reshape(9, 64)
    assert flat.data.ptr % 16 != 0
    out = empty(cp, (9, 40), dt)
    assert launch_gemm(flat, dev(cp, w_h, dt), out=out).kind == "fallback"
    assert_close(host(out), ref.gemm(a_h[:, 1:], w_h), dt, "misaligned a",
                 atol=gemm_atol(a_h[:, 1:], w_h, None, fallback=True))


@pytest.mark.parametrize("dt", DTYPES)
def test_patch_embed_over_unfolded_patches(cp, dt):
    c, hgt, wid, p, hidden = 3, 28, 42, 14, 96
    img_h = round_host(rand((c, hgt, wid)), dt)
    w_h, b_h = round_host(rand((hidden, c, p, p), 0.05), dt), round_host(rand(hidden), dt)
    patches = K.unfold_patches(dev(cp, img_h, dt), p)
    assert patches.shape == ((hgt // p) * (wid // p), c * p * p)
    out = empty(cp, (patches.shape[0], hidden), dt)
    K.patch_embed(patches, dev(cp, w_h.reshape(hidden, -1), dt), out=out, bias=dev(cp, b_h, dt))
    # reference: a strided convolution written out directly
    want = np.zeros((hgt // p, wid // p, hidden))
    for y in range(hgt // p):
        for x in range(wid // p):
            want[y, x] = np.einsum("chw,ochw->o", img_h[:, y * p:(y + 1) * p, x * p:(x + 1) * p], w_h) + b_h
    atol = gemm_atol(ref.unfold_patches(img_h, p), w_h.reshape(hidden, -1), b_h, fallback=True)
    assert_close(host(out), want.reshape(-1, hidden), dt, "patch_embed", atol=atol)
