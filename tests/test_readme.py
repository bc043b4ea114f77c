"""Every code block in the README runs as shown, pasted into a file.

Python blocks run as scripts with the default start method and once more under spawn
(where a missing ``if __name__ == "__main__":`` guard shows at once). The shell block's
commands name files that exist, and the example they run runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
RUN_TIMEOUT_S = 120
# Put before a block to run it under spawn; guarded, since spawn workers re-run the file.
FORCE_SPAWN = (
    "import multiprocessing\n"
    'if __name__ == "__main__":\n'
    '    multiprocessing.set_start_method("spawn")\n'
)


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(README.read_text()) if lang == language]


PYTHON_BLOCKS = blocks("python")


def run_script(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "readme_block.py"
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
    )


def test_the_readme_has_python_blocks_to_test():
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("start", ["default", "spawn"])
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs_as_a_script(index, start, tmp_path):
    source = PYTHON_BLOCKS[index]
    if start == "spawn":
        source = FORCE_SPAWN + source
    done = run_script(source, tmp_path)
    assert done.returncode == 0, f"block {index} failed:\n{source}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    assert done.stdout.strip(), "each block shows something"


def test_the_readme_shell_commands_name_files_that_exist():
    shell = "\n".join(blocks("bash"))
    commands = [line for line in shell.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2  # one to install and run the example, one for the tests
    for path in re.findall(r"\b(examples/\S+\.py)\b", shell):
        assert (ROOT / path).is_file(), path
    assert "pip install -e '.[test]'" in commands[1] and "pytest" in commands[1]


@pytest.mark.slow
def test_the_quickstart_example_runs():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "endless input, first five: [0, 1, 4, 9, 16]" in done.stdout
    assert "tasks:" in done.stdout and "results discarded" in done.stdout
