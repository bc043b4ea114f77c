"""Functions and classes defined in the main script behave as with the stdlib, everywhere.

The matrix: every start method x every API x every kind of main-script object, for a
program run as a script file, with ``-c``, on stdin, typed into an interactive
interpreter through a pty, and as a script whose definitions all sit inside the
``if __name__ == "__main__":`` guard (which spawn and forkserver workers never run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import types

import pytest

from conftest import PROCESS_METHODS
from conveyor._transport._mainscript import MainKind, WorkerNamespace, names_bound_on_import

PROGRAM = os.path.join(os.path.dirname(__file__), "main_script_program.py")
PROGRAM_TIMEOUT_S = 120

EXPECTED_CASES = {
    "global": [42, 42, 42],
    "identity": [True, False],
    "identity_lambda": [True, False],
    "dataclass": [1, 2],
    "namedtuple": [0, 1],
    "enum": [True, False],
    "plain": [5],
    "exception": ["ScriptError", 7],
    # A lambda made in a worker (where G is 42) reads the parent's G once it is back,
    # and bringing it back did not replace the parent's G.
    "returned_lambda": [[None], None],
}
APIS = [
    "Pool",
    "ThreadPool",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "WorkerPool",
    "WorkerPool-thread",
    "conveyor.map",
]


def program_text(start_method: str, *, inside_guard: bool = False) -> str:
    with open(PROGRAM) as f:
        text = f.read().replace("@START_METHOD@", start_method)
    if not inside_guard:
        return text
    head, sep, body = text.partition("G = None\n")
    indented = "".join(
        f"    {line}" if line.strip() else line for line in (sep + body).splitlines(True)
    )
    return f'{head}if __name__ == "__main__":\n{indented}'


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(__file__)), "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env["PYTHON_BASIC_REPL"] = "1"  # 3.13's new REPL re-indents what is typed
    return env


def run_program(mode: str, text: str, tmp_path) -> str:
    """Run ``text`` as a user would in ``mode``; return everything it printed."""
    if mode == "repl":
        return _run_in_repl(text)
    args = [sys.executable]
    stdin = None
    if mode == "script":
        path = tmp_path / "user_script.py"
        path.write_text(text)
        args.append(str(path))
    elif mode == "-c":
        args += ["-c", text]
    elif mode == "stdin":
        args.append("-")
        stdin = text
    proc = subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT_S,
        cwd=tmp_path,
        env=_env(),
    )
    return proc.stdout + proc.stderr


def _run_in_repl(text: str) -> str:
    main, child = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-q", "-i"],
        stdin=child,
        stdout=child,
        stderr=child,
        env=_env(),
        close_fds=True,
    )
    os.close(child)
    output: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child side closed
                return
            if not data:
                return
            output.append(data)

    reader = threading.Thread(target=drain, name="test-repl-reader", daemon=True)
    reader.start()
    try:
        for line in [*text.splitlines(), "", "exit()"]:
            os.write(main, line.encode() + b"\n")
            time.sleep(0.002)  # let the REPL read each line before the next arrives
        proc.wait(timeout=PROGRAM_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        os.close(main)
    return b"".join(output).decode(errors="replace")


def report_of(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT ") :])
    raise AssertionError(f"the program printed no report:\n{output[-4000:]}")


def assert_stdlib_semantics(report: dict) -> None:
    assert sorted(report) == sorted(APIS)
    for api in APIS:
        expected = dict(EXPECTED_CASES)
        if api == "conveyor.map":
            expected["global"] = "(no initializer)"
        if api in ("ThreadPool", "ThreadPoolExecutor", "WorkerPool-thread"):  # one process
            expected["returned_lambda"] = [[42], 42]
        assert report[api] == expected, api


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["script", "-c", "stdin", "repl"])
@pytest.mark.parametrize("start_method", PROCESS_METHODS)
def test_main_script_objects_behave_as_with_the_stdlib(start_method, mode, tmp_path):
    output = run_program(mode, program_text(start_method), tmp_path)
    assert_stdlib_semantics(report_of(output))
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("start_method", PROCESS_METHODS)
def test_definitions_inside_the_main_guard_travel_by_value(start_method, tmp_path):
    output = run_program("script", program_text(start_method, inside_guard=True), tmp_path)
    assert_stdlib_semantics(report_of(output))


# --- the rule's parts, one by one ------------------------------------------------------


def test_names_bound_on_import_skip_the_main_guard(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "import os, json as j\n"
        "from x import y\n"
        "A = 1\n"
        "def f(): pass\n"
        "class C: pass\n"
        "try:\n    import numpy as np\nexcept ImportError:\n    np = None\n"
        "for i in range(2):\n    pass\n"
        "if __name__ == '__main__':\n    def in_guard(): pass\nelse:\n    def imported(): pass\n"
        "if '__main__' != __name__:\n    def also_imported(): pass\n"
    )
    names = names_bound_on_import(str(script))
    assert {"os", "j", "y", "A", "f", "C", "np", "i", "imported", "also_imported"} <= names
    assert "in_guard" not in names


def test_names_bound_on_import_of_an_unreadable_script_is_empty(tmp_path):
    assert names_bound_on_import(str(tmp_path / "missing.py")) == frozenset()
    bad = tmp_path / "bad.py"
    bad.write_text("def (:\n")
    assert names_bound_on_import(str(bad)) == frozenset()


def _namespace(kind: MainKind = MainKind.NONE, **initial) -> WorkerNamespace:
    module = types.ModuleType("__main__")
    vars(module).update(initial)
    return WorkerNamespace(module, kind)


def test_shipped_global_fills_an_absent_name():
    ns = _namespace()
    ns.bind({"N": (1, 10)})
    assert ns.globals["N"] == 10


def test_value_set_by_worker_code_is_never_clobbered_by_the_parents_copy():
    ns = _namespace()
    ns.bind({"G": (1, None)})
    ns.globals["G"] = 42  # an initializer's `global G; G = 42`
    ns.bind({"G": (1, None)})  # a later task ships the parent's G again
    assert ns.globals["G"] == 42
    ns.bind({"G": (2, "rebound in the parent")})
    assert ns.globals["G"] == 42


def test_parent_rebinding_reaches_a_name_the_worker_left_alone():
    ns = _namespace()
    ns.bind({"helper": (1, "old")})
    ns.bind({"helper": (2, "new")})  # a REPL redefined the helper
    assert ns.globals["helper"] == "new"


def test_mutated_but_not_rebound_value_is_kept():
    cache: dict = {}
    ns = _namespace()
    ns.bind({"CACHE": (7, cache)})
    cache["filled"] = True  # filled in place by an initializer
    ns.bind({"CACHE": (7, {})})  # the parent's (unchanged) object shipped again
    assert ns.globals["CACHE"] is cache


def test_script_rerun_by_the_worker_keeps_its_own_values():
    ns = _namespace(MainKind.RERUN, N=10)
    ns.bind({"N": (5, 20)})
    assert ns.globals["N"] == 10


def test_forked_copy_follows_the_parents_rebinding():
    value = object()
    ns = _namespace(MainKind.COPY, N=value)
    ns.bind({"N": (id(value), "unchanged")})
    assert ns.globals["N"] is value
    ns.bind({"N": (id(value) + 1, "rebound")})
    assert ns.globals["N"] == "rebound"


def test_a_function_sent_back_by_a_worker_never_replaces_the_parents_globals():
    ns = _namespace(MainKind.RERUN, G="the parent's")
    ns.bind({"G": (12345, "the worker's"), "H": (1, "absent here")})
    assert ns.globals["G"] == "the parent's"
    assert ns.globals["H"] == "absent here"
