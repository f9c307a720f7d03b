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
- an exception as an `error` output (ename, evalue, traceback), after which
  NotebookError is raised naming the notebook and the cell.

`write=True` saves outputs and execution counts back into the .ipynb (nbformat 4.5, cell
ids kept) only when every cell ran; `provenance` is stored in the notebook metadata under
"cgraph_provenance". `only_tagged="pure"` runs only the cells tagged "pure" (the CPU check).
Pure at import: no CuPy, no matplotlib.
"""

from __future__ import annotations

import argparse
import ast
import base64
import builtins
import contextlib
import datetime as _dt
import io
import json
import linecache
import os
import platform
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import attrs

PROVENANCE_KEY = "cgraph_provenance"


class NotebookError(RuntimeError):
    """A cell raised: names the notebook and the cell; `results` holds the cells run so far."""

    def __init__(self, message: str, *, path: Path, cell_index: int, results: list["CellResult"]) -> None:
        super().__init__(message)
        self.path = path
        self.cell_index = cell_index
        self.results = results


class CellTimeout(TimeoutError):
    """A cell ran longer than run_notebook's `timeout`."""


@attrs.frozen(eq=False)
class CellResult:
    """One executed code cell: its index among all cells, execution count and outputs.

    outputs are nbformat 4 output dicts (stream, execute_result, display_data, error).
    """

    index: int
    execution_count: int
    outputs: tuple[dict, ...]

    @property
    def ok(self) -> bool:
        return not any(o["output_type"] == "error" for o in self.outputs)

    def text(self, name: str = "stdout") -> str:
        """All text the cell wrote to one stream ("stdout" or "stderr")."""
        return "".join(_joined(o["text"]) for o in self.outputs
                       if o["output_type"] == "stream" and o["name"] == name)


def _joined(text: str | list[str]) -> str:
    return text if isinstance(text, str) else "".join(text)


def _lines(text: str) -> list[str]:
    """nbformat stores multi-line strings as lists of lines (each keeps its newline)."""
    return text.splitlines(keepends=True)


def read_notebook(path: str | os.PathLike) -> dict:
    """Load an .ipynb as a dict, checking it is nbformat 4 with a list of cells."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); is it an .ipynb file?") from exc
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise ValueError(
            f"{path} is not an nbformat 4 notebook (nbformat={nb.get('nbformat') if isinstance(nb, dict) else None!r}); "
            "convert it with `jupyter nbconvert --to notebook` first"
        )
    return nb


def write_notebook(nb: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Save like Jupyter does: JSON with indent 1, sorted keys, UTF-8, trailing newline."""
    Path(path).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                          encoding="utf-8")


def cell_source(cell: Mapping[str, Any]) -> str:
    return _joined(cell.get("source", ""))


def cell_tags(cell: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(cell.get("metadata", {}).get("tags", ()))


class _Outputs:
    """The outputs of one cell, in order; consecutive writes to one stream are merged."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def stream(self, name: str, text: str) -> None:
        if not text:
            return
        last = self.items[-1] if self.items else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.items.append({"output_type": "stream", "name": name, "text": text})

    def finished(self) -> tuple[dict, ...]:
        out = []
        for item in self.items:
            if item["output_type"] == "stream":
                item = {**item, "text": _lines(item["text"])}
            out.append(item)
        return tuple(out)


class _StreamWriter(io.TextIOBase):
    def __init__(self, outputs: _Outputs, name: str) -> None:
        self._outputs = outputs
        self._name = name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._outputs.stream(self._name, text)
        return len(text)

    def isatty(self) -> bool:
        return False


def mime_bundle(obj: Any) -> dict[str, Any]:
    """What Jupyter would show for obj: text/plain plus the rich forms the object offers."""
    data: dict[str, Any] = {"text/plain": _lines(repr(obj))}
    png = getattr(obj, "_repr_png_", None)
    if callable(png):
        raw = png()
        if raw:
            data["image/png"] = raw if isinstance(raw, str) else base64.b64encode(raw).decode("ascii")
    for method, mime in (("_repr_svg_", "image/svg+xml"), ("_repr_html_", "text/html"),
                         ("_repr_markdown_", "text/markdown")):
        fn = getattr(obj, method, None)
        if callable(fn):
            value = fn()
            if value:
                data[mime] = _lines(value)
    return data


def _figure_outputs() -> list[dict]:
    """Every open matplotlib figure as image/png display_data; the figures are closed."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    out = []
    for num in plt.get_fignums():
        fig = plt.figure(num)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", dpi=100)
        w, h = fig.get_size_inches() * 100
        out.append({
            "output_type": "display_data",
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                     "text/plain": [f"<Figure size {w:.0f}x{h:.0f} with {len(fig.axes)} Axes>"]},
            "metadata": {},
        })
        plt.close(fig)
    return out


@contextlib.contextmanager
def _environment(folder: Path) -> Iterator[None]:
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


@contextlib.contextmanager
def _time_limit(seconds: float | None, where: str) -> Iterator[None]:
    if seconds is None:
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise CellTimeout(f"{where} ran longer than timeout={seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _split_last_expression(source: str, filename: str) -> tuple[Any, Any]:
    """(code of every statement but a last bare expression, code of that expression or None)."""
    tree = ast.parse(source, filename=filename, mode="exec")
    shown = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        shown = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec")
    return body, (compile(shown, filename, "eval") if shown is not None else None)


def _error_output(exc: BaseException) -> dict:
    tb = exc.__traceback__
    # drop the executor's own frames: the traceback starts in the cell
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": [line.rstrip("\n") for line in lines]}


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
      write, which needs every cell).
    timeout: seconds each cell may run (main thread only; raises CellTimeout in the cell).
    namespace: the dict the cells run in (default: a fresh one); pass one to inspect what
      the cells defined afterwards.
    Raises NotebookError (cell index, notebook path, the error, `.results`) if a cell raises.
    """
    path = Path(path).resolve()
    if write and only_tagged is not None:
        raise ValueError(
            f"write=True saves a full run, but only_tagged={only_tagged!r} skips cells; "
            "run without only_tagged to write outputs"
        )
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("timeout needs the main thread (it uses SIGALRM); pass timeout=None here")
    if provenance is not None and not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a mapping (e.g. {{'device': ...}}), got {type(provenance).__name__}")
    nb = read_notebook(path)
    if namespace is None:
        namespace = {}
    elif not isinstance(namespace, dict):
        raise TypeError(f"namespace must be a dict or None, got {type(namespace).__name__}")
    namespace.setdefault("__name__", "__main__")
    namespace.setdefault("__builtins__", builtins)
    results: list[CellResult] = []
    count = 0
    with _environment(path.parent):
        for index, cell in enumerate(nb["cells"]):
            if cell.get("cell_type") != "code":
                continue
            if only_tagged is not None and only_tagged not in cell_tags(cell):
                continue
            count += 1
            outputs = _Outputs()

            def display(*objs: Any, _outputs: _Outputs = outputs) -> None:
                for obj in objs:
                    _outputs.items.append({"output_type": "display_data", "data": mime_bundle(obj),
                                           "metadata": {}})

            namespace["display"] = display
            filename = f"<{path.name} cell {index}>"
            source = cell_source(cell)
            linecache.cache[filename] = (len(source), None, _lines(source) or [""], filename)
            error: BaseException | None = None
            with contextlib.redirect_stdout(_StreamWriter(outputs, "stdout")), \
                    contextlib.redirect_stderr(_StreamWriter(outputs, "stderr")):
                try:
                    with _time_limit(timeout, f"{path.name} cell {index}"):
                        body, shown = _split_last_expression(source, filename)
                        exec(body, namespace)
                        value = eval(shown, namespace) if shown is not None else None
                    if value is not None:
                        outputs.items.append({"output_type": "execute_result", "execution_count": count,
                                              "data": mime_bundle(value), "metadata": {}})
                except Exception as exc:  # noqa: BLE001 - recorded as the cell's error output
                    error = exc
            outputs.items.extend(_figure_outputs())
            if error is not None:
                outputs.items.append(_error_output(error))
            result = CellResult(index, count, outputs.finished())
            results.append(result)
            if error is not None:
                raise NotebookError(
                    f"{path}: cell {index} (execution {count}) raised {type(error).__name__}: {error}",
                    path=path, cell_index=index, results=results,
                ) from error
    if write:
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
    return results


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgraph.notebook", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", help=".ipynb files to execute")
    parser.add_argument("--write", action="store_true",
                        help="save outputs and provenance (device, date, commit) into each notebook")
    parser.add_argument("--only-tagged", default=None, help="run only cells with this tag (e.g. pure)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    args = parser.parse_args(argv)
    provenance = default_provenance() if args.write else None
    failed = 0
    for name in args.notebooks:
        started = _dt.datetime.now()
        try:
            results = run_notebook(name, write=args.write, only_tagged=args.only_tagged,
                                   timeout=args.timeout, provenance=provenance)
        except NotebookError as exc:
            failed += 1
            print(f"FAIL {name}: {exc}")
            for r in exc.results[-1:]:
                for o in r.outputs:
                    if o["output_type"] == "error":
                        print("\n".join(o["traceback"]))
            continue
        except (OSError, ValueError) as exc:
            failed += 1
            print(f"FAIL {name}: {exc}")
            continue
        seconds = (_dt.datetime.now() - started).total_seconds()
        print(f"OK   {name}: {len(results)} cells in {seconds:.1f} s" + (" (written)" if args.write else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
