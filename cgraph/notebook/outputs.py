"""What a cell shows, as nbformat 4 output dicts: streams, values, figures and errors.

CellResult is one executed cell; the helpers build its outputs the way Jupyter would.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import attrs

from cgraph.notebook.format import joined, lines

_PACKAGE = str(Path(__file__).resolve().parent) + os.sep  # the executor's own frames


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
        """True when the cell recorded no error output."""
        return not any(o["output_type"] == "error" for o in self.outputs)

    def text(self, name: str = "stdout") -> str:
        """All text the cell wrote to one stream ("stdout" or "stderr")."""
        return "".join(joined(o["text"]) for o in self.outputs
                       if o["output_type"] == "stream" and o["name"] == name)


class Outputs:
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

    def display(self, *objs: Any) -> None:
        """IPython's display(): one display_data output per object (injected into each cell)."""
        for obj in objs:
            self.items.append({"output_type": "display_data", "data": mime_bundle(obj), "metadata": {}})

    def finished(self) -> tuple[dict, ...]:
        """The outputs with stream text split into lines, as nbformat stores them."""
        out = []
        for item in self.items:
            if item["output_type"] == "stream":
                item = {**item, "text": lines(item["text"])}
            out.append(item)
        return tuple(out)


class StreamWriter(io.TextIOBase):
    """A text stream (stands in for sys.stdout / sys.stderr) that appends to one cell's outputs."""

    def __init__(self, outputs: Outputs, name: str) -> None:
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
    data: dict[str, Any] = {"text/plain": lines(repr(obj))}
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
                data[mime] = lines(value)
    return data


def figure_outputs() -> list[dict]:
    """Every open matplotlib figure as image/png display_data; the figures are closed.

    Looks matplotlib up in sys.modules only: a notebook that never imported it costs nothing.
    """
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


def error_output(exc: BaseException) -> dict:
    """An nbformat error output for exc; the traceback starts in the cell, not in the executor."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        tb = tb.tb_next
    text = traceback.format_exception(type(exc), exc, tb)
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": [line.rstrip("\n") for line in text]}
