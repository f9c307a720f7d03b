"""run_notebook: execute a notebook's code cells in order in one namespace, as Jupyter would.

A cell fails when it raises, when it ends the process the way a script would (exit(),
quit(), sys.exit(...) with any code: SystemExit), or when it runs past the timeout (even
if it catches the CellTimeout). The first failing cell stops the notebook with a
NotebookError naming it; the cell's outputs up to the failure, and an `error` output, are
kept in `.results`. KeyboardInterrupt is not a cell failure: it stops everything.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import linecache
import os
from pathlib import Path
from typing import Any, Mapping

from cgraph.core.errors import ArgumentError, ArgumentTypeError, CgraphError
from cgraph.notebook.environment import CellTimeout, TimeLimit, check_timeout, notebook_environment
from cgraph.notebook.format import cell_source, cell_tags, code_cells, lines, read_notebook, write_notebook
from cgraph.notebook.outputs import CellResult, Outputs, StreamWriter, error_output, figure_outputs, mime_bundle

PROVENANCE_KEY = "cgraph_provenance"


class NotebookError(CgraphError, RuntimeError):
    """A cell failed: names the notebook and the cell; `results` holds the cells run so far.

    path: the notebook; cell_index: the failing cell's index among all cells; results: one
    CellResult per cell run, the failing one last (its last output is the error). The
    cell's exception (SystemExit and CellTimeout included) is chained as __cause__.
    """

    def __init__(self, message: str, *, path: Path, cell_index: int, results: list[CellResult]) -> None:
        super().__init__(message)
        self.path = path
        self.cell_index = cell_index
        self.results = results


def _split_last_expression(source: str, filename: str) -> tuple[Any, Any]:
    """(code of every statement but a last bare expression, code of that expression or None)."""
    tree = ast.parse(source, filename=filename, mode="exec")
    shown = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        shown = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec")
    return body, (compile(shown, filename, "eval") if shown is not None else None)


def _execute(source: str, filename: str, namespace: dict, outputs: Outputs, count: int,
             timeout: float | None) -> BaseException | None:
    """Run one cell into `outputs`; return what made it fail, or None."""
    error: BaseException | None = None
    with contextlib.redirect_stdout(StreamWriter(outputs, "stdout")), \
            contextlib.redirect_stderr(StreamWriter(outputs, "stderr")):
        limit = TimeLimit(timeout, filename.strip("<>"))
        try:
            with limit:
                body, shown = _split_last_expression(source, filename)
                exec(body, namespace)
                value = eval(shown, namespace) if shown is not None else None
                if value is not None:
                    outputs.items.append({"output_type": "execute_result", "execution_count": count,
                                          "data": mime_bundle(value), "metadata": {}})
        # SystemExit too: exit() in a cell must fail this notebook, not end the whole run
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded as the cell's error output
            error = exc
        if error is None and limit.expired:  # the cell caught its CellTimeout and went on
            error = CellTimeout(f"{limit.where} ran longer than timeout={timeout} s "
                                "(the cell caught the CellTimeout and continued)")
        try:
            outputs.items.extend(figure_outputs())
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be saved fails its cell
            error = error if error is not None else exc
    return error


def _failure_message(path: Path, index: int, count: int, error: BaseException) -> str:
    where = f"{path}: cell {index} (execution {count})"
    if isinstance(error, SystemExit):
        return (f"{where} exited (SystemExit, code {error.code!r}): a notebook cell must not end "
                "the process; raise an exception or assert instead")
    return f"{where} raised {type(error).__name__}: {error}"


def _selected(nb: Mapping[str, Any], path: Path, only_tagged: str | None) -> list[tuple[int, Mapping]]:
    """The code cells to run; a tag that no code cell carries is an ArgumentError."""
    cells = code_cells(nb)
    if only_tagged is None:
        return cells
    chosen = [(i, c) for i, c in cells if only_tagged in cell_tags(c)]
    if not chosen:
        present = sorted({t for _, c in cells for t in cell_tags(c)})
        raise ArgumentError(
            f"{path}: no code cell carries the tag {only_tagged!r}, so nothing would run; "
            f"tags on its code cells: {', '.join(map(repr, present)) if present else 'none'}"
        )
    return chosen


def _save(nb: dict, path: Path, results: list[CellResult], provenance: Mapping[str, Any] | None) -> None:
    by_index = {r.index: r for r in results}
    for index, cell in enumerate(nb["cells"]):
        cell.setdefault("id", f"cell-{index}")
        if cell.get("cell_type") == "code":
            r = by_index[index]
            cell["execution_count"] = r.execution_count
            cell["outputs"] = list(r.outputs)
    nb["nbformat"], nb["nbformat_minor"] = 4, 5
    if provenance is not None:
        nb.setdefault("metadata", {})[PROVENANCE_KEY] = dict(provenance)
    write_notebook(nb, path)


def run_notebook(
    path: str | os.PathLike,
    *,
    write: bool = False,
    only_tagged: str | None = None,
    timeout: float | None = None,
    provenance: Mapping[str, Any] | None = None,
    namespace: dict[str, Any] | None = None,
) -> list[CellResult]:
    """Run the code cells of the notebook at `path` in order; return one CellResult per cell run.

    write: save outputs, execution counts and `provenance` into the file (only if every
      cell ran without error; a failed run leaves the file untouched).
    only_tagged: run only cells whose metadata.tags hold this tag (cannot be combined with
      write, which needs every cell). A tag no code cell carries raises ArgumentError
      listing the tags there are: running nothing is not a pass.
    timeout: seconds each cell may run (main thread only; raises CellTimeout in the cell).
    namespace: the dict the cells run in (default: a fresh one); pass one to inspect what
      the cells defined afterwards.
    Raises NotebookError (cell index, notebook path, the error, `.results`) if a cell
    raises, exits (SystemExit) or times out; ArgumentError / ArgumentTypeError for bad
    arguments or a file that is not an nbformat 4 notebook; OSError if it cannot be read.
    """
    path = Path(path).resolve()
    if write and only_tagged is not None:
        raise ArgumentError(
            f"write=True saves a full run, but only_tagged={only_tagged!r} skips cells; "
            "run without only_tagged to write outputs"
        )
    check_timeout(timeout)
    if provenance is not None and not isinstance(provenance, Mapping):
        raise ArgumentTypeError(
            f"provenance must be a mapping (e.g. {{'device': ...}}), got {type(provenance).__name__}")
    if namespace is None:
        namespace = {}
    elif not isinstance(namespace, dict):
        raise ArgumentTypeError(f"namespace must be a dict or None, got {type(namespace).__name__}")
    nb = read_notebook(path)
    cells = _selected(nb, path, only_tagged)
    namespace.setdefault("__name__", "__main__")
    namespace.setdefault("__builtins__", builtins)
    results: list[CellResult] = []
    with notebook_environment(path.parent):
        for count, (index, cell) in enumerate(cells, start=1):
            outputs = Outputs()
            namespace["display"] = outputs.display
            filename = f"<{path.name} cell {index}>"
            source = cell_source(cell)
            # tracebacks show the cell's lines, as they would for a file
            linecache.cache[filename] = (len(source), None, lines(source) or [""], filename)
            error = _execute(source, filename, namespace, outputs, count, timeout)
            if error is not None:
                outputs.items.append(error_output(error))
            results.append(CellResult(index, count, outputs.finished()))
            if error is not None:
                raise NotebookError(_failure_message(path, index, count, error),
                                    path=path, cell_index=index, results=results) from error
    if write:
        _save(nb, path, results, provenance)
    return results
