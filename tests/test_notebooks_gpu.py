"""Every notebook executes top to bottom on a GPU (cells in order, one namespace, no Jupyter)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cgraph.notebook import run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart", "02_dispatch", "03_breakable", "04_encoder_budgets", "05_performance", "06_library_calls"]


@pytest.mark.gpu
@pytest.mark.skipif(bool(os.environ.get("CGRAPH_TEST_NO_POOL")),
                    reason="under compute-sanitizer the notebooks' timing loops take too long; the library "
                           "code they call is covered by the other GPU tests")
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name):
    pytest.importorskip("matplotlib")  # the plots need it; the GPU machine has it
    results = run_notebook(NOTEBOOKS / f"{name}.ipynb", timeout=300)
    assert results and all(r.ok for r in results)
