"""Shared output for benchmarks: a printed Markdown table plus JSON and Markdown files.

Every benchmark measures its ratios side by side in one run and records the device and
date, so a committed result says where and when it was measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from cgraph.cuda.device import device_name



def checkout_results_dir() -> Path | None:
    """notebooks/results of the source checkout this package runs from, or None when
    cgraph is installed elsewhere (site-packages): results are never written there."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root / "notebooks" / "results"
    return None


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """The --out flag every benchmark takes: where its NAME.json and NAME.md go."""
    default = checkout_results_dir()
    parser.add_argument(
        "--out", type=Path, default=default,
        help="folder for the result files (default: notebooks/results of this checkout"
             + ("" if default else "; none here, so nothing is written without --out") + ")")



def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows (dicts) as a Markdown table; floats get 4 significant digits."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    out_dir: Path | None = None,
) -> str:
    """Print a benchmark's table and save it as OUT_DIR/NAME.json and NAME.md.

    out_dir None writes no files (the --out flag's default is the checkout's
    notebooks/results, and None outside a checkout). Returns the Markdown text.
    `extra` is stored in the JSON only.
    """
    device = device_name()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = markdown_table(rows, columns)
    md = f"## {title}\n\nDevice: {device}. Measured {when}.\n\n{table}"
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    payload = {"name": name, "title": title, "device": device, "date": when,
               "rows": list(map(dict, rows)), "notes": list(notes), "extra": dict(extra or {})}
    print(md)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        (out / f"{name}.md").write_text(md)
    else:
        print(f"(no result files written for {name}: pass --out DIR)")
    return md
