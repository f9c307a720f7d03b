"""Shared output for benchmarks: a printed Markdown table plus JSON and Markdown files.

Every benchmark measures its ratios side by side in one run and records the device and
date, so a committed result says where and when it was measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

RESULTS_DIR = Path(__file__).resolve().parents[2] / "notebooks" / "results"


def device_name() -> str:
    """The CUDA device's name, or 'cpu (<machine>)' where no GPU is usable."""
    try:
        from cgraph._gpu import require_device

        cp = require_device()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return f"cpu ({platform.machine()})"


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
    """Print and save a benchmark's table as notebooks/results/NAME.json and NAME.md.

    Returns the Markdown text. `extra` is stored in the JSON only.
    """
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    device = device_name()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = markdown_table(rows, columns)
    md = f"## {title}\n\nDevice: {device}. Measured {when}.\n\n{table}"
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    payload = {"name": name, "title": title, "device": device, "date": when,
               "rows": list(map(dict, rows)), "notes": list(notes), "extra": dict(extra or {})}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(md)
    print(md)
    return md
