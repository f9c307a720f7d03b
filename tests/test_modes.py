"""GraphMode: parts of the pair modes, predicates, and parsing names."""

from __future__ import annotations

import pytest

from cgraph import GraphMode
from cgraph.core.errors import ArgumentError, ArgumentTypeError

N, P, F = GraphMode.NONE, GraphMode.PIECEWISE, GraphMode.FULL
FDO, FAP = GraphMode.FULL_DECODE_ONLY, GraphMode.FULL_AND_PIECEWISE


@pytest.mark.parametrize("mode, decode, mixed", [
    (N, N, N), (P, P, P), (F, F, F), (FDO, F, N), (FAP, F, P),
])
def test_decode_and_mixed_parts(mode, decode, mixed):
    assert mode.decode_mode() is decode
    assert mode.mixed_mode() is mixed


def test_only_pair_modes_have_separate_routine():
    assert [m for m in GraphMode if m.separate_routine()] == [FDO, FAP]
    assert [m for m in GraphMode if m.is_runtime_mode()] == [N, P, F]


@pytest.mark.parametrize("mode, contained", [
    (N, {N}), (P, {P}), (F, {F}), (FDO, {FDO, F, N}), (FAP, {FAP, F, P}),
])
def test_has_mode_checks_either_part(mode, contained):
    for other in GraphMode:
        assert mode.has_mode(other) is (other in contained), (mode, other)


@pytest.mark.parametrize("mode, piecewise, full", [
    (N, False, False), (P, True, False), (F, False, True), (FDO, False, True), (FAP, True, True),
])
def test_requires_piecewise_and_has_full_graphs(mode, piecewise, full):
    assert mode.requires_piecewise() is piecewise
    assert mode.has_full_graphs() is full


@pytest.mark.parametrize("text, mode", [
    ("none", N), ("NONE", N), ("Piecewise", P), ("full", F), (" FULL ", F),
    ("full_decode_only", FDO), ("Full-Decode-Only", FDO), ("full and piecewise", FAP),
    ("FULL_AND_PIECEWISE", FAP),
])
def test_parse_is_case_insensitive(text, mode):
    assert GraphMode.parse(text) is mode


def test_parse_returns_modes_unchanged_and_names_round_trip():
    for mode in GraphMode:
        assert GraphMode.parse(mode) is mode
        assert GraphMode.parse(mode.name) is mode
        assert GraphMode.parse(str(mode)) is mode


def test_parse_unknown_name_lists_valid_names():
    with pytest.raises(ArgumentError) as err:
        GraphMode.parse("fulll")
    msg = str(err.value)
    assert "'fulll'" in msg
    for mode in GraphMode:
        assert mode.value in msg


@pytest.mark.parametrize("bad", [2, None, 1.0, True, ("full",)])
def test_parse_rejects_non_strings(bad):
    with pytest.raises(ArgumentTypeError, match="GraphMode or its name"):
        GraphMode.parse(bad)


def test_has_mode_accepts_names():
    assert FAP.has_mode("piecewise")
    with pytest.raises(ArgumentError, match="unknown graph mode"):
        F.has_mode("partial")
