"""The layering rule, checked: low layers never import high ones; the engine knows no API."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "conveyor"

# Lower number = lower layer. A module may import only modules of its layer or below.
LAYERS = {
    "errors": 0,
    "_compat": 0,
    "_cpus": 0,
    "_stats": 0,
    "_mainscript": 0,
    "_callbacks": 0,
    "_shm": 1,
    "_channel": 1,
    "_serialize": 1,
    "_execute": 1,
    "_worker": 2,
    "_scheduler": 2,
    "_engine": 3,
    "_process": 4,
    "_thread": 4,
    "_feeder": 4,
    "_results": 4,
    "_progress": 4,
    "_core": 5,
    "pool": 6,
    "executor": 6,
    "workers": 6,
    "__init__": 7,
}


def _imported_siblings(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS), f"assign a layer to: {modules ^ set(LAYERS)}"


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in PACKAGE.glob("*.py"):
        layer = LAYERS[path.stem]
        for imported in _imported_siblings(path):
            if LAYERS.get(imported, 99) > layer:
                violations.append(f"{path.stem} (layer {layer}) imports {imported}")
    assert violations == []


def test_the_engine_imports_no_progress_bar_or_api_module():
    for name in ("_engine", "_scheduler", "_process", "_thread", "_worker"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert "tqdm" not in source and "dask" not in source
