"""`python -m cgraph.kernels check --arch 90 [--arch 80]`: compile every kernel with NVRTC.

Needs no GPU. Prints the number of kernels compiled per architecture and exits non-zero
when any family fails to compile or lacks a kernel. Architecture-specific families are
compiled for their own target (the wgmma GEMM as sm_90a under --arch 90) and skipped
for other architectures.
"""

from __future__ import annotations

import argparse
import sys
import time

from cgraph.kernels.loader import ARCH_SPECIFIC, FAMILIES, KernelCompileError, check_family, families_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.kernels")
    sub = parser.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="compile every kernel family with NVRTC (no GPU needed)")
    chk.add_argument("--arch", type=int, action="append", help="SM architecture, e.g. 80 or 90 (repeatable)")
    chk.add_argument("--family", action="append", choices=sorted(FAMILIES), help="limit to these families")
    args = parser.parse_args(argv)

    archs = args.arch or [90]
    failed = 0
    for arch in archs:
        count = 0
        start = time.perf_counter()
        families = [f for f in (args.family or sorted(FAMILIES)) if f in families_for(arch)]
        skipped = sorted(set(args.family or FAMILIES) - set(families))
        if skipped:
            print(f"sm_{arch}: skipping {', '.join(skipped)} (built for "
                  f"{', '.join(ARCH_SPECIFIC[f][1] for f in skipped)} only)")
        for fam in families:
            try:
                count += len(check_family(fam, arch))
            except KernelCompileError as exc:
                failed += 1
                print(f"FAILED {fam} sm_{arch}: {exc}", file=sys.stderr)
        total = sum(len(FAMILIES[f]) for f in families)
        print(f"sm_{arch}: {count}/{total} kernels compiled in {len(families)} families "
              f"({time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
