"""`python -m cgraph.notebook [--write] [--only-tagged TAG] [--timeout S] NB.ipynb ...`.

Runs every notebook named, in order, whatever happens to the ones before it: a notebook
whose cell raises, exits or times out, that cannot be read, or that has no cell with the
asked-for tag is a FAIL line naming the cause, and the run goes on. Prints one OK/FAIL
line per notebook and a summary; the exit status is 0 only when every notebook passed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from cgraph.core.errors import ArgumentError
from cgraph.notebook.environment import check_timeout
from cgraph.notebook.provenance import default_provenance
from cgraph.notebook.runner import NotebookError, run_notebook


def _run_one(name: str, args: argparse.Namespace, provenance: dict[str, Any] | None) -> bool:
    """Run one notebook and print its OK/FAIL line; True when it passed."""
    started = time.perf_counter()
    try:
        results = run_notebook(name, write=args.write, only_tagged=args.only_tagged,
                               timeout=args.timeout, provenance=provenance)
    except KeyboardInterrupt:
        raise
    except NotebookError as exc:
        print(f"FAIL {name}: {exc}")
        for o in exc.results[-1].outputs if exc.results else ():
            if o["output_type"] == "error":
                print("\n".join(o["traceback"]))
        return False
    # anything else (unreadable file, unknown tag, a failure of the executor itself, even a
    # SystemExit that escaped it) fails this notebook only: the next ones still run
    except BaseException as exc:  # noqa: BLE001
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
        return False
    seconds = time.perf_counter() - started
    print(f"OK   {name}: {len(results)} cells in {seconds:.1f} s" + (" (written)" if args.write else ""))
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0: every notebook passed, 1: any failed)."""
    parser = argparse.ArgumentParser(prog="python -m cgraph.notebook",
                                     description="Execute Jupyter notebooks without Jupyter.")
    parser.add_argument("notebooks", nargs="+", help=".ipynb files to execute")
    parser.add_argument("--write", action="store_true",
                        help="save outputs and provenance (device, date, commit) into each notebook")
    parser.add_argument("--only-tagged", default=None, help="run only cells with this tag (e.g. pure)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.write and args.only_tagged is not None:
        parser.error("--write saves a full run; it cannot be combined with --only-tagged")
    try:
        check_timeout(args.timeout)
    except ArgumentError as exc:
        parser.error(str(exc))
    provenance = default_provenance() if args.write else None
    failed = [name for name in args.notebooks if not _run_one(name, args, provenance)]
    sys.stdout.flush()
    total = len(args.notebooks)
    if failed:
        print(f"{len(failed)} of {total} notebooks failed: {', '.join(failed)}")
        return 1
    print(f"all {total} notebooks passed")
    return 0
