"""Execute Jupyter notebooks without Jupyter: `python -m cgraph.notebook [--write] NB.ipynb ...`.

The GPU machine has no Jupyter, so this small executor runs a notebook's code cells in
order, in one fresh namespace, with the notebook's folder as the working directory, and
records what Jupyter would show:

- stdout and stderr as `stream` outputs (in the order they were written);
- the value of a last bare expression as an `execute_result` (text/plain, plus image/png,
  image/svg+xml, text/html or text/markdown when the object has `_repr_png_`, ... ), unless
  the cell ends with `;`; `display(obj)` (injected into the namespace) adds a
  `display_data` output the same way;
- every matplotlib figure left open after a cell as an image/png `display_data` (the
  figures are then closed). The Agg backend is forced; matplotlib is imported only if a
  cell imports it;
- a failure as an `error` output (ename, evalue, traceback), after which NotebookError is
  raised naming the notebook and the cell. A cell fails when it raises, when it calls
  exit() / quit() / sys.exit() (SystemExit, whatever the code), or when it runs past the
  timeout.

`write=True` saves outputs and execution counts back into the .ipynb (nbformat 4.5, cell
ids kept) only when every cell ran; `provenance` is stored in the notebook metadata under
"cgraph_provenance". `only_tagged="pure"` runs only the cells tagged "pure" (the CPU
check); a tag that no code cell carries is an error, not an empty pass.

Modules: format (the .ipynb dict), outputs (what a cell shows), environment (cwd, backend,
time limit), runner (run_notebook), provenance, cli (`python -m cgraph.notebook`).
Pure at import: no CuPy, no matplotlib.
"""

from __future__ import annotations

from cgraph.notebook.cli import main
from cgraph.notebook.environment import CellTimeout
from cgraph.notebook.format import cell_source, cell_tags, read_notebook, write_notebook
from cgraph.notebook.outputs import CellResult, mime_bundle
from cgraph.notebook.provenance import default_provenance
from cgraph.notebook.runner import PROVENANCE_KEY, NotebookError, run_notebook

__all__ = [
    "PROVENANCE_KEY", "CellResult", "CellTimeout", "NotebookError", "cell_source", "cell_tags",
    "default_provenance", "main", "mime_bundle", "read_notebook", "run_notebook", "write_notebook",
]
