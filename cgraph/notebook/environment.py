"""Where cells run: the notebook's folder as cwd, matplotlib's Agg backend, a per-cell time limit."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

from cgraph.core.errors import ArgumentError, CgraphError


class CellTimeout(CgraphError, TimeoutError):
    """A cell ran longer than run_notebook's `timeout`."""


@contextlib.contextmanager
def notebook_environment(folder: Path) -> Iterator[None]:
    """cwd = the notebook's folder, it first on sys.path, Agg backend; all restored after."""
    old_cwd = os.getcwd()
    old_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"  # read when a cell first imports matplotlib
    mpl = sys.modules.get("matplotlib")
    if mpl is not None:
        mpl.use("Agg")  # already imported in this process: switch it
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    try:
        with warnings.catch_warnings():
            # plt.show() under Agg only warns; Jupyter's inline backend shows figures anyway
            warnings.filterwarnings("ignore", message=".*non-interactive.*")
            warnings.filterwarnings("ignore", message=".*cannot show the figure.*")
            yield
    finally:
        os.chdir(old_cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))
        if old_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old_backend


def check_timeout(timeout: Any) -> None:
    """Raise ArgumentError unless timeout is None or a positive number usable from this thread."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ArgumentError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if threading.current_thread() is not threading.main_thread():
        raise ArgumentError("timeout needs the main thread (it uses SIGALRM); pass timeout=None here")


class TimeLimit:
    """Context manager raising CellTimeout in the running code once `seconds` have passed.

    `expired` tells afterwards whether the limit was hit, so a cell that catches the
    CellTimeout (a bare `except Exception:` in a retry loop) still counts as timed out;
    the alarm repeats every second until the block ends, so such a loop is interrupted
    again rather than running forever. seconds=None: no limit.
    """

    def __init__(self, seconds: float | None, where: str) -> None:
        self.seconds = seconds
        self.where = where
        self.expired = False
        self._armed = False
        self._previous: Any = None

    def _expire(self, _signum: int, _frame: Any) -> None:
        if not self._armed:  # a signal delivered while the block was ending
            return
        self.expired = True
        raise CellTimeout(f"{self.where} ran longer than timeout={self.seconds} s")

    def __enter__(self) -> "TimeLimit":
        if self.seconds is not None:
            self._previous = signal.signal(signal.SIGALRM, self._expire)
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds, min(self.seconds, 1.0))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.seconds is not None:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
