"""`python -m cgraph.bench.sanitizer LOGDIR`: the compute-sanitizer run as a results table.

Reads the per-part logs that `bash .ci/gpu sanitizers LOGDIR` leaves (LOGDIR/<tool>-<part>/
out.txt: pytest's summary line and the tool's summary line) and writes
notebooks/results/sanitizer.{json,md} with the tests run and the errors found per part.
Exits non-zero if a part is missing its summaries, failed tests, or found an error.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from cgraph.bench.report import add_out_argument, write_results

_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?)\b")
_TOOL = re.compile(r"(?:ERROR SUMMARY: (\d+) errors?|RACECHECK SUMMARY: (\d+) hazards displayed \((\d+) errors)")


def summarize(part_dir: Path) -> dict[str, Any]:
    """One row: tool, part, pytest counts and the sanitizer's error count (None if absent)."""
    text = (part_dir / "out.txt").read_text(errors="replace") if (part_dir / "out.txt").exists() else ""
    tool, _, part = part_dir.name.partition("-")
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    pytest_lines = [ln for ln in text.splitlines() if " passed" in ln or " failed" in ln]
    if pytest_lines:
        for n, kind in _COUNT.findall(pytest_lines[-1]):
            counts["errors" if kind.startswith("error") else kind] += int(n)
    found = None
    for m in _TOOL.finditer(text):
        found = int(m.group(1) if m.group(1) is not None else m.group(3))
    return {"tool": tool, "part": part, "tests_passed": counts["passed"], "tests_failed": counts["failed"],
            "tests_skipped": counts["skipped"], "sanitizer_errors": found,
            "summary_found": bool(pytest_lines) and found is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.bench.sanitizer",
                                     description="summarise the logs of `bash .ci/gpu sanitizers LOGDIR`")
    parser.add_argument("logdir", help="the folder given to .ci/gpu sanitizers")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    parts = sorted(p for p in Path(args.logdir).glob("*check-*") if p.is_dir())
    if not parts:
        print(f"no memcheck-*/racecheck-* folders under {args.logdir!r}: run "
              f"`bash .ci/gpu sanitizers {args.logdir}` first")
        return 2
    rows = [summarize(p) for p in parts]
    bad = [r for r in rows if not r["summary_found"] or r["tests_failed"] or r["sanitizer_errors"]]
    write_results("sanitizer", rows, title="compute-sanitizer over the GPU test suite",
                  notes=["memcheck: the whole GPU suite (CuPy pooling off, API errors the fault tests provoke not reported)",
                         "racecheck: the kernel tests (shared-memory hazards)",
                         "the five parts run as concurrent processes on one GPU (`bash .ci/gpu sanitizers`)"],
                  out_dir=args.out)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
