"""The notebooks: well-formed, built from their sources, pure cells run; the executor itself."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from cgraph.notebook import (PROVENANCE_KEY, NotebookError, cell_source, cell_tags, main, read_notebook,
                             run_notebook)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_quickstart", "02_dispatch", "03_breakable", "04_encoder_budgets", "05_performance"]


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


# --------------------------------------------------------------------------- the notebooks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_nbformat4_without_errors(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.exists(), f"{path} is missing; build it with python notebooks/build_notebooks.py"
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    try:
        import nbformat
    except ImportError:
        nbformat = None
    if nbformat is not None:
        nbformat.validate(nbformat.reads(path.read_text(), as_version=4))
    else:  # structural check where nbformat is not installed
        for cell in nb["cells"]:
            assert cell["cell_type"] in ("code", "markdown") and isinstance(cell["source"], (str, list))
            assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cell["id"])
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"]), "cell ids must be unique"
    for i, cell in enumerate(_code_cells(nb)):
        compile(cell_source(cell), f"{name} code cell {i}", "exec")
        errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{name} code cell {i} has a saved error: {errors[0].get('ename')}"
    assert any(c["cell_type"] == "markdown" for c in nb["cells"]), "notebooks explain their steps"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_its_source(name):
    builder = _builder()
    built = builder.build(builder.SOURCES / f"{name}.py")
    committed = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert builder.cell_signature(committed) == builder.cell_signature(built), (
        f"{name}.ipynb and _sources/{name}.py differ; run python notebooks/build_notebooks.py "
        "(then re-execute the notebook on a GPU)"
    )


@pytest.mark.parametrize("name", NAMES)
def test_executed_notebook_has_every_output(name):
    """After the GPU run (--write records provenance) every code cell ran, in order, on a GPU."""
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    provenance = nb["metadata"].get(PROVENANCE_KEY)
    if provenance is None:
        pytest.skip(f"{name} has not been executed with python -m cgraph.notebook --write yet")
    assert re.search(r"H100|H200", provenance["device"]), provenance
    cells = _code_cells(nb)
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    for i, cell in enumerate(cells):
        if "silent" not in cell_tags(cell):
            assert cell["outputs"], f"{name} code cell {i} shows nothing; print its result or tag it silent"


@pytest.mark.parametrize("name", NAMES)
def test_pure_cells_run(name, monkeypatch):
    # a fresh seed for notebooks that draw random workloads; their cells check their own results
    monkeypatch.setenv("CGRAPH_SEED", str(np.random.default_rng().integers(2**31)))
    nb = read_notebook(NOTEBOOKS / f"{name}.ipynb")
    pure = [c for c in _code_cells(nb) if "pure" in cell_tags(c)]
    # CI may lack matplotlib (and has no GPU): make both imports fail inside the pure cells
    for module in ("matplotlib", "matplotlib.pyplot", "cupy"):
        monkeypatch.setitem(sys.modules, module, None)
    results = run_notebook(NOTEBOOKS / f"{name}.ipynb", only_tagged="pure")
    assert len(results) == len(pure)
    assert all(r.ok for r in results)


def test_dot_helpers_of_the_quickstart():
    ns: dict = {}
    run_notebook(NOTEBOOKS / "01_quickstart.ipynb", only_tagged="pure", namespace=ns)
    n = int(np.random.default_rng().integers(2, 9))
    node = ('"graph_1_node_{i}"[style="bold" shape="record" label="{{KERNEL\n| {{ID | {i} (topoId: {t}) | '
            'k{i}_f16\\<\\<\\<1,128,0\\>\\>\\>}}\n| {{priority | 0}}\n}}"];\n')
    dot = "digraph dot {\nsubgraph cluster_1 {\nlabel=\"graph_1\" graph[style=\"dashed\"];\n"
    dot += "".join(node.format(i=i, t=n - 1 - i) for i in range(n))
    dot += "".join(f'"graph_1_node_{i}" -> "graph_1_node_{i + 1}" [headlabel=0];\n' for i in range(n - 1))
    dot += "}\n}\n"
    nodes, edges = ns["parse_dot"](dot)
    assert nodes == {f"graph_1_node_{i}": ("KERNEL", f"k{i}_f16") for i in range(n)}
    assert edges == [(f"graph_1_node_{i}", f"graph_1_node_{i + 1}") for i in range(n - 1)]
    assert ns["layers"](nodes, edges) == {f"graph_1_node_{i}": i for i in range(n)}
    # the compact style CuPy's debug_dot_str() printed on the GPU machine (kernel name on line 2)
    compact = ('digraph dot {\nsubgraph cluster_1 {\nlabel="graph_1" graph[style="dashed"];\n'
               '"graph_1_node_0"[style="bold" shape="octagon" label="0\nrms_norm_f16_v8\n"];\n\n'
               '"graph_1_node_1"[style="bold" shape="octagon" label="1\ncupy_multiply__float16_float_float16\n"];\n\n'
               '"graph_1_node_0" -> "graph_1_node_1";\n}\n}\n')
    nodes, edges = ns["parse_dot"](compact)
    assert nodes == {"graph_1_node_0": ("KERNEL", "rms_norm_f16_v8"),
                     "graph_1_node_1": ("KERNEL", "cupy_multiply__float16_float_float16")}
    assert edges == [("graph_1_node_0", "graph_1_node_1")]
    # a diamond: the join sits one layer below its deepest input
    diamond = {k: ("KERNEL", k) for k in "abcd"}
    assert ns["layers"](diamond, [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("a", "d")]) == \
        {"a": 0, "b": 1, "c": 2, "d": 3}


def test_builder_parses_markers_and_rejects_bad_ones(tmp_path):
    builder = _builder()
    cells = builder.parse_cells('# %% [markdown]\n# # Title\n# text\n\n# %% tags=["pure"]\nx = 1\n\n# %%\nx\n')
    assert cells == [{"cell_type": "markdown", "source": "# Title\ntext", "tags": []},
                     {"cell_type": "code", "source": "x = 1", "tags": ["pure"]},
                     {"cell_type": "code", "source": "x", "tags": []}]
    for bad, why in (("x = 1\n# %%\ny\n", "before the first"), ("# %% [raw]\nx\n", "unknown cell marker"),
                     ("# %% [markdown]\nnot a comment\n", "must be comments"), ("# %%\n\n# %%\nx\n", "empty"),
                     ('# %% tags="pure"\nx\n', "JSON list")):
        with pytest.raises(ValueError, match=why):
            builder.parse_cells(bad)


# --------------------------------------------------------------------------- the executor
def _write_nb(path: Path, cells: list[tuple[str, str, list[str]]]) -> Path:
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for i, (kind, src, tags) in enumerate(cells):
        cell = {"cell_type": kind, "id": f"c{i}", "metadata": {"tags": tags} if tags else {}, "source": src}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        nb["cells"].append(cell)
    path.write_text(json.dumps(nb))
    return path


def test_executor_streams_values_and_order(tmp_path):
    secret = int(np.random.default_rng().integers(1, 10**9))
    (tmp_path / "data.txt").write_text(str(secret))
    nb = _write_nb(tmp_path / "t.ipynb", [
        ("markdown", "# hello", []),
        ("code", "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\nvalue = int(open('data.txt').read())", []),
        ("code", "value * 2", []),
        ("code", "value * 3;", []),
        ("code", "class R:\n    def __repr__(self): return 'R!'\n    def _repr_markdown_(self): return '**R**'\n"
                 "display(R(), 5)\nprint('after')\nR()", []),
    ])
    results = run_notebook(nb)
    assert [r.index for r in results] == [1, 2, 3, 4]
    assert [r.execution_count for r in results] == [1, 2, 3, 4]
    first = results[0].outputs
    assert [(o["name"], "".join(o["text"])) for o in first] == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
    assert results[1].outputs == ({"output_type": "execute_result", "execution_count": 2,
                                   "data": {"text/plain": [repr(secret * 2)]}, "metadata": {}},)
    assert results[2].outputs == ()  # a trailing semicolon hides the value, as in Jupyter
    kinds = [o["output_type"] for o in results[3].outputs]
    assert kinds == ["display_data", "display_data", "stream", "execute_result"]
    assert results[3].outputs[0]["data"] == {"text/plain": ["R!"], "text/markdown": ["**R**"]}
    assert results[3].outputs[1]["data"] == {"text/plain": ["5"]}


def test_executor_error_names_the_cell(tmp_path):
    nb = _write_nb(tmp_path / "bad.ipynb", [
        ("code", "x = 1", []),
        ("markdown", "text", []),
        ("code", "print('before')\n\ndef f():\n    raise KeyError('missing thing')\nf()", []),
        ("code", "never = True", []),
    ])
    ns: dict = {}
    with pytest.raises(NotebookError, match=r"bad\.ipynb: cell 2 .*KeyError") as info:
        run_notebook(nb, namespace=ns)
    err = info.value
    assert err.cell_index == 2 and isinstance(err.__cause__, KeyError)
    out = err.results[-1].outputs
    assert out[0]["text"] == ["before\n"]
    assert out[-1]["output_type"] == "error" and out[-1]["ename"] == "KeyError"
    assert "missing thing" in out[-1]["evalue"]
    assert any("raise KeyError('missing thing')" in line for line in out[-1]["traceback"])
    assert "never" not in ns, "cells after a failure do not run"


def test_executor_write_round_trip_and_only_tagged(tmp_path):
    nb_path = _write_nb(tmp_path / "w.ipynb", [
        ("code", "import numpy as np\nrng = np.random.default_rng()\nprint('seeded')", ["pure"]),
        ("markdown", "note", []),
        ("code", "n = int(rng.integers(1, 1000))\nn", ["pure"]),
        ("code", "gpu_only = 1\nprint('ran', gpu_only)", []),
    ])
    ns: dict = {}
    partial = run_notebook(nb_path, only_tagged="pure", namespace=ns)
    assert [r.index for r in partial] == [0, 2] and "gpu_only" not in ns
    with pytest.raises(ValueError, match="only_tagged"):
        run_notebook(nb_path, write=True, only_tagged="pure")
    assert json.loads(nb_path.read_text())["cells"][0]["outputs"] == [], "nothing written yet"
    results = run_notebook(nb_path, write=True, provenance={"device": "test device", "date": "today"})
    saved = json.loads(nb_path.read_text())
    assert saved["metadata"][PROVENANCE_KEY] == {"device": "test device", "date": "today"}
    assert [c["id"] for c in saved["cells"]] == ["c0", "c1", "c2", "c3"]
    assert saved["nbformat"] == 4 and saved["nbformat_minor"] == 5
    code = _code_cells(saved)
    assert [c["execution_count"] for c in code] == [1, 2, 3]
    assert [list(c["outputs"]) for c in code] == [list(r.outputs) for r in results]
    assert "".join(code[2]["outputs"][0]["text"]) == "ran 1\n"
    assert "outputs" not in saved["cells"][1]
    # a failing run writes nothing
    before = nb_path.read_text()
    bad = json.loads(before)
    bad["cells"][3]["source"] = "1 / 0"
    nb_path.write_text(json.dumps(bad))
    with pytest.raises(NotebookError):
        run_notebook(nb_path, write=True)
    assert json.loads(nb_path.read_text())["cells"][3]["outputs"] == code[2]["outputs"]


def test_executor_captures_figures(tmp_path):
    pytest.importorskip("matplotlib")
    nb = _write_nb(tmp_path / "fig.ipynb", [
        ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 3, 2]);", []),
        ("code", "len(plt.get_fignums())", []),
    ])
    results = run_notebook(nb)
    (image,) = [o for o in results[0].outputs if o["output_type"] == "display_data"]
    assert base64.b64decode(image["data"]["image/png"]).startswith(b"\x89PNG")
    assert results[1].outputs[0]["data"]["text/plain"] == ["0"], "figures are closed after their cell"


def test_executor_rejects_bad_input(tmp_path):
    bad = tmp_path / "x.ipynb"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_notebook(bad)
    bad.write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    with pytest.raises(ValueError, match="nbformat 4"):
        run_notebook(bad)
    ok = _write_nb(tmp_path / "ok.ipynb", [("code", "1", [])])
    with pytest.raises(ValueError, match="timeout"):
        run_notebook(ok, timeout=-1)
    with pytest.raises(TypeError, match="provenance"):
        run_notebook(ok, provenance="H100")


def test_executor_timeout(tmp_path):
    nb = _write_nb(tmp_path / "slow.ipynb", [("code", "import time\nwhile True:\n    time.sleep(0.01)", [])])
    with pytest.raises(NotebookError, match="CellTimeout"):
        run_notebook(nb, timeout=0.2)


def test_cli_reports_ok_and_fail(tmp_path, capsys):
    good = _write_nb(tmp_path / "good.ipynb", [("code", "print(6 * 7)", [])])
    bad = _write_nb(tmp_path / "bad.ipynb", [("code", "raise RuntimeError('boom')", [])])
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"OK +.*good\.ipynb", out) and re.search(r"FAIL .*bad\.ipynb.*boom", out)
