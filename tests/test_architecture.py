"""docs/architecture.rst holds: imports point downwards, modules and functions stay short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dasktrain"

# room -> the dasktrain rooms it may import (itself always allowed)
PLUMBING = {
    "_validation", "_config", "_compat", "_cache", "exceptions", "_typing", "_malloc", "_threads"
}  # fmt: skip
ALLOWED = {
    "exceptions": set(),
    "_config": {"exceptions"},
    "_compat": {"exceptions", "_config"},
    "_validation": {"exceptions", "_config", "_compat"},
    "_cache": {"exceptions", "_config", "_compat", "_validation"},
    "_typing": set(),
    "_malloc": {"exceptions", "_config"},
    "_threads": {"exceptions", "_compat"},
    "_dask": {"_validation", "exceptions", "_config", "_compat", "_typing", "_malloc"},
    "cluster": PLUMBING | {"_dask"},
    "datasets": PLUMBING | {"_dask"},
    "images": PLUMBING | {"_dask"},
    "features": PLUMBING | {"_dask"},
    "metrics": PLUMBING | {"_dask"},
    "models": PLUMBING | {"_dask", "metrics"},
    "ddp": PLUMBING | {"_dask", "features"},
    "tf": PLUMBING | {"_dask", "ddp"},
    "spark": PLUMBING | {"_dask", "images", "features", "metrics"},
    "testing": PLUMBING | {"_dask", "images", "features", "metrics", "models"},
    "harness": PLUMBING
    | {"_dask", "cluster", "datasets", "images", "features", "metrics", "models", "ddp"}
    | {"spark", "tf"},
    "cli": PLUMBING
    | {"_dask", "cluster", "datasets", "images", "features", "metrics", "models", "ddp"}
    | {"harness", "spark", "tf"},
}


def _room(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _imported_rooms(path):
    """The dasktrain rooms ``path`` imports (absolute or relative), at any depth of the file."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        pkg = path.relative_to(PACKAGE.parent).parts[:-1]
    rooms = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [base + [a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "dasktrain":
                names = [node.module.split(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names if a.name.startswith("dasktrain.")]
        else:
            continue
        for parts in names:
            if len(parts) > 1 and parts[0] == "dasktrain":
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path):
    room = _room(path)
    if room == "__init__":
        return  # the package root re-exports the public names lazily
    allowed = ALLOWED[room] | {room}
    bad = sorted(_imported_rooms(path) - allowed - {"__version__"})
    assert not bad, (
        f"{path.relative_to(PACKAGE)} ({room}) imports {bad}; allowed: {sorted(allowed)}"
    )


def test_every_room_has_rules():
    rooms = {_room(p) for p in _modules()} - {"__init__"}
    assert rooms <= set(ALLOWED), f"rooms without import rules: {sorted(rooms - set(ALLOWED))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_short(path):
    text = path.read_text()
    assert text.count("\n") <= 500, f"{path.name} has {text.count(chr(10))} lines (> 500)"
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        doc = ast.get_docstring(node, clean=False)
        first = body[1] if doc is not None and len(body) > 1 else body[0]
        code_lines = node.end_lineno - first.lineno + 1
        assert code_lines <= 80, (
            f"{path.name}:{node.lineno} {node.name} has {code_lines} lines of code (> 80)"
        )
