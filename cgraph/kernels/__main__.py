"""`python -m cgraph.kernels check --arch 90 [--arch 80] [--no-cache]`: compile every kernel with NVRTC.

Needs CuPy (for NVRTC) but no GPU. Compiles every part of every family for each
architecture, in parallel, through the same on-disk cubin cache the launchers use (a
cached cubin still has every kernel name checked; --no-cache recompiles everything and
writes nothing). Prints the number of kernels compiled per architecture and exits
non-zero when any family fails to compile or lacks a kernel. Architecture-specific
families are compiled for their own target (the wgmma GEMM as sm_90a under --arch 90) and
skipped for other architectures. An architecture the kernels cannot support is a one-line
error before anything compiles.
"""

from __future__ import annotations

import argparse
import sys

from cgraph.core.errors import ArgumentError, GPUUnavailableError
from cgraph.kernels.cubin_cache import precompile
from cgraph.kernels.families import ARCH_SPECIFIC, FAMILIES, check_arch, families_for


def _archs(requested: list[int]) -> list[int]:
    from cgraph.kernels.compiler import supported_archs  # noqa: PLC0415 - needs CuPy

    supported = supported_archs()
    for arch in requested:
        check_arch(arch)
        if arch not in supported:
            raise ArgumentError(f"sm_{arch} is not an architecture this NVRTC compiles for; it supports "
                                f"{', '.join(f'sm_{a}' for a in supported if a >= 80)}")
    return requested


def check(archs: list[int], families: list[str] | None, use_cache: bool, workers: int | None) -> int:
    """Compile and check; print one summary line per architecture; return the exit status."""
    failed = 0
    for arch in archs:
        chosen = [f for f in (families or sorted(FAMILIES)) if f in families_for(arch)]
        skipped = sorted(set(families or FAMILIES) - set(chosen))
        if skipped:
            print(f"sm_{arch}: skipping {', '.join(skipped)} (built for "
                  f"{', '.join(ARCH_SPECIFIC[f][1] for f in skipped)} only)")
        report = precompile(arch, families=chosen, workers=workers, use_cache=use_cache, raise_errors=False)
        bad = {p.family for p in report.failed}
        for p in report.failed:
            print(f"FAILED {p.family} sm_{arch}: {p.error}", file=sys.stderr)
        failed += len(bad)
        count = sum(len(FAMILIES[f]) for f in chosen if f not in bad)
        total = sum(len(FAMILIES[f]) for f in chosen)
        cached = sum(p.cached for p in report.programs)
        print(f"sm_{arch}: {count}/{total} kernels compiled in {len(chosen)} families "
              f"({len(report.programs)} programs, {cached} from the cache; {report.wall_seconds:.1f} s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.kernels")
    sub = parser.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="compile every kernel family with NVRTC (no GPU needed)")
    chk.add_argument("--arch", type=int, action="append", help="SM architecture, e.g. 80 or 90 (repeatable)")
    chk.add_argument("--family", action="append", choices=sorted(FAMILIES), help="limit to these families")
    chk.add_argument("--no-cache", action="store_true", help="recompile everything; read and write no cached cubin")
    chk.add_argument("--workers", type=int, default=None, help="compile threads (default: the CPU cores)")
    args = parser.parse_args(argv)
    try:
        archs = _archs(args.arch or [90])
        return check(archs, args.family, not args.no_cache, args.workers)
    except (ArgumentError, GPUUnavailableError) as exc:
        print(f"cgraph.kernels check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
