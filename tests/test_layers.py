"""The package's layers, read from its own imports: each layer imports only the layers
below it, nothing imports the tools, no module is over 400 lines, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import cgraph

PACKAGE = Path(cgraph.__file__).resolve().parent
# bottom to top; a module may import its own layer and those listed before it
LAYERS = [("core",), ("cuda",), ("kernels",), ("models",), ("engine", "encoder"), ("bench", "demo", "notebook")]
ALLOWED_EXTERNAL = {"core": {"attrs", "numpy"}}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "cgraph" or len(parts) < 2:
        return None
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    return None


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


def test_every_import_runs_down_the_layers():
    bad = []
    for module, path in _modules():
        mine = _layer(module)
        if mine is None:
            continue
        for target in _imports(path):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                bad.append(f"{module} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS[theirs]})")
    assert not bad, "\n".join(bad)


def test_the_pure_core_imports_only_the_stdlib_numpy_attrs_and_itself():
    import sys

    stdlib = set(sys.stdlib_module_names)
    bad = []
    for module, path in _modules():
        if not module.startswith("cgraph.core"):
            continue
        for target in _imports(path):
            top = target.split(".")[0]
            if top in stdlib or top in ALLOWED_EXTERNAL["core"] or target.startswith("cgraph.core") \
                    or top == "__future__":
                continue
            bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_package_root_is_imported_by_no_library_module():
    bad = [module for module, path in _modules() if _layer(module) is not None and _layer(module) < 5
           and any(t == "cgraph" for t in _imports(path))]
    assert not bad, bad


def test_no_module_is_over_400_lines():
    long = {module: n for module, path in _modules() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    names = {m for m, _ in _modules()}
    for module, path in _modules():
        graph[module] = {t for t in _imports(path) if t in names and t != module}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif state.get(nxt) is None:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
