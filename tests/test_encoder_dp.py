"""Data-parallel encoding on two GPUs equals single-GPU encoding (gpu; needs 2 devices)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _device_count() -> int:
    try:
        from cgraph.cuda.device import require_device

        return require_device().cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no GPU: the gpu marker skips anyway
        return 0


@pytest.mark.skipif(_device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_data_parallel_outputs_equal_single_gpu_outputs():
    import cupy as cp

    from cgraph.bench.encoder_dp import build, worker
    from cgraph.cuda.ranks import launch

    args = dict(mode="check", n=24, max_tokens=512, min_budget=64, max_batch=8, reps=1, seed=11)
    results = launch(worker, 2, args, timeout=300)
    assert len(results) == 2, results
    errors = [r for r in results if "error" in r]
    assert not errors, errors[0]["traceback"]
    assert 0 < results[0]["local_items"] < 24 and results[0]["local_items"] + results[1]["local_items"] == 24
    # this process encodes the same images on one GPU, eagerly, and compares every image
    model, images, manager = build(args)
    manager.close()
    dp = results[0]["outputs"]
    assert len(dp) == len(images) == 24
    for i, image in enumerate(images):
        want = cp.asnumpy(model.encode(image)).astype(np.float32)
        got = dp[i].astype(np.float32)
        assert got.shape == want.shape, (i, got.shape, want.shape)
        np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2, err_msg=f"image {i}")
