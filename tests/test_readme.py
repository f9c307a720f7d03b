"""The README's Python examples run as written: pure ones everywhere, GPU ones on a device."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _needs_gpu(code: str) -> bool:
    return "import cupy" in code


def test_readme_has_examples_of_both_kinds():
    blocks = _blocks()
    assert any(_needs_gpu(b) for b in blocks) and any(not _needs_gpu(b) for b in blocks)


@pytest.mark.parametrize("index", [i for i, b in enumerate(_blocks()) if not _needs_gpu(b)])
def test_pure_readme_example_runs(index):
    exec(compile(_blocks()[index], f"README block {index}", "exec"), {})


@pytest.mark.gpu
@pytest.mark.parametrize("index", [i for i, b in enumerate(_blocks()) if _needs_gpu(b)])
def test_gpu_readme_example_runs(index):
    exec(compile(_blocks()[index], f"README block {index}", "exec"), {})
