"""The notebooks: well-formed, built from their sources, pure cells run; the executor itself."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install 'cgraph-cupy[test]')")

from cgraph.core.errors import ArgumentError, CgraphError
from cgraph.notebook import (PROVENANCE_KEY, NotebookError, cell_source, cell_tags, main, read_notebook,
                             run_notebook)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_quickstart", "02_dispatch", "03_breakable", "04_encoder_budgets", "05_performance", "06_library_calls"]


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
    if not pure:  # running nothing is no pass: the executor says so instead
        with pytest.raises(ArgumentError, match="no code cell carries the tag 'pure'"):
            run_notebook(NOTEBOOKS / f"{name}.ipynb", only_tagged="pure")
        return
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
    """A small notebook written with nbformat: (kind, source, tags) per cell, ids c0, c1, ..."""
    made = []
    for i, (kind, src, tags) in enumerate(cells):
        new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        made.append(new(src, id=f"c{i}", metadata={"tags": tags} if tags else {}))
    nb = nbformat.v4.new_notebook(cells=made)
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
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
    assert main([str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL .*bad\.ipynb: cell 0 .*boom", out)
    assert re.search(r"OK +.*good\.ipynb", out.split("bad.ipynb", 1)[1]), "the notebook after the failure ran"
    assert "1 of 2 notebooks failed" in out


def _marker_nb(tmp_path: Path, name: str) -> tuple[Path, Path, str]:
    """A notebook that writes a fresh random token into a file: proof that it ran."""
    token = str(int(np.random.default_rng().integers(1, 10**12)))
    marker = tmp_path / f"{name}.ran"
    nb = _write_nb(tmp_path / f"{name}.ipynb", [("code", f"open({marker.name!r}, 'w').write({token!r})", [])])
    return nb, marker, token


EXITS = ["exit()", "quit()", "import sys\nsys.exit(0)", "import sys\nsys.exit()", "raise SystemExit(3)",
         "import sys\nsys.exit('stopped early')", "import sys\ndef f():\n    sys.exit(0)\nf()"]


@pytest.mark.parametrize("code", EXITS)
def test_a_cell_that_exits_fails_its_notebook(tmp_path, code):
    nb = _write_nb(tmp_path / "exits.ipynb", [("code", "x = 1", []), ("markdown", "m", []),
                                              ("code", f"print('before')\n{code}", []),
                                              ("code", "after = True", [])])
    ns: dict = {}
    with pytest.raises(NotebookError, match=r"exits\.ipynb: cell 2 \(execution 2\) exited \(SystemExit") as info:
        run_notebook(nb, namespace=ns)
    assert isinstance(info.value, CgraphError) and isinstance(info.value.__cause__, SystemExit)
    assert info.value.cell_index == 2 and "after" not in ns
    out = info.value.results[-1].outputs
    assert out[0]["text"] == ["before\n"] and out[-1]["ename"] == "SystemExit"


@pytest.mark.parametrize("code", [EXITS[2], EXITS[4]])
def test_cli_runs_the_notebooks_after_an_exit_and_fails(tmp_path, capsys, code):
    first, first_marker, first_token = _marker_nb(tmp_path, "first")
    exits = _write_nb(tmp_path / "exits.ipynb", [("code", code, [])])
    later, marker, token = _marker_nb(tmp_path, "later")
    assert main([str(first), str(exits), str(later)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL .*exits\.ipynb: cell 0 .*SystemExit", out)
    assert re.search(r"OK +.*first\.ipynb", out) and re.search(r"OK +.*later\.ipynb", out)
    assert first_marker.read_text() == first_token and marker.read_text() == token


def test_module_command_exit_status_after_sys_exit_zero(tmp_path):
    exits = _write_nb(tmp_path / "exits.ipynb", [("code", "import sys\nsys.exit(0)", [])])
    later, marker, token = _marker_nb(tmp_path, "later")
    proc = subprocess.run([sys.executable, "-m", "cgraph.notebook", str(exits), str(later)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"FAIL .*exits\.ipynb: cell 0 .*SystemExit, code 0", proc.stdout), proc.stdout
    assert re.search(r"OK +.*later\.ipynb", proc.stdout) and marker.read_text() == token


def test_unknown_tag_is_an_error_listing_the_tags(tmp_path, capsys):
    tagged = _write_nb(tmp_path / "tagged.ipynb", [("code", "a = 1", ["pure"]), ("code", "b = 2", ["silent"]),
                                                   ("markdown", "text", ["nope"])])
    plain = _write_nb(tmp_path / "plain.ipynb", [("code", "a = 1", [])])
    with pytest.raises(ArgumentError, match=r"tagged\.ipynb: no code cell carries the tag 'nope'.*'pure', 'silent'"):
        run_notebook(tagged, only_tagged="nope")
    with pytest.raises(ArgumentError, match=r"tags on its code cells: none"):
        run_notebook(plain, only_tagged="pure")
    assert main(["--only-tagged", "pure", str(plain), str(tagged)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL .*plain\.ipynb: .*no code cell carries the tag 'pure'", out)
    assert re.search(r"OK +.*tagged\.ipynb: 1 cells", out)


def test_cli_timeout_fails_that_notebook_only(tmp_path, capsys):
    slow = _write_nb(tmp_path / "slow.ipynb", [("code", "x = 1", []),
                                              ("code", "import time\nwhile True:\n    time.sleep(0.01)", [])])
    later, marker, token = _marker_nb(tmp_path, "later")
    assert main(["--timeout", "0.3", str(slow), str(later)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL .*slow\.ipynb: cell 1 .*CellTimeout", out) and marker.read_text() == token


def test_a_cell_that_swallows_its_timeout_still_fails(tmp_path):
    nb = _write_nb(tmp_path / "sly.ipynb", [("code", "import time\ntry:\n    while True:\n        time.sleep(0.01)\n"
                                                     "except Exception:\n    pass\nprint('went on')", [])])
    with pytest.raises(NotebookError, match=r"cell 0 .*CellTimeout.*caught"):
        run_notebook(nb, timeout=0.2)


def test_keyboard_interrupt_stops_the_run(tmp_path):
    nb = _write_nb(tmp_path / "ctrl_c.ipynb", [("code", "raise KeyboardInterrupt", [])])
    with pytest.raises(KeyboardInterrupt):
        main([str(nb)])
