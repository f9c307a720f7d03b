"""One error hierarchy: everything cgraph raises derives from cgraph.CgraphError."""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

import pytest

import cgraph
from cgraph.core import errors

PACKAGE = Path(cgraph.__file__).resolve().parent

# Tools (benchmarks, the demo's argument parsing) may exit or use argparse's own errors.
TOOLS = ("bench", "demo")


def _library_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] not in TOOLS:
            yield path


def _raised_names(tree: ast.AST):
    # a module's __getattr__ must raise AttributeError (the import system relies on it)
    getattr_raises = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
                      for n in ast.walk(f)}
    for node in ast.walk(tree):
        if id(node) in getattr_raises:
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                yield node.lineno, exc.id
            elif isinstance(exc, ast.Attribute):
                yield node.lineno, exc.attr


def test_every_exception_class_raised_by_the_library_is_a_cgraph_error():
    hierarchy = {name for name, obj in vars(errors).items()
                 if isinstance(obj, type) and issubclass(obj, errors.CgraphError)}
    offenders = []
    for path in _library_files():
        tree = ast.parse(path.read_text())
        local = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for line, name in _raised_names(tree):
            if name in hierarchy or name in local:
                continue
            if hasattr(builtins, name) and isinstance(getattr(builtins, name), type) \
                    and issubclass(getattr(builtins, name), BaseException):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: raise {name}")
    assert not offenders, "\n".join(offenders)


def test_locally_defined_exceptions_derive_from_the_base():
    bad = []
    for path in _library_files():
        module = ".".join(("cgraph", *path.relative_to(PACKAGE).with_suffix("").parts))
        module = module.removesuffix(".__init__").removesuffix(".__main__")
        if module.endswith("__main__") or path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        if not names:
            continue
        mod = importlib.import_module(module)
        for name in names:
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, BaseException) and not issubclass(obj, errors.CgraphError):
                bad.append(f"{module}.{name}")
    assert not bad, bad


def test_the_errors_are_importable_from_the_package_and_keep_builtin_bases():
    for name in errors.__all__:
        assert getattr(cgraph, name) is getattr(errors, name)
    assert issubclass(cgraph.ArgumentError, ValueError)
    assert issubclass(cgraph.ArgumentTypeError, TypeError)
    assert issubclass(cgraph.GraphClosedError, RuntimeError)
    assert issubclass(cgraph.CaptureError, cgraph.CgraphError)


def test_one_except_catches_a_core_error():
    with pytest.raises(cgraph.CgraphError, match="unknown graph mode"):
        cgraph.GraphMode.parse("fulll")
    with pytest.raises(cgraph.CgraphError):
        cgraph.GraphConfig("full", capture_sizes=[0])
    with pytest.raises(cgraph.CgraphError):
        cgraph.dispatch(cgraph.build_dispatch_table(cgraph.GraphConfig("full")), 0)


def test_not_found_error_prints_its_message_plainly():
    assert str(errors.NotFoundError("no buffer named 'x'")) == "no buffer named 'x'"
