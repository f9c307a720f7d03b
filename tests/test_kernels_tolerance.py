"""The element-wise closeness check of the kernel GPU tests (tests/_kernel_checks.py), on the CPU:
a correctly rounded output passes, one wrong element anywhere fails."""

from __future__ import annotations

import numpy as np
import pytest

from tests._kernel_checks import assert_close, gemm_atol

RNG = np.random.default_rng()


@pytest.mark.parametrize("dt", ["float16", "float32"])
def test_a_correctly_rounded_gemm_output_passes_and_one_wrong_element_fails(dt):
    a = RNG.standard_normal((256, 1024)).astype(dt).astype(np.float64)
    w = (RNG.standard_normal((512, 1024)) / 32).astype(dt).astype(np.float64)
    want = a @ w.T
    # what a kernel returns at best: fp32 accumulation (float32 matmul), then one rounding
    got = (a.astype(np.float32) @ w.astype(np.float32).T).astype(dt).astype(np.float64)
    atol = gemm_atol(a, w, None, fallback=False)
    assert_close(got, want, dt, "rounded", atol=atol)
    i, j = RNG.integers(0, 256), RNG.integers(0, 512)
    wrong = got.copy()
    wrong[i, j] += 0.01 * max(1.0, abs(want[i, j]))  # one element off by 1% of unit scale
    # the whole-tensor relative error the old check used hides it: about 1e-5
    assert np.linalg.norm(wrong - want) / np.linalg.norm(want) < 3e-3
    with pytest.raises(AssertionError, match=rf"1 of {256 * 512} elements out of tolerance.*worst at \({i}, {j}\)"):
        assert_close(wrong, want, dt, "one wrong element", atol=atol)


def test_unwritten_elements_fail():
    want = RNG.standard_normal((4, 8))
    got = want.copy()
    got[2, 3] = np.nan
    with pytest.raises(AssertionError, match="1 of 32 elements"):
        assert_close(got, want, "float32")
