"""The on-disk cubin cache and parallel (pre)compilation of kernel families.

Every part of every family is compiled by NVRTC to a cubin for an explicit target (the
device's sm_XY, or sm_90a for an architecture-specific family) and kept under
:func:`cache_dir` in a file named by a hash of (source with includes pasted, options,
target, NVRTC version): a changed source is a new file, a stale cubin is never loaded.
Files are written atomically (temporary file, then ``os.replace``), so concurrent
processes (pytest-xdist, sanitizers, ranks) never read half a cubin. A cached cubin is
used only after checking that it defines every kernel listed for its part; otherwise it is
compiled again.

:func:`precompile` compiles every missing part of a target concurrently (NVRTC releases
the GIL: threads) and is never silent: one line per family it compiles, then a line every
two seconds until all are done.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import attrs

from cgraph.core.errors import KernelCompileError, StateError
from cgraph.kernels.compiler import compile_cubin, family_source, missing_kernels, nvrtc_version, part_options
from cgraph.kernels.families import PARTS, check_arch, families_for, target
from cgraph.kernels.locations import cache_dir, shown_path

#: seconds between progress lines while programs compile.
HEARTBEAT_S = 2.0


def cubin_file(family: str, arch: int, part: int) -> Path:
    """Cache path of one part's cubin for sm_<arch> (it may not exist yet)."""
    options = part_options(family, arch, part)
    key = hashlib.sha256("\0".join((family_source(family), *options, repr(nvrtc_version())))
                         .encode()).hexdigest()[:24]
    return cache_dir() / f"{family}-p{part}-{target(family, arch)}-{key}.cubin"


def _valid(path: Path, names: tuple[str, ...]) -> bool:
    try:
        return not missing_kernels(path.read_bytes(), names)
    except OSError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_cubin(family: str, arch: int, part: int, *, store: bool = True) -> bytes:
    """Compile one part with NVRTC, check it defines its kernels, and (store) cache it."""
    cubin = compile_cubin(family, arch, part)
    missing = missing_kernels(cubin, PARTS[family][part])
    if missing:
        raise KernelCompileError(f"{family}.cu part {part} compiled for {target(family, arch)} but lacks "
                                 f"kernels {missing}; its CG_IN_PART guards and cgraph.kernels.families.PARTS "
                                 "disagree")
    if store:
        path = cubin_file(family, arch, part)
        try:
            _write_atomically(path, cubin)
        except OSError as exc:
            raise StateError(f"cannot write the kernel cache {shown_path(path.parent)} ({exc}); set "
                             "CGRAPH_CACHE_DIR to a writable folder") from exc
    return cubin


def cubin_path(family: str, arch: int, part: int) -> Path:
    """Path of one part's checked cubin for sm_<arch>, compiling it on a cache miss (no GPU needed)."""
    path = cubin_file(family, arch, part)
    if not _valid(path, PARTS[family][part]):
        build_cubin(family, arch, part)
    return path


@attrs.frozen
class ProgramResult:
    """One NVRTC program (a family's part): compiled now, or found in the cache."""

    family: str
    part: int
    target: str
    cached: bool
    seconds: float  # compile wall time (0 for a cache hit)
    cpu_seconds: float = 0.0  # CPU time of the compiling thread (NVRTC runs in it)
    error: str | None = None


@attrs.frozen
class CompileReport:
    """What :func:`precompile` did for one architecture."""

    arch: int
    programs: tuple[ProgramResult, ...]
    wall_seconds: float
    workers: int

    @property
    def failed(self) -> list[ProgramResult]:
        return [p for p in self.programs if p.error is not None]

    def family_seconds(self) -> dict[str, float]:
        """Compile seconds summed over each family's parts (cache hits count 0)."""
        out: dict[str, float] = {}
        for p in self.programs:
            out[p.family] = out.get(p.family, 0.0) + p.seconds
        return out

    def table(self) -> str:
        """One line per program: family, part, target, seconds or 'cached'."""
        rows = [f"{p.family:<11} part {p.part:>2} {p.target:<7} "
                + ("cached" if p.cached else "FAILED" if p.error else
                   f"{p.seconds:6.2f} s wall, {p.cpu_seconds:6.2f} s CPU")
                for p in self.programs]
        compiled = [p for p in self.programs if not p.cached]
        rows.append(f"sm_{self.arch}: {len(compiled)} of {len(self.programs)} programs compiled, "
                    f"{sum(p.cpu_seconds for p in compiled):.1f} s of compile CPU time, {self.wall_seconds:.1f} s "
                    f"wall on {self.workers} threads")
        return "\n".join(rows)


def default_workers() -> int:
    """Threads for a cold compile: the CPU cores this process may run on (its affinity, and
    a cgroup CPU quota where one is set)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _device_arch() -> int:
    from cgraph.cuda.device import require_device  # noqa: PLC0415 - GPU only when arch is None

    return int(require_device().cuda.Device().compute_capability)


def _say(out: TextIO | None, text: str) -> None:
    if out is not None:
        print(f"cgraph: {text}", file=out, flush=True)


def precompile(arch: int | None = None, *, families: list[str] | None = None, workers: int | None = None,
               use_cache: bool = True, raise_errors: bool = True,
               progress: TextIO | bool = True) -> CompileReport:
    """Compile every missing part of `families` (default: all that build for sm_<arch>)
    concurrently and cache the cubins; returns a per-program timing report.

    arch: an SM architecture such as 80 or 90; None: the current device's (needs a GPU).
    workers: compile threads (default: the usable CPU cores). use_cache=False recompiles
    everything and writes nothing. raise_errors: raise the first KernelCompileError after
    all programs finished (else the report lists failures). progress: True (stderr), a
    stream, or False (silent).
    """
    out = sys.stderr if progress is True else (progress or None)
    arch = _device_arch() if arch is None else check_arch(arch)
    fams = [f for f in (families or families_for(arch)) if f in families_for(arch)]
    start = time.perf_counter()
    results: dict[tuple[str, int], ProgramResult] = {}
    todo: list[tuple[str, int]] = []
    for fam in fams:
        for part in range(len(PARTS[fam])):
            if use_cache and _valid(cubin_file(fam, arch, part), PARTS[fam][part]):
                results[(fam, part)] = ProgramResult(fam, part, target(fam, arch), True, 0.0)
            else:
                todo.append((fam, part))
    n_workers = max(1, min(workers or default_workers(), len(todo) or 1))
    if todo:
        _run(todo, arch, n_workers, use_cache, results, out)
        _say(out, f"compiled {len(todo)} kernel programs for sm_{arch} in "
                       f"{time.perf_counter() - start:.1f} s on {n_workers} threads")
    report = CompileReport(arch, tuple(results[(f, p)] for f in fams for p in range(len(PARTS[f]))),
                           time.perf_counter() - start, n_workers)
    if raise_errors and report.failed:
        bad = report.failed
        raise KernelCompileError(f"{len(bad)} of {len(report.programs)} kernel programs failed for sm_{arch}; "
                                 f"first: {bad[0].error}")
    return report


def _run(todo: list[tuple[str, int]], arch: int, workers: int, store: bool,
         results: dict[tuple[str, int], ProgramResult], progress: TextIO | None) -> None:
    why = f"first use, cached in {shown_path(cache_dir())}" if store else "use_cache=False: nothing is cached"
    for fam in dict.fromkeys(f for f, _ in todo):
        parts = sum(1 for f, _ in todo if f == fam)
        _say(progress, f"compiling kernel family {fam} ({parts} part{'s' * (parts > 1)}) for "
                       f"{target(fam, arch)} ({why})")
    # split families first: their parts are the long ones, so they start before the small ones
    order = sorted(todo, key=lambda u: (len(PARTS[u[0]]) == 1, u))
    t0 = time.perf_counter()

    def one(unit: tuple[str, int]) -> ProgramResult:
        fam, part = unit
        begin, cpu = time.perf_counter(), time.thread_time()
        error = None
        try:
            build_cubin(fam, arch, part, store=store)
        except KernelCompileError as exc:
            error = str(exc)
        return ProgramResult(fam, part, target(fam, arch), False, time.perf_counter() - begin,
                             time.thread_time() - cpu, error)

    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cgraph-nvrtc") as pool:
        pending = {pool.submit(one, u): u for u in order}
        while pending:
            done, _ = cf.wait(pending, timeout=HEARTBEAT_S, return_when=cf.ALL_COMPLETED)
            for fut in done:
                results[pending.pop(fut)] = fut.result()
            if pending:
                running = sorted({f"{f}" for f, _ in pending.values()})
                _say(progress, f"compiling for sm_{arch}: {len(todo) - len(pending)}/{len(todo)} programs "
                               f"done, {time.perf_counter() - t0:.0f} s (still: {', '.join(running)})")
