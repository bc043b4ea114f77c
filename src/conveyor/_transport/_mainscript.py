"""The main script across processes: one namespace per worker, by reference where possible.

Users define their task functions and classes in the script they run, so ``__main__`` is
where most pickling trouble lives. The rule (docs/architecture.md, "The main script"):

- A function or class of ``__main__`` travels **by reference** when a worker can find
  it there: under fork, it was bound under its name when the pool started (the worker is
  a copy of the parent); under spawn and forkserver, the worker re-runs the script as the
  stdlib does, and the name is bound by the part of the script that runs on import (not
  inside ``if __name__ == "__main__":``), which we read from the script's syntax tree.
- Everything else of ``__main__`` (lambdas, closures, definitions inside the guard under
  spawn or forkserver, anything typed in a REPL, ``-c`` or stdin) travels **by value**,
  and its globals land in the worker's one namespace for the main script, so that an
  initializer's ``global G`` is what every task reads. Classes by value keep one class
  object per worker for one class of the parent (cloudpickle's class tracking), so
  instances compare and ``isinstance`` as in the parent, and come back as the parent's.

A global shipped with a by-value function is bound in the worker's namespace when the
name is absent there, or when the parent rebound the name since it last shipped it and
the worker's own code has not rebound it since (so a REPL that redefines a helper gets
the new one, and a value an initializer set is never clobbered by the parent's copy).
"""

from __future__ import annotations

import ast
import builtins
import enum
import functools
import os
import sys
import types
import weakref
from typing import Any


class MainKind(enum.Enum):
    """How a worker's ``__main__`` relates to the parent's."""

    COPY = "copy"  # fork: a copy of the parent's, as it was when the worker started
    RERUN = "rerun"  # spawn, forkserver: the script run again, under ``__mp_main__``
    NONE = "none"  # nothing of the script in the worker (REPL, -c, stdin, a package)


def main_module() -> types.ModuleType | None:
    return sys.modules.get("__main__")


# A spawn or forkserver worker runs the main script under the name "__mp_main__" (and
# multiprocessing makes the name an alias of "__main__" in every process).
MAIN_NAMES = ("__main__", "__mp_main__")


def is_main_object(obj: Any) -> bool:
    """A function or class defined in the main script."""
    return getattr(obj, "__module__", None) in MAIN_NAMES and (
        isinstance(obj, (types.FunctionType, type))
    )


def _lookup(module: Any, qualname: str) -> Any:
    if "<" in qualname:  # <locals>, <lambda>: never reachable by name
        return None
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def script_path() -> str | None:
    """The file multiprocessing re-runs in spawn and forkserver workers, if any.

    Mirrors ``multiprocessing.spawn.get_preparation_data``: a main run with ``-m`` is
    re-imported by name (unless it is a package's ``__main__``), a script by path; a path
    that is no file (``python -`` gives ``'<stdin>'``) is run by nobody (see
    ``_compat.hide_non_file_main``).
    """
    main = main_module()
    if main is None:
        return None
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None and (spec_name == "__main__" or spec_name.endswith(".__main__")):
        return None
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    if os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None  # multiprocessing skips IPython's launcher, which has no guard
    return path


def main_kind(start_method: str) -> MainKind:
    if start_method == "fork":
        return MainKind.COPY
    return MainKind.RERUN if script_path() is not None else MainKind.NONE


# --- the parent's view: what workers can find by reference ---------------------------


class MainView:
    """What the workers of one pool can find by reference in the main script."""

    def __init__(self, kind: MainKind) -> None:
        self.kind = kind
        self._forked: dict[str, weakref.ref[Any]] = {}
        self._names: frozenset[str] = frozenset()
        main = main_module()
        if kind is MainKind.COPY and main is not None:
            for name, value in list(vars(main).items()):
                if isinstance(value, (types.FunctionType, type)):
                    self._forked[name] = weakref.ref(value)
        elif kind is MainKind.RERUN:
            path = script_path()
            self._names = names_bound_on_import(path) if path else frozenset()

    def by_reference(self, obj: Any) -> bool:
        """True if ``obj`` (a ``__main__`` function or class) exists by name in a worker."""
        qualname = getattr(obj, "__qualname__", "")
        main = main_module()
        if self.kind is MainKind.NONE or main is None or _lookup(main, qualname) is not obj:
            return False
        top = qualname.partition(".")[0]
        if self.kind is MainKind.RERUN:
            return top in self._names
        forked = self._forked.get(top)
        return forked is not None and forked() is getattr(main, top, None)


class WorkerView:
    """A worker's view, for what it sends back: what the parent finds by name."""

    def by_reference(self, obj: Any) -> bool:
        main = main_module()
        return main is not None and _lookup(main, getattr(obj, "__qualname__", "")) is obj


def names_bound_on_import(path: str) -> frozenset[str]:
    """Top-level names a script binds when imported (its ``__main__`` guard skipped).

    Parsed once per version of the file: a program that makes many pools pays once.
    """
    try:
        info = os.stat(path)
    except OSError:
        return frozenset()
    return _names_bound_on_import(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=8)
def _names_bound_on_import(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    names: set[str] = set()
    _collect_bindings(tree.body, names)
    return frozenset(names)


def _collect_bindings(body: list[ast.stmt], names: set[str]) -> None:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(_target_names(target))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).partition(".")[0] for a in node.names)
        elif isinstance(node, ast.If):
            guard = _main_guard(node.test)
            if guard != "body-is-main":
                _collect_bindings(node.body, names)
            if guard != "orelse-is-main":
                _collect_bindings(node.orelse, names)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
            if isinstance(node, (ast.For, ast.AsyncFor)):
                names.update(_target_names(node.target))
            _collect_bindings(node.body, names)
            _collect_bindings(getattr(node, "orelse", []), names)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            for part in (node.body, node.orelse, node.finalbody):  # type: ignore[attr-defined]
                _collect_bindings(part, names)
            for handler in node.handlers:  # type: ignore[attr-defined]
                _collect_bindings(handler.body, names)


def _target_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _main_guard(test: ast.expr) -> str | None:
    """Which branch of an ``if`` runs only as the main script, if it is the guard."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    left, right = test.left, test.comparators[0]
    sides = {_guard_side(left), _guard_side(right)}
    if sides != {"name", "main"}:
        return None
    if isinstance(test.ops[0], ast.Eq):
        return "body-is-main"
    if isinstance(test.ops[0], ast.NotEq):
        return "orelse-is-main"
    return None


def _guard_side(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name) and node.id == "__name__":
        return "name"
    if isinstance(node, ast.Constant) and node.value == "__main__":
        return "main"
    return None


# --- by-value functions of __main__: built into the worker's one namespace -----------


class _EmptyCell:
    """Stands for a closure cell with no value yet (a name assigned after the def)."""

    def __reduce__(self) -> str:
        return "EMPTY_CELL"


EMPTY_CELL = _EmptyCell()


def global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the code nested in it) may read as globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= global_names(const)
    return names


def reduce_main_function(func: types.FunctionType) -> tuple[Any, ...]:
    """Pickle a ``__main__`` function by value, its globals bound to the worker's namespace.

    The function is made first and its state set after, so that a function reaching
    itself (recursion, a class's method) pickles without infinite recursion.
    """
    g = func.__globals__
    shipped = {name: (id(g[name]), g[name]) for name in global_names(func.__code__) if name in g}
    cells = func.__closure__ or ()
    state = {
        "globals": shipped,
        "closure": [_cell_value(cell) for cell in cells],
        "defaults": func.__defaults__,
        "kwdefaults": func.__kwdefaults__,
        "dict": func.__dict__,
        "doc": func.__doc__,
        "annotations": func.__annotations__,
        "qualname": func.__qualname__,
    }
    return (
        make_function,
        (func.__code__, func.__name__, len(cells)),
        state,
        None,
        None,
        set_function_state,
    )


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return EMPTY_CELL


def make_function(code: types.CodeType, name: str, ncells: int) -> types.FunctionType:
    closure = tuple(types.CellType() for _ in range(ncells)) if ncells else None
    return types.FunctionType(code, worker_namespace().globals, name, None, closure)


def set_function_state(func: types.FunctionType, state: dict[str, Any]) -> None:
    worker_namespace().bind(state["globals"])
    for cell, value in zip(func.__closure__ or (), state["closure"], strict=True):
        if value is not EMPTY_CELL:
            cell.cell_contents = value
    func.__defaults__ = state["defaults"]
    func.__kwdefaults__ = state["kwdefaults"]
    func.__dict__.update(state["dict"])
    func.__doc__ = state["doc"]
    func.__annotations__ = state["annotations"]
    func.__qualname__ = state["qualname"]
    func.__module__ = "__main__"


class WorkerNamespace:
    """A process's one namespace for the main script, and where each name came from.

    ``origin`` maps a name to (the parent's ``id()`` of the value, the value bound for
    it here). The parent's id tells whether the parent rebound the name since; the value
    tells whether this process's own code did.
    """

    def __init__(self, module: types.ModuleType, kind: MainKind) -> None:
        self.module = module
        self.globals: dict[str, Any] = vars(module)
        self.origin: dict[str, tuple[int, Any]] = {}
        if kind is MainKind.COPY:
            # A forked copy: each object has the same id() as in the parent.
            self.origin = {name: (id(value), value) for name, value in self.globals.items()}

    def bind(self, shipped: dict[str, tuple[int, Any]]) -> None:
        ns, origin = self.globals, self.origin
        for name, (parent_id, value) in shipped.items():
            if name in ns:
                known = origin.get(name)
                if known is None or known[1] is not ns[name] or known[0] == parent_id:
                    continue  # this process's own value, or the parent's unchanged one
            ns[name] = value
            origin[name] = (parent_id, value)


_namespace: WorkerNamespace | None = None


def start_worker(kind: MainKind) -> None:
    """Set up this worker's main namespace; called first thing in a worker process."""
    global _namespace
    main = main_module()
    if kind is MainKind.NONE or main is None:
        # The bootstrap's own __main__ (multiprocessing's -c stub, the fork server's)
        # holds names such as `main` that must not shadow the user's.
        main = types.ModuleType("__main__")
        main.__builtins__ = builtins  # type: ignore[attr-defined]
        sys.modules["__main__"] = sys.modules["__mp_main__"] = main
    _namespace = WorkerNamespace(main, kind)


def worker_namespace() -> WorkerNamespace:
    """This process's namespace for the main script.

    In a process that is no worker (the parent receiving a lambda as a result), it is the
    process's own ``__main__``, and a shipped global only fills a name that is absent:
    nothing a worker sends may replace the parent's own values.
    """
    global _namespace
    if _namespace is None:
        main = main_module() or types.ModuleType("__main__")
        _namespace = WorkerNamespace(main, MainKind.RERUN)
    return _namespace
