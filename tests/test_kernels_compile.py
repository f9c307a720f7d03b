"""Every kernel family compiles with NVRTC for sm_80 and sm_90 (no GPU needed; runs in CI);
the wgmma family for its one target, sm_90a."""

from __future__ import annotations

import pytest

from cgraph.kernels import loader
from cgraph.kernels.__main__ import main

pytest.importorskip("cupy")


@pytest.mark.parametrize("family, arch", [(f, a) for a in (80, 90) for f in loader.families_for(a)])
def test_family_compiles_with_every_kernel_named(family, arch):
    cubin = loader.compile_cubin(family, arch)
    assert cubin[:4] == b"\x7fELF", "NVRTC must return an ELF cubin"
    missing = [n for n in loader.FAMILIES[family] if not loader.cubin_defines(cubin, n)]
    assert not missing, f"{family}.cu lacks kernels {missing} for sm_{arch}"


def test_cubin_lookup_rejects_names_that_are_only_prefixes():
    cubin = loader.compile_cubin("sampling", 90)
    assert loader.cubin_defines(cubin, "argmax_f16_v8")
    assert not loader.cubin_defines(cubin, "argmax_f16_v")
    assert not loader.cubin_defines(cubin, "argmax_f64_v8")


def test_sources_are_found_and_includes_inlined():
    root = loader.source_dir()
    for family in loader.FAMILIES:
        assert (root / f"{family}.cu").is_file()
        src = loader.family_source(family)
        assert not loader._INCLUDE.search(src), f"{family}: includes must be pasted in for NVRTC without -I"
        assert "struct F16" in src


def test_check_command_reports_counts_and_succeeds(capsys):
    assert main(["check", "--arch", "90", "--family", "sampling", "--family", "norm"]) == 0
    out = capsys.readouterr().out
    n = len(loader.FAMILIES["sampling"]) + len(loader.FAMILIES["norm"])
    assert f"sm_90: {n}/{n} kernels compiled in 2 families" in out


def test_broken_kernel_fails_compile_and_check_exits_nonzero(tmp_path, monkeypatch, capsys):
    root = loader.source_dir()
    for f in root.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    broken = (tmp_path / "sampling.cu").read_text().replace("argmax_pick(best, idx, a[j], i + j);",
                                                            "argmax_pick(best, idx, a[j], undefined_name);")
    (tmp_path / "sampling.cu").write_text(broken)
    monkeypatch.setattr(loader, "source_dir", lambda: tmp_path)
    with pytest.raises(loader.KernelCompileError, match="undefined_name"):
        loader.compile_cubin("sampling", 90)
    assert main(["check", "--arch", "90", "--family", "sampling"]) == 1
    assert "FAILED sampling sm_90" in capsys.readouterr().err


def test_missing_kernel_name_is_reported(monkeypatch):
    monkeypatch.setitem(loader.FAMILIES, "sampling", loader.FAMILIES["sampling"] + ("argmax_f64_v2",))
    with pytest.raises(loader.KernelCompileError, match="argmax_f64_v2"):
        loader.check_family("sampling", 80)


def test_architecture_specific_family_builds_for_its_target_only(capsys):
    assert "gemm_sm90" in loader.families_for(90) and "gemm_sm90" not in loader.families_for(80)
    assert set(loader.families_for(80)) == set(loader.FAMILIES) - set(loader.ARCH_SPECIFIC)
    with pytest.raises(ValueError, match="sm_90a only, not sm_80"):
        loader.compile_cubin("gemm_sm90", 80)
    assert main(["check", "--arch", "80", "--family", "gemm_sm90", "--family", "norm"]) == 0
    out = capsys.readouterr().out
    n = len(loader.FAMILIES["norm"])
    assert "sm_80: skipping gemm_sm90 (built for sm_90a only)" in out
    assert f"sm_80: {n}/{n} kernels compiled in 1 families" in out


def test_architecture_specific_cubins_are_cached_on_disk(tmp_path, monkeypatch):
    calls = []

    def fake_compile(family, arch, options=loader.OPTIONS):
        calls.append((family, arch))
        return b"\x7fELF" + family.encode()

    monkeypatch.setenv("CGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loader, "compile_cubin", fake_compile)
    first = loader.cached_cubin_path("gemm_sm90", 90)
    again = loader.cached_cubin_path("gemm_sm90", 90)
    assert first == again and first.parent == tmp_path and "sm_90a" in first.name
    assert first.read_bytes() == b"\x7fELFgemm_sm90" and calls == [("gemm_sm90", 90)]
    assert not list(tmp_path.glob("*.tmp")), "the cubin is written atomically"
    # a changed source is a different file: stale cubins are never loaded
    monkeypatch.setattr(loader, "family_source", lambda family: "changed")
    assert loader.cached_cubin_path("gemm_sm90", 90) != first and len(calls) == 2
