"""The default decode attention arithmetic depends on the head layout and the device only: its
signature has no batch argument, and its choice is a fixed key split where clusters exist.
The batch picks only which of two kernels computes that split (cluster or serial, the same
bits: compared in tests/test_kernels_attention_gpu.py)."""

from __future__ import annotations

import inspect

import pytest

from cgraph.core.errors import NotFoundError
from cgraph.kernels.attention import (DECODE_SERIAL_SPLITS, DECODE_SPLITS, DECODE_VARIANTS, DEFAULT_KEY_SPLITS,
                                      SERIAL_SPLITS_CTAS_PER_SM, decode_kernel_parts, decode_kernel,
                                      default_decode_variant)


def test_the_choice_sees_no_batch_property():
    assert list(inspect.signature(default_decode_variant).parameters) == ["hkv", "clusters"]


@pytest.mark.parametrize("hkv", [1, 2, 3, 8, 32])
def test_clusters_give_the_fixed_key_split_and_every_choice_is_a_known_kernel(hkv):
    assert default_decode_variant(hkv, True) == f"s{DEFAULT_KEY_SPLITS}"
    assert DEFAULT_KEY_SPLITS in DECODE_SPLITS
    plain = default_decode_variant(hkv, False)
    assert plain in DECODE_VARIANTS and plain != "s" or plain == "s1"
    assert plain == ("h2k32" if hkv % 2 == 0 else "s1")


@pytest.mark.parametrize("hkv", [1, 2, 8, 32])
@pytest.mark.parametrize("sm_count", [78, 132])
def test_the_batch_picks_the_serial_twin_of_the_default_split_past_the_threshold(hkv, sm_count):
    default = default_decode_variant(hkv, True)
    assert DEFAULT_KEY_SPLITS in DECODE_SERIAL_SPLITS
    first = next(r for r in range(1, 10_000) if r * hkv >= SERIAL_SPLITS_CTAS_PER_SM * sm_count)
    for rows in (1, first - 1, first, first + 1, 4 * first):
        got = decode_kernel(rows, hkv, sm_count, True)
        assert got == (f"{default}serial" if rows >= first else default), (rows, got)
        assert decode_kernel_parts(got) == ("s", DEFAULT_KEY_SPLITS, rows >= first)
    for rows in (1, first, 4 * first):  # without clusters the batch changes nothing
        assert decode_kernel(rows, hkv, sm_count, False) == default_decode_variant(hkv, False)


def test_variant_names_parse_and_unknown_ones_name_the_known_ones():
    for n in DECODE_SPLITS:
        assert decode_kernel_parts(f"s{n}") == ("s", n, False)
    for n in DECODE_SERIAL_SPLITS:
        assert decode_kernel_parts(f"s{n}serial") == ("s", n, True)
    for v in DECODE_VARIANTS:
        if v != "s":
            assert decode_kernel_parts(v) == (v, 1, False)
    for bad in ("s3", "s1serial", "h2serial", "serial", "s", "x4", "s16"):
        with pytest.raises(NotFoundError, match="s4serial") as info:
            decode_kernel_parts(bad)
        assert repr(bad) in str(info.value)
