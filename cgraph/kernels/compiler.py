"""NVRTC compilation of one part of a kernel family to a cubin for an explicit target.

Sources are header-free: ``#include "common.cuh"`` and the like are pasted in here, so
NVRTC needs no CUDA include path and the cache key (a hash of the pasted text) sees every
change. Compiling needs CuPy's NVRTC wrapper but no GPU. NVRTC releases the GIL while it
compiles, so parts compile in parallel from threads (cgraph.kernels.cubin_cache).
"""

from __future__ import annotations

import re
from pathlib import Path

from cgraph.core.errors import KernelCompileError, NotFoundError
from cgraph.cuda.device import cupy
from cgraph.kernels.families import FAMILIES, PARTS, target
from cgraph.kernels.locations import cache_dir, shown_path, source_dir

#: NVRTC options used everywhere (plus -arch and -DCGRAPH_PART).
OPTIONS: tuple[str, ...] = ("-std=c++17",)
#: compiler log lines shown in an error message; the whole log goes to a file.
LOG_LINES_SHOWN = 40

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)


def family_source(family: str) -> str:
    """The family's CUDA source with local includes pasted in (each header once)."""
    if family not in FAMILIES:
        raise NotFoundError(f"unknown kernel family {family!r}; expected one of {sorted(FAMILIES)}")
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


def part_options(family: str, arch: int, part: int) -> tuple[str, ...]:
    """The full NVRTC option list of one part (what the cache key hashes)."""
    if not 0 <= part < len(PARTS[family]):
        raise NotFoundError(f"kernel family {family!r} has parts 0..{len(PARTS[family]) - 1}, not {part}")
    return (*OPTIONS, f"-arch={target(family, arch)}", f"-DCGRAPH_PART={part}")


def nvrtc_version() -> tuple[int, int]:
    """NVRTC's (major, minor) version (part of the cache key)."""
    cupy()  # GPUUnavailableError saying how to install CuPy when it is missing
    from cupy.cuda import nvrtc  # noqa: PLC0415 - low-level wrapper, works without a device

    return tuple(nvrtc.getVersion())


def supported_archs() -> tuple[int, ...]:
    """Architectures this NVRTC can compile for."""
    cupy()
    from cupy.cuda import nvrtc  # noqa: PLC0415

    return tuple(int(a) for a in nvrtc.getSupportedArchs())


def shorten_log(log: str, full_log: Path | None) -> str:
    """The first LOG_LINES_SHOWN lines of a compiler log, and a note of what was cut."""
    lines = log.strip().splitlines()
    if len(lines) <= LOG_LINES_SHOWN:
        return "\n".join(lines)
    where = f"; the full log is in {shown_path(full_log)}" if full_log else ""
    return "\n".join([*lines[:LOG_LINES_SHOWN], f"... {len(lines) - LOG_LINES_SHOWN} more lines cut{where}"])


def _save_log(family: str, arch: int, part: int, log: str) -> Path | None:
    path = cache_dir() / "logs" / f"{family}-p{part}-{target(family, arch)}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(log)
    except OSError:
        return None  # a read-only cache: the message still carries the first lines
    return path


def compile_source(source: str, name: str, options: tuple[str, ...]) -> tuple[bytes | None, str]:
    """NVRTC-compile `source` (file name `name` in messages) with the full `options` (an
    -arch among them): (cubin, "") on success, (None, compiler log) on failure. Needs no GPU."""
    cupy()  # GPUUnavailableError saying how to install CuPy when it is missing
    from cupy.cuda import nvrtc  # noqa: PLC0415

    prog = nvrtc.createProgram(source, name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            return None, f"{exc}\n{nvrtc.getProgramLog(prog)}"
        return nvrtc.getCUBIN(prog), ""
    finally:
        nvrtc.destroyProgram(prog)


def compile_cubin(family: str, arch: int, part: int = 0) -> bytes:
    """Compile part `part` of a family to a cubin for sm_<arch> with NVRTC; needs no GPU.

    An architecture-specific family is compiled for its own target (sm_90a for arch 90) and
    raises ArgumentError for any other arch. Raises KernelCompileError with the first
    LOG_LINES_SHOWN lines of the NVRTC log (the whole log is saved under cache_dir()/logs).
    """
    options = part_options(family, arch, part)
    cubin, log = compile_source(family_source(family), f"{family}.cu", options)
    if cubin is None:
        saved = _save_log(family, arch, part, log)
        raise KernelCompileError(f"{family}.cu (part {part}) failed to compile for {target(family, arch)}: "
                                 f"{shorten_log(log, saved)}")
    return cubin


def cubin_defines(cubin: bytes, name: str) -> bool:
    """True when the cubin's symbol table names the kernel `name` exactly."""
    return (b"\0" + name.encode() + b"\0") in cubin


def missing_kernels(cubin: bytes, names: tuple[str, ...]) -> list[str]:
    """The names a cubin lacks (every name when it is not an ELF file at all)."""
    if cubin[:4] != b"\x7fELF":
        return list(names)
    return [n for n in names if not cubin_defines(cubin, n)]
