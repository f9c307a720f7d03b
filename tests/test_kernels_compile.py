"""Every part of every kernel family compiles with NVRTC for sm_80 and sm_90 (no GPU needed;
runs in CI), the wgmma family for its one target, sm_90a; the on-disk cubin cache, the
parallel precompile and `python -m cgraph.kernels check`.

The compile tests go through the same cache the launchers use (CGRAPH_CACHE_DIR or
~/.cache/cgraph), so a second run recompiles nothing unchanged; a cache hit still has its
cubin checked for every kernel name of its part.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cgraph.core.errors import ArgumentError, KernelCompileError, StateError
from cgraph.kernels import compiler, cubin_cache
from cgraph.kernels.__main__ import main
from cgraph.kernels.compiler import LOG_LINES_SHOWN, compile_cubin, cubin_defines, family_source, shorten_log
from cgraph.kernels.cubin_cache import cubin_file, cubin_path, precompile
from cgraph.kernels.families import ARCH_SPECIFIC, FAMILIES, PARTS, families_for
from cgraph.kernels.locations import source_dir

ROOT = Path(__file__).resolve().parents[1]


def _needs_nvrtc():
    pytest.importorskip("cupy")


@pytest.fixture(scope="module", params=[80, 90])
def compiled(request):
    _needs_nvrtc()
    return precompile(request.param)


def test_every_part_of_every_family_compiles_with_its_kernels(compiled):
    arch = compiled.arch
    assert not compiled.failed
    assert {(p.family, p.part) for p in compiled.programs} == {
        (f, i) for f in families_for(arch) for i in range(len(PARTS[f]))}
    for p in compiled.programs:
        cubin = cubin_file(p.family, arch, p.part).read_bytes()
        assert cubin[:4] == b"\x7fELF", "NVRTC must return an ELF cubin"
        missing = [n for n in PARTS[p.family][p.part] if not cubin_defines(cubin, n)]
        assert not missing, f"{p.family}.cu part {p.part} lacks kernels {missing} for {p.target}"


def test_parts_partition_each_family_and_match_the_source_guards():
    for fam, parts in PARTS.items():
        names = [n for part in parts for n in part]
        assert len(names) == len(set(names)) and tuple(names) == FAMILIES[fam]
        guards = {int(g) for g in re.findall(r"#if CG_IN_PART\((\d+)\)", family_source(fam))}
        assert guards == (set(range(len(parts))) if len(parts) > 1 else set()), fam


def test_cubin_lookup_rejects_names_that_are_only_prefixes():
    _needs_nvrtc()
    cubin = cubin_path("sampling", 90, 0).read_bytes()
    assert cubin_defines(cubin, "argmax_f16_v8")
    assert not cubin_defines(cubin, "argmax_f16_v")
    assert not cubin_defines(cubin, "argmax_f64_v8")


def test_sources_are_found_and_includes_inlined():
    root = source_dir()
    for family in FAMILIES:
        assert (root / f"{family}.cu").is_file()
        src = family_source(family)
        assert not re.search(r'^\s*#include\s+"', src, re.MULTILINE), f"{family}: includes must be pasted in"
        assert "struct F16" in src


def test_check_command_reports_counts_and_succeeds(capsys):
    _needs_nvrtc()
    assert main(["check", "--arch", "90", "--family", "sampling", "--family", "norm"]) == 0
    out = capsys.readouterr().out
    n = len(FAMILIES["sampling"]) + len(FAMILIES["norm"])
    assert f"sm_90: {n}/{n} kernels compiled in 2 families" in out


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _broken_sources(tmp_path, monkeypatch, old: str, new: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in source_dir().iterdir():
        (src / f.name).write_text(f.read_text())
    text = (src / "sampling.cu").read_text()
    assert old in text
    (src / "sampling.cu").write_text(text.replace(old, new))
    monkeypatch.setattr(compiler, "source_dir", lambda: src)


def test_broken_kernel_fails_compile_and_check_exits_nonzero(tmp_path, monkeypatch, capsys, private_cache):
    _needs_nvrtc()
    _broken_sources(tmp_path, monkeypatch, "argmax_pick(best, idx, a[j], i + j);",
                    "argmax_pick(best, idx, a[j], undefined_name);")
    with pytest.raises(KernelCompileError, match="undefined_name"):
        compile_cubin("sampling", 90)
    assert main(["check", "--arch", "90", "--family", "sampling"]) == 1
    assert "FAILED sampling sm_90" in capsys.readouterr().err
    assert not list(private_cache.glob("*.cubin")), "a failed compile caches nothing"


def test_long_compiler_logs_are_cut_and_the_whole_log_saved(tmp_path, monkeypatch, private_cache):
    _needs_nvrtc()
    junk = "\n".join(f"__device__ int junk{i}() {{ return undefined_{i}; }}" for i in range(60))
    _broken_sources(tmp_path, monkeypatch, '#include "common.cuh"', '#include "common.cuh"\n' + junk)
    with pytest.raises(KernelCompileError) as info:
        compile_cubin("sampling", 90)
    message = str(info.value)
    cut = re.search(r"\.\.\. (\d+) more lines cut; the full log is in (\S+)", message)
    assert cut and len(message.splitlines()) <= LOG_LINES_SHOWN + 3, message[-500:]
    log = private_cache / "logs" / "sampling-p0-sm_90.log"
    assert log.is_file() and "undefined_59" in log.read_text() and "undefined_59" not in message


def test_shorten_log_keeps_short_logs_whole():
    assert shorten_log("a\nb\n", None) == "a\nb"
    long = "\n".join(map(str, range(100)))
    assert shorten_log(long, None).splitlines()[-1] == f"... {100 - LOG_LINES_SHOWN} more lines cut"


def test_a_cached_cubin_lacking_a_listed_kernel_is_recompiled_and_then_reported(monkeypatch, private_cache):
    _needs_nvrtc()
    first = cubin_path("sampling", 80, 0)
    assert first.is_file() and first.parent == private_cache
    monkeypatch.setitem(PARTS, "sampling", (PARTS["sampling"][0] + ("argmax_f64_v2",),))
    with pytest.raises(KernelCompileError, match=r"lacks kernels \['argmax_f64_v2'\]"):
        cubin_path("sampling", 80, 0)


def test_architecture_specific_family_builds_for_its_target_only(capsys):
    _needs_nvrtc()
    assert "gemm_sm90" in families_for(90) and "gemm_sm90" not in families_for(80)
    assert set(families_for(80)) == set(FAMILIES) - set(ARCH_SPECIFIC)
    with pytest.raises(ArgumentError, match="sm_90a only, not sm_80"):
        compile_cubin("gemm_sm90", 80)
    assert main(["check", "--arch", "80", "--family", "gemm_sm90", "--family", "norm"]) == 0
    out = capsys.readouterr().out
    n = len(FAMILIES["norm"])
    assert "sm_80: skipping gemm_sm90 (built for sm_90a only)" in out
    assert f"sm_80: {n}/{n} kernels compiled in 1 families" in out


def _fake_compiler(monkeypatch, delay: float = 0.0) -> list:
    """Replace NVRTC by a stand-in returning an ELF-tagged blob that names the part's kernels."""
    calls: list = []
    lock = threading.Lock()

    def fake(family, arch, part=0):
        with lock:
            calls.append((family, arch, part))
        time.sleep(delay)
        return b"\x7fELF\0" + b"\0".join(n.encode() for n in PARTS[family][part]) + b"\0"

    monkeypatch.setattr(cubin_cache, "compile_cubin", fake)
    monkeypatch.setattr(cubin_cache, "nvrtc_version", lambda: (13, 0))
    return calls


def test_cubins_are_cached_by_content_written_atomically_and_verified(monkeypatch, private_cache):
    calls = _fake_compiler(monkeypatch)
    first = cubin_path("gemm_sm90", 90, 1)
    assert cubin_path("gemm_sm90", 90, 1) == first and calls == [("gemm_sm90", 90, 1)]
    assert first.parent == private_cache and "-p1-sm_90a-" in first.name
    assert not list(private_cache.glob("*.tmp")), "the cubin is written atomically"
    first.write_bytes(first.read_bytes()[:20])  # a truncated file (a crash mid-write elsewhere)
    cubin_path("gemm_sm90", 90, 1)
    assert len(calls) == 2, "a cached cubin missing kernels is compiled again"
    monkeypatch.setattr(cubin_cache, "family_source", lambda family: "changed")
    assert cubin_path("gemm_sm90", 90, 1) != first and len(calls) == 3, "a changed source is a new file"


def test_an_unwritable_cache_is_a_clear_error(monkeypatch, tmp_path):
    _fake_compiler(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CGRAPH_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(StateError, match="cannot write the kernel cache .* set CGRAPH_CACHE_DIR"):
        cubin_path("norm", 90, 0)


def test_precompile_compiles_missing_parts_in_parallel_and_reports_progress(monkeypatch, private_cache):
    calls = _fake_compiler(monkeypatch, delay=0.3)
    monkeypatch.setattr(cubin_cache, "HEARTBEAT_S", 0.1)
    out = io.StringIO()
    start = time.perf_counter()
    report = precompile(90, families=["attention", "norm"], workers=8, progress=out)
    wall = time.perf_counter() - start
    n = len(PARTS["attention"]) + 1
    assert len(calls) == n and len(report.programs) == n and not report.failed
    assert wall < n * 0.3 / 2, f"{n} programs of 0.3 s on 8 threads took {wall:.1f} s: not parallel"
    text = out.getvalue()
    assert f"cgraph: compiling kernel family attention ({n - 1} parts) for sm_90 (first use, cached in" in text
    assert "cgraph: compiling kernel family norm (1 part) for sm_90" in text
    assert re.search(rf"cgraph: compiling for sm_90: \d+/{n} programs done", text), "heartbeat lines"
    again = precompile(90, families=["attention", "norm"], progress=out)
    assert len(calls) == n and all(p.cached for p in again.programs), "a second run compiles nothing"
    assert "programs compiled" in again.table()


def test_unsupported_architecture_is_a_one_line_error(capsys):
    _needs_nvrtc()
    start = time.perf_counter()
    assert main(["check", "--arch", "75"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sm_75 is not supported" in err and "8.0 or newer" in err
    assert time.perf_counter() - start < 5, "rejected before compiling anything"


def test_check_without_cupy_says_what_to_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["cupy"] = None  # any `import cupy` now raises ImportError
        from cgraph.kernels.__main__ import main
        sys.exit(main(["check", "--arch", "90"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert "pip install 'cgraph-cupy[cuda13]'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
