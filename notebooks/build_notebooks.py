"""Build the notebooks in this folder from their readable sources in _sources/.

`python notebooks/build_notebooks.py` (re)writes every NN_name.ipynb from
_sources/NN_name.py. A source is plain Python with cell markers:

    # %% [markdown]          a markdown cell; its lines are comments ("# " is stripped)
    # %%                     a code cell
    # %% tags=["pure"]       a code cell with tags (JSON list)

Cells tagged "pure" need no GPU (and no matplotlib): the CPU tests run them. Cells tagged
"silent" are meant to print nothing. Built notebooks carry no outputs; run them on a GPU
machine with `python -m cgraph.notebook --write notebooks/0*.ipynb` to save outputs.
A notebook whose cells already match its source is left alone (its outputs are kept);
`--check` only reports which notebooks differ from their sources (exit 1 if any).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "_sources"
_MARKER = re.compile(r"^# %%(?P<rest>.*)$")

METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python", "pygments_lexer": "ipython3"},
}


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def parse_cells(text: str, origin: str = "<source>") -> list[dict]:
    """Split a `# %%` source into (cell_type, source, tags) dicts, in order."""
    cells: list[dict] = []
    current: dict | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _MARKER.match(line)
        if m:
            rest = m.group("rest").strip()
            if rest == "[markdown]":
                current = {"cell_type": "markdown", "lines": [], "tags": []}
            elif rest == "" or rest.startswith("tags="):
                tags = json.loads(rest[len("tags="):]) if rest else []
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                    raise ValueError(f"{origin}:{number}: tags must be a JSON list of strings, got {rest!r}")
                current = {"cell_type": "code", "lines": [], "tags": tags}
            else:
                raise ValueError(f"{origin}:{number}: unknown cell marker {line!r}; "
                                 'use "# %%", "# %% [markdown]" or "# %% tags=[...]"')
            cells.append(current)
            continue
        if current is None:
            if line.strip():
                raise ValueError(f"{origin}:{number}: text before the first '# %%' marker")
            continue
        if current["cell_type"] == "markdown":
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"{origin}:{number}: markdown lines must be comments, got {line!r}")
            line = line[2:] if line.startswith("# ") else line[1:]
        current["lines"].append(line)
    out = []
    for cell in cells:
        body = "\n".join(cell["lines"]).strip("\n")
        if not body:
            raise ValueError(f"{origin}: an empty {cell['cell_type']} cell; remove its marker")
        out.append({"cell_type": cell["cell_type"], "source": body, "tags": cell["tags"]})
    return out


def build(source: Path) -> dict:
    """The notebook (nbformat 4.5 dict, no outputs) for one source file."""
    cells = []
    for i, c in enumerate(parse_cells(source.read_text(encoding="utf-8"), str(source))):
        cell = {"cell_type": c["cell_type"], "id": f"{source.stem[:40]}-{i:02d}",
                "metadata": {"tags": c["tags"]} if c["tags"] else {}, "source": _lines(c["source"])}
        if c["cell_type"] == "code":
            cell["execution_count"] = None
            cell["outputs"] = []
        cells.append(cell)
    return {"cells": cells, "metadata": dict(METADATA), "nbformat": 4, "nbformat_minor": 5}


def cell_signature(nb: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(type, source, tags) of every cell: what must match between a source and its notebook."""
    out = []
    for cell in nb["cells"]:
        src = cell.get("source", "")
        src = src if isinstance(src, str) else "".join(src)
        out.append((cell["cell_type"], src, tuple(cell.get("metadata", {}).get("tags", ()))))
    return out


def sources() -> list[Path]:
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def target(source: Path) -> Path:
    return HERE / f"{source.stem}.ipynb"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = 0
    for src in sources():
        nb = build(src)
        dest = target(src)
        if dest.exists() and cell_signature(json.loads(dest.read_text(encoding="utf-8"))) == cell_signature(nb):
            print(f"up to date  {dest.name}")
            continue
        stale += 1
        if check:
            print(f"differs     {dest.name} (rebuild with python notebooks/build_notebooks.py)")
            continue
        dest.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"built       {dest.name} (no outputs: execute it on a GPU machine)")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
