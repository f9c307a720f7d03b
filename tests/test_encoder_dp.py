"""Data-parallel encoding on two GPUs equals single-GPU encoding (gpu; needs 2 devices)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def _device_count() -> int:
    try:
        from cgraph._gpu import require_device

        return require_device().cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no GPU: the gpu marker skips anyway
        return 0


@pytest.mark.skipif(_device_count() < 2, reason="needs 2 visible GPUs (run on nvidia-h200-x2)")
def test_two_gpu_data_parallel_outputs_equal_single_gpu_outputs():
    from cgraph.encoder.distributed import launch

    args = dict(n=24, max_tokens=512, min_budget=64, max_batch=8, reps=1, seed=11)
    results = launch("check", 2, args, timeout=300)
    assert len(results) == 2, results
    errors = [r for r in results if "error" in r]
    assert not errors, errors[0]["traceback"]
    r0 = results[0]
    assert results[1]["items"] == r0["items"] == 24
    assert 0 < r0["local_items"] < 24  # both ranks did work
    assert r0["ok"], f"max |dp - single| = {r0['max_abs_diff']}"
