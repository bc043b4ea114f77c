"""Which Python runs each suite, and the Python 3.13 venv the futures suite needs.

The multiprocessing suite runs under the harness's own interpreter, against that
interpreter's copy of ``test._test_multiprocessing``.

The concurrent.futures suite is CPython 3.13's ``test.test_concurrent_futures`` package.
It cannot be imported under 3.11 or 3.12: it needs names that only 3.13's ``test.support``
has (``Py_GIL_DISABLED``, ``requires_gil_enabled``) and calls ``os.process_cpu_count`` and
``threading._start_joinable_thread``.  Loading it from another interpreter's directory
would also break process pools, whose workers must import the test modules by name.  So
it runs under a Python >= 3.13: the harness's own if it is one, else a venv made from a
3.13 base interpreter, with conveyor's dependencies installed and src/ on its path.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY313_VENV = REPO / ".venv-py313"
# Records the dependencies installed in the venv, to reinstall when they change.
INSTALL_STAMP = "conveyor-install.sha256"
BASE_ENV = "CONVEYOR_PY313"  # path of a Python >= 3.13 to make the venv from


def mp_python(override: str | None) -> str:
    return override or sys.executable


def futures_python(override: str | None) -> tuple[str | None, str]:
    """(interpreter or None, a note saying why this one) for the futures suite."""
    if override:
        return override, "given with --futures-python"
    if sys.version_info >= (3, 13):
        return sys.executable, "the harness's own interpreter"
    note = (
        f"3.13's test.test_concurrent_futures does not import under Python "
        f"{sys.version_info.major}.{sys.version_info.minor} (its test.support lacks "
        f"Py_GIL_DISABLED); ran under {PY313_VENV.name}"
    )
    try:
        return str(ensure_py313_venv()), note
    except RuntimeError as exc:
        return None, str(exc)


def ensure_py313_venv() -> Path:
    """The venv's python, creating the venv / (re)installing dependencies when needed.

    conveyor itself is not pip-installed (that needs a buildable project, README and
    all): a .pth file puts src/ on the venv's sys.path, even for ``python -I``.
    """
    python = PY313_VENV / "bin" / "python"
    if not python.exists():
        base = find_base_python313()
        _log(f"creating {PY313_VENV} from {base}")
        _check_call([base, "-m", "venv", str(PY313_VENV)])
    dependencies = _project_dependencies(python)
    stamp = PY313_VENV / INSTALL_STAMP
    wanted = hashlib.sha256("\n".join(dependencies).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return python

    _log(f"installing conveyor's dependencies into {PY313_VENV}: {' '.join(dependencies)}")
    _check_call([str(python), "-m", "pip", "install", "--quiet", *dependencies])
    _check_call([str(python), "-c", _WRITE_PTH, str(REPO / "src")])
    stamp.write_text(wanted)
    return python


# Run by the venv's python: write conveyor-src.pth into its site-packages.
_WRITE_PTH = (
    "import sys, sysconfig, pathlib; "
    "pathlib.Path(sysconfig.get_paths()['purelib'], 'conveyor-src.pth')"
    ".write_text(sys.argv[1] + '\\n')"
)


def _project_dependencies(python: Path) -> list[str]:
    # Read with the venv's python: tomllib is there whatever runs the harness.
    read = (
        "import sys, tomllib; "
        "print('\\n'.join(tomllib.load(open(sys.argv[1], 'rb'))['project']['dependencies']))"
    )
    result = subprocess.run(
        [str(python), "-c", read, str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def find_base_python313() -> str:
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [
        os.environ.get(BASE_ENV),
        *sorted(glob.glob(f"{pyenv_root}/versions/3.1[3-9]*/bin/python3"), reverse=True),
        shutil.which("python3.13"),  # may be a pyenv shim that refuses to run: checked
    ]
    for candidate in filter(None, candidates):
        if _is_python313(candidate):
            return candidate
    raise RuntimeError(
        f"no Python >= 3.13 found for the concurrent.futures suite: set {BASE_ENV} "
        "or pass --futures-python"
    )


def _is_python313(python: str) -> bool:
    check = "import sys; sys.exit(sys.version_info < (3, 13))"
    try:
        result = subprocess.run([python, "-c", check], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _check_call(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def _log(message: str) -> None:
    print(f"[cpython_compat] {message}", file=sys.stderr, flush=True)
