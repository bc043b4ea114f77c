"""The layering rule, checked: low layers never import high ones; the engine knows no API.

Layers, lowest first: leaf modules -> transport and the chunk runner -> engine ->
backends -> frontend (what the faces share) -> the faces -> the package. A module may
import only modules of its own layer or below; within the engine and the backends the
finer rules of docs/architecture.md hold too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "conveyor"

# Lower number = lower layer; a module's layer is that of its longest listed prefix.
LAYERS = {
    "conveyor.errors": 0,
    "conveyor._compat": 0,
    "conveyor._cpus": 0,
    "conveyor._stats": 0,
    "conveyor._callbacks": 0,
    "conveyor._deadline": 0,
    "conveyor._identity": 0,
    "conveyor._transport": 1,
    "conveyor._run": 1,
    "conveyor._state": 1,
    "conveyor._engine": 2,
    "conveyor._queues": 2,
    "conveyor._shared": 3,
    "conveyor._backends": 3,
    "conveyor._frontend": 4,
    "conveyor.pool": 5,
    "conveyor.executor": 5,
    "conveyor.workers": 5,
    "conveyor._pipeline": 5,
    "conveyor": 6,
    # The command line sits on top: nothing in the library imports it.
    "conveyor.cli": 7,
    "conveyor.__main__": 7,
}

# What a concrete backend may import from the engine: the contract and the records it
# names, never the engine itself, its dispatch or its books.
ENGINE_MODULES_FOR_BACKENDS = {
    "conveyor._engine._contract",
    "conveyor._engine._jobs",
    "conveyor._engine._states",
}
# Heavy or optional modules that `import conveyor` must not load.
NOT_ON_IMPORT = ("distributed", "dask", "sqlite3", "tqdm", "numpy", "psutil")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def _module_level_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node outside function bodies: what runs when the module is imported."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _imports(module: str, path: Path, *, on_import_only: bool = False) -> set[str]:
    """conveyor modules that ``module`` imports (relative imports resolved).

    ``on_import_only``: leave out imports inside functions (those run when called).
    """
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    modules = _modules()
    found = set()
    tree = ast.parse(path.read_text())
    nodes = _module_level_nodes(tree) if on_import_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("conveyor"):
                continue
            for alias in node.names:  # `from . import _lifetime` imports a module
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("conveyor"))
    return found


def test_every_module_has_a_layer():
    unassigned = []
    for module in _modules():
        try:
            _layer(module)
        except KeyError:
            unassigned.append(module)
    assert unassigned == []


def test_no_module_imports_a_higher_layer():
    violations = []
    for module, path in _modules().items():
        for imported in _imports(module, path):
            if _layer(imported) > _layer(module):
                violations.append(f"{module} (layer {_layer(module)}) imports {imported}")
    assert violations == []


def test_backends_reach_the_engine_only_through_its_contract():
    violations = []
    for module, path in _modules().items():
        if not module.startswith("conveyor._backends."):
            continue
        for imported in _imports(module, path):
            if imported.startswith("conveyor._engine") and (
                imported not in ENGINE_MODULES_FOR_BACKENDS
            ):
                violations.append(f"{module} imports {imported}")
    assert violations == []


def test_the_parent_never_imports_the_worker_process_module():
    # The protocol both ends speak lives in _transport/_protocol.py; the process backend
    # finds the worker's entry point by name when a pool starts.
    child = "conveyor._backends._process._child"
    importers = [
        m
        for m, p in _modules().items()
        if m != child and child in _imports(m, p, on_import_only=True)
    ]
    assert importers == []


def _stdlib_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def test_the_engine_knows_no_transport_backend_pickler_or_process():
    forbidden = ("pickle", "cloudpickle", "socket", "selectors", "subprocess", "tqdm", "dask")
    violations = []
    for module, path in _modules().items():
        if not module.startswith("conveyor._engine"):
            continue
        for imported in _imports(module, path):
            if imported.startswith(("conveyor._transport", "conveyor._backends")):
                violations.append(f"{module} imports {imported}")
        for imported in _stdlib_imports(path):
            top = imported.split(".")[0]
            typing_only = imported == "multiprocessing.context"  # BaseContext, in a signature
            if top in forbidden or (top == "multiprocessing" and not typing_only):
                violations.append(f"{module} imports {imported}")
    assert violations == []


def test_import_conveyor_loads_no_optional_or_heavy_module():
    code = (
        f"import sys, conveyor; print(','.join(m for m in {NOT_ON_IMPORT!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == ""


def test_backends_are_found_by_name_and_imported_on_first_use():
    code = (
        "import sys, conveyor\n"
        "name = 'conveyor._backends._process._backend'\n"
        "print(name in sys.modules)\n"
        "with conveyor.WorkerPool(1) as pool:\n"
        "    pool.map(abs, [-1])\n"
        "print(name in sys.modules)\n"
    )
    lines = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert lines == ["False", "True"]


def test_an_unknown_backend_name_is_a_clear_error():
    import pytest

    import conveyor

    with pytest.raises(
        ValueError, match="backend must be 'process', 'thread' or 'dask', not 'ray'"
    ):
        conveyor.WorkerPool(1, backend="ray")
