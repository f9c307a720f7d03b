"""Find, compile and cache the CUDA C kernel families in kernels/*.cu.

Each family is one source file. Its kernels are plain ``extern "C"`` instantiations whose
names this module lists (:data:`FAMILIES`), so the CPU-only check can prove that every
name the launchers use was compiled. Sources are header-free: ``#include "common.cuh"`` is
pasted in here, so NVRTC needs no CUDA include path and CuPy's source-keyed disk cache
sees every change.

Two ways to compile:
- :func:`compile_cubin` uses CuPy's low-level NVRTC wrapper with an explicit ``-arch``; it
  needs no GPU (CI, ``python -m cgraph.kernels check``).
- :func:`get_kernel` builds a ``cupy.RawModule`` for the current device (CuPy picks the
  architecture), cached per (device, compute capability, options, family).

Architecture-specific families (:data:`ARCH_SPECIFIC`, e.g. the wgmma GEMM built for
sm_90a) are compiled by :func:`compile_cubin` for their one target, cached on disk under
:func:`cache_dir` by a hash of source, options, target and NVRTC version, and loaded from
the cubin; they run only on devices of exactly that compute capability.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from cgraph.cuda.device import cupy, require_device
from cgraph.kernels.gemm_plan import WGMMA_SPLITS, WGMMA_TILES

#: NVRTC options used everywhere (the check compiles with exactly these plus -arch).
OPTIONS: tuple[str, ...] = ("-std=c++17",)

_DT_VEC = (("f16", 8), ("bf16", 8), ("f32", 4))


def _elementwise(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{dt}_v{v}" for dt, vec in _DT_VEC for v in (vec, 1))


def _attention() -> tuple[str, ...]:
    names = [f"attention_{dt}_tg{tg}_gb{gb}" for dt in ("f16", "bf16")
             for tg in (8, 16, 32) for gb in (1, 2, 4, 8)]
    names += [f"flash_{dt}_d{d}" for dt in ("f16", "bf16") for d in (64, 128)]
    names += [f"flash_decode_{dt}_d{d}_{v}" for dt in ("f16", "bf16") for d in (64, 128)
              for v in ("s1", "s2", "s4", "s8", "h2", "h2k32", "h4k32")]
    return tuple(names)


def _gemm() -> tuple[str, ...]:
    names = [f"gemm_{dt}_{tile}_s{s}" for dt in ("f16", "bf16") for s in (1, 2, 4, 8)
             for tile in ("t16", "t32", "t64", "t128", "t256")]
    names += [f"gemv_{dt}_m{m}" for dt in ("f16", "bf16") for m in (1, 2, 4, 8)]
    names += [f"gemm_fallback_{dt}" for dt in ("f16", "bf16")]
    return tuple(names)


def _gemm_sm90() -> tuple[str, ...]:
    # the planner's table: the compile check then proves every wgmma plan has its kernel
    return tuple(f"gemm_{dt}_{tile}_s{s}" for dt in ("f16", "bf16") for s in WGMMA_SPLITS
                 for tile in WGMMA_TILES)


#: family (file stem in kernels/) -> kernel names it must define.
FAMILIES: dict[str, tuple[str, ...]] = {
    "embedding": _elementwise("embedding"),
    "norm": _elementwise("rms_norm"),
    "activation": _elementwise("silu_and_mul"),
    "rotary": _elementwise("rotary"),
    "cache": _elementwise("reshape_and_cache"),
    "sampling": _elementwise("argmax"),
    "attention": _attention(),
    "gemm": _gemm(),
    "gemm_sm90": _gemm_sm90(),
}
#: families whose instructions exist on one target only: family -> (compute capability, -arch).
ARCH_SPECIFIC: dict[str, tuple[int, str]] = {"gemm_sm90": (90, "sm_90a")}


def families_for(arch: int) -> list[str]:
    """Families that are built for sm_<arch>: every portable one, plus those specific to it."""
    return sorted(f for f in FAMILIES if f not in ARCH_SPECIFIC or ARCH_SPECIFIC[f][0] == int(arch))


def _target(family: str, arch: int) -> str:
    if family in ARCH_SPECIFIC:
        cc, target = ARCH_SPECIFIC[family]
        if int(arch) != cc:
            raise ValueError(f"kernel family {family!r} is built for {target} only, not sm_{arch}; "
                             f"use families_for({arch}) to list the families of an architecture")
        return target
    return f"sm_{int(arch)}"

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)


class KernelCompileError(RuntimeError):
    """NVRTC rejected a kernel family; the message carries the compiler log."""


def source_dir() -> Path:
    """Folder holding the .cu sources: the installed wheel's cgraph/_cuda, else the repo's kernels/."""
    package = Path(__file__).resolve().parents[1]  # the installed cgraph/ folder
    packaged = package / "_cuda"
    if (packaged / "common.cuh").is_file():
        return packaged
    repo = package.parent / "kernels"
    if (repo / "common.cuh").is_file():
        return repo
    raise FileNotFoundError(
        f"CUDA kernel sources not found in {packaged} nor {repo}; reinstall cgraph-cupy "
        "(the wheel ships kernels/ as cgraph/_cuda) or run from a source checkout"
    )


def family_source(family: str) -> str:
    """The family's CUDA source with local includes pasted in."""
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}; expected one of {sorted(FAMILIES)}")
    root = source_dir()
    pasted: set[str] = set()  # each header once per family, like #pragma once

    def expand(text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in pasted:
                return ""
            pasted.add(name)
            return expand((root / name).read_text())
        return _INCLUDE.sub(repl, text)

    return expand((root / f"{family}.cu").read_text())


def compile_cubin(family: str, arch: int, options: tuple[str, ...] = OPTIONS) -> bytes:
    """Compile one family to a cubin for sm_<arch> with NVRTC; needs no GPU.

    An architecture-specific family is compiled for its own target (sm_90a for arch 90) and
    raises ValueError for any other arch. Raises KernelCompileError with the NVRTC log on failure.
    """
    from cupy.cuda import nvrtc  # noqa: PLC0415 - low-level wrapper works without a device

    target = _target(family, arch)
    src = family_source(family)
    prog = nvrtc.createProgram(src, f"{family}.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, (*options, f"-arch={target}"))
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise KernelCompileError(f"{family}.cu failed for {target}: {exc}\n{log}") from exc
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)


def cache_dir() -> Path:
    """Where compiled architecture-specific cubins are kept: $CGRAPH_CACHE_DIR, else ~/.cache/cgraph."""
    env = os.environ.get("CGRAPH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "cgraph"


def cached_cubin_path(family: str, arch: int) -> Path:
    """Path of the family's cubin for sm_<arch>, compiling it on a cache miss (no GPU needed)."""
    from cupy.cuda import nvrtc  # noqa: PLC0415

    target = _target(family, arch)
    key = hashlib.sha256("\0".join((family_source(family), *OPTIONS, target,
                                     repr(nvrtc.getVersion()))).encode()).hexdigest()[:24]
    path = cache_dir() / f"{family}-{target}-{key}.cubin"
    if not path.is_file():
        cubin = compile_cubin(family, arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename: concurrent processes (pytest-xdist, sanitizers) never see half a file
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(cubin)
        os.replace(tmp, path)
    return path


def cubin_defines(cubin: bytes, name: str) -> bool:
    """True when the cubin's symbol table names the kernel `name` exactly."""
    return (b"\0" + name.encode() + b"\0") in cubin


def check_family(family: str, arch: int) -> list[str]:
    """Compile a family for sm_<arch> (its own target if architecture-specific); return its
    kernel names, or raise if any is missing."""
    cubin = compile_cubin(family, arch)
    missing = [n for n in FAMILIES[family] if not cubin_defines(cubin, n)]
    if missing:
        raise KernelCompileError(f"{family}.cu compiled for sm_{arch} but lacks kernels {missing}")
    return list(FAMILIES[family])


_lock = threading.Lock()
_modules: dict[tuple[Any, ...], Any] = {}
_kernels: dict[tuple[Any, ...], Any] = {}


def _device_key() -> tuple[int, str]:
    cp = cupy()
    dev = cp.cuda.Device()
    return dev.id, str(dev.compute_capability)


def get_kernel(family: str, name: str, *, dynamic_smem: int = 0) -> Any:
    """The compiled kernel `name` of `family` for the current device (cached).

    `dynamic_smem` raises the kernel's dynamic shared-memory limit (needed above 48 KB);
    done once here, outside any launch, so that launches stay capturable.
    """
    key = (*_device_key(), OPTIONS, family, name)
    kern = _kernels.get(key)
    if kern is not None:
        return kern
    require_device()
    cp = cupy()
    with _lock:
        mkey = key[:4]
        mod = _modules.get(mkey)
        if mod is None:
            if family in ARCH_SPECIFIC:
                cc, target = ARCH_SPECIFIC[family]
                if int(key[1]) != cc:
                    raise RuntimeError(f"kernel family {family!r} runs on compute capability "
                                       f"{cc / 10:.1f} devices only ({target}); this device is {key[1]}")
                mod = cp.RawModule(path=str(cached_cubin_path(family, cc)))
            else:
                mod = cp.RawModule(code=family_source(family), options=OPTIONS, backend="nvrtc")
            _modules[mkey] = mod
        if name not in FAMILIES[family]:
            raise ValueError(f"kernel {name!r} is not part of family {family!r}")
        kern = mod.get_function(name)
        if dynamic_smem > 48 * 1024:
            kern.max_dynamic_shared_size_bytes = dynamic_smem
        _kernels[key] = kern
    return kern
