"""Where the kernel sources are read from and where compiled cubins are kept (pure)."""

from __future__ import annotations

import os
from pathlib import Path

from cgraph.core.errors import NotFoundError


def source_dir() -> Path:
    """Folder holding the .cu sources: the installed wheel's cgraph/_cuda, else the repo's kernels/."""
    package = Path(__file__).resolve().parents[1]  # the installed cgraph/ folder
    packaged = package / "_cuda"
    if (packaged / "common.cuh").is_file():
        return packaged
    repo = package.parent / "kernels"
    if (repo / "common.cuh").is_file():
        return repo
    raise NotFoundError(
        f"CUDA kernel sources not found in {packaged} nor {repo}; reinstall cgraph-cupy "
        "(the wheel ships kernels/ as cgraph/_cuda) or run from a source checkout"
    )


def cache_dir() -> Path:
    """Where compiled cubins (and the logs of failed compiles) are kept: $CGRAPH_CACHE_DIR,
    else ~/.cache/cgraph."""
    env = os.environ.get("CGRAPH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "cgraph"


def shown_path(path: Path) -> str:
    """`path` with the home folder written as ~ (for messages)."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)
