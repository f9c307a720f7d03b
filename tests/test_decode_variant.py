"""The default decode attention kernel depends on the head layout and the device only: its
signature has no batch argument, and its choice is a fixed key split where clusters exist."""

from __future__ import annotations

import inspect

import pytest

from cgraph.kernels.attention import DECODE_SPLITS, DECODE_VARIANTS, DEFAULT_KEY_SPLITS, default_decode_variant


def test_the_choice_sees_no_batch_property():
    assert list(inspect.signature(default_decode_variant).parameters) == ["hkv", "clusters"]


@pytest.mark.parametrize("hkv", [1, 2, 3, 8, 32])
def test_clusters_give_the_fixed_key_split_and_every_choice_is_a_known_kernel(hkv):
    assert default_decode_variant(hkv, True) == f"s{DEFAULT_KEY_SPLITS}"
    assert DEFAULT_KEY_SPLITS in DECODE_SPLITS
    plain = default_decode_variant(hkv, False)
    assert plain in DECODE_VARIANTS and plain != "s" or plain == "s1"
    assert plain == ("h2k32" if hkv % 2 == 0 else "s1")
