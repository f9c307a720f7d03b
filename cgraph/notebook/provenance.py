"""Where and when a notebook run happened, for the metadata `--write` saves."""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import subprocess
from pathlib import Path


def default_provenance() -> dict[str, str]:
    """Where and when a run happened: device name, UTC date, Python and CuPy versions, and the git
    commit when the tracked files are exactly that commit's."""
    from cgraph.bench.report import device_name  # noqa: PLC0415 - imports CuPy lazily

    info = {"device": device_name(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version()}
    with contextlib.suppress(Exception):
        import cupy  # noqa: PLC0415

        info["cupy"] = cupy.__version__
    with contextlib.suppress(Exception):
        here = Path(__file__).resolve().parent

        def git(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=here, timeout=10)

        # a commit names the code only when the tracked files match it (a copied tree may not)
        status = git("status", "--porcelain", "--untracked-files=no")
        commit = git("rev-parse", "--short", "HEAD").stdout.strip()
        if commit and status.returncode == 0 and not status.stdout.strip():
            info["commit"] = commit
    return info
