"""The pure core works with CuPy blocked; GPU names resolve lazily through cgraph.__getattr__."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cgraph

ROOT = Path(cgraph.__file__).resolve().parent

BLOCKED = textwrap.dedent("""
    import sys
    sys.modules["cupy"] = None  # any `import cupy` now raises ImportError
    import cgraph
    from cgraph import (GraphConfig, GraphMode, build_dispatch_table, dispatch, padding_report,
                        suggest_capture_sizes, capture_descriptors, BatchDescriptor)
    t = build_dispatch_table(GraphConfig("full_and_piecewise", max_loras=2))
    assert dispatch(t, 3, True) == (GraphMode.FULL, BatchDescriptor(4, 4, True))
    assert dispatch(t, 3, False, True, False, 2)[0] is GraphMode.PIECEWISE
    assert padding_report(t, [3, (5, True)]).graph_batches == 2
    assert suggest_capture_sizes({1: 4, 3: 1}, 2) == (1, 3)
    assert len(capture_descriptors(t)[GraphMode.FULL]) == 3 * 35
    from cgraph.demo import main
    assert main(["--requests", "4", "--max-prompt", "30", "--new-tokens", "3"]) == 0
    import cgraph.bench.dispatch
    assert sys.modules["cupy"] is None
    # only the lazy gateway to CuPy (cgraph.cuda.device) may be loaded, nothing that uses it
    gpu = [m for m in sys.modules if m.split(".")[:2] in (["cgraph", "cuda"], ["cgraph", "kernels"])
           and m not in ("cgraph.cuda", "cgraph.cuda.device")]
    assert not gpu, gpu
    print("PURE-OK")
""")


def test_pure_core_and_demo_run_with_cupy_blocked():
    proc = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True,
                          timeout=120, cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "PURE-OK" in proc.stdout
    assert "No usable CUDA GPU" in proc.stdout


def test_unknown_attribute_and_dir():
    with pytest.raises(AttributeError, match="no attribute 'GraphRuner'"):
        cgraph.GraphRuner  # noqa: B018
    names = dir(cgraph)
    for name in ("dispatch", "GraphRunner", "capture", "StaticBuffers", "eager_break"):
        assert name in names
    assert set(cgraph.__all__) >= {"GraphMode", "dispatch", "GraphPool", "capture"}


FAKES = {
    "cuda/pool.py": "class GraphPool:\n    pass\n",
    "cuda/graph.py": "def capture(fn, *a, **k):\n    return 'captured'\nclass CapturedGraph:\n    pass\n",
    "cuda/buffers.py": "class StaticBuffers:\n    pass\n",
    "cuda/callbacks.py": "def host_callback(fn):\n    return fn\n",
    "cuda/runner.py": ("from cgraph.cuda.graph import capture\n"
                       "class GraphRunner:\n    pass\nclass LazyCapture:\n    pass\n"),
    "cuda/context.py": ("def batch_context(*a):\n    pass\ndef capture_phase():\n    pass\n"
                        "def current_batch():\n    pass\n"),
    "cuda/tables.py": "def capture_all(*a):\n    pass\ndef estimate_graph_memory(*a):\n    pass\n",
    "cuda/breakable.py": ("class BreakableCapture:\n    pass\nclass BreakableRunner:\n    pass\n"
                          "def capture_breakable(fn):\n    return fn\ndef eager_break(fn):\n    return fn\n"),
    "kernels/__init__.py": "NAME = 'fake kernels'\n",
}

LAZY = textwrap.dedent("""
    import os
    import sys
    import cgraph
    assert cgraph.__file__.startswith(os.environ["EXPECT_ROOT"]), cgraph.__file__
    assert "cgraph.cuda.runner" not in sys.modules
    runner = cgraph.GraphRunner          # imports cgraph.cuda.runner, which imports cgraph.cuda.graph
    assert runner.__name__ == "GraphRunner" and "cgraph.cuda.graph" in sys.modules
    assert callable(cgraph.capture) and cgraph.capture(None) == "captured"
    from cgraph import capture, CapturedGraph, GraphPool, StaticBuffers, host_callback
    from cgraph import batch_context, capture_phase, capture_all, BreakableCapture, BreakableRunner, eager_break
    assert capture(None) == "captured" and GraphPool.__module__ == "cgraph.cuda.pool"
    assert cgraph.kernels.NAME == "fake kernels"
    import cgraph.cuda.breakable
    assert cgraph.capture(None) == "captured"
    print("LAZY-OK")
""")


def test_gpu_names_resolve_lazily(tmp_path):
    # A copy of the package with stand-in GPU modules: checks the lazy import mechanism only.
    pkg = tmp_path / "cgraph"
    shutil.copytree(ROOT, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, src in FAKES.items():
        target = pkg / rel
        if target.parent.is_dir() and rel.startswith("kernels/"):
            shutil.rmtree(target.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(src)
    proc = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin",
                               "EXPECT_ROOT": str(pkg)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "LAZY-OK" in proc.stdout
