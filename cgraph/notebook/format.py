"""The .ipynb file format as far as the executor needs it: read, write, a cell's source and tags.

Notebooks are plain dicts (nbformat 4 JSON); nbformat itself is not needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from cgraph.core.errors import ArgumentError


def joined(text: str | list[str]) -> str:
    """nbformat allows a multi-line string as one str or as a list of lines: give one str."""
    return text if isinstance(text, str) else "".join(text)


def lines(text: str) -> list[str]:
    """nbformat stores multi-line strings as lists of lines (each keeps its newline)."""
    return text.splitlines(keepends=True)


def read_notebook(path: str | os.PathLike) -> dict:
    """Load an .ipynb as a dict, checking it is nbformat 4 with a list of cells.

    Raises ArgumentError (a ValueError) for a file that is not JSON or not nbformat 4,
    OSError when it cannot be read.
    """
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArgumentError(f"{path} is not valid JSON ({exc}); is it an .ipynb file?") from exc
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise ArgumentError(
            f"{path} is not an nbformat 4 notebook (nbformat={nb.get('nbformat') if isinstance(nb, dict) else None!r}); "
            "convert it with `jupyter nbconvert --to notebook` first"
        )
    return nb


def write_notebook(nb: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Save like Jupyter does: JSON with indent 1, sorted keys, UTF-8, trailing newline."""
    Path(path).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                          encoding="utf-8")


def cell_source(cell: Mapping[str, Any]) -> str:
    """A cell's source as one string."""
    return joined(cell.get("source", ""))


def cell_tags(cell: Mapping[str, Any]) -> tuple[str, ...]:
    """A cell's metadata.tags (empty when it has none)."""
    return tuple(cell.get("metadata", {}).get("tags", ()))


def code_cells(nb: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(index among all cells, cell) of every code cell, in order."""
    return [(i, c) for i, c in enumerate(nb["cells"]) if c.get("cell_type") == "code"]
