"""The classic tutorial program runs unchanged but for its import, printing the same lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tutorial.py"


def _run(source: str, tmp_path: Path) -> list[str]:
    script = tmp_path / "tutorial_program.py"
    script.write_text(source)
    # Unbuffered output would let two workers' "*" and "\n" interleave on the shared
    # pipe; block buffering writes each worker's lines at once, as in a normal run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    assert done.stderr == ""
    return done.stdout.splitlines()


def test_tutorial_prints_the_same_lines_as_with_multiprocessing(tmp_path):
    conveyor_source = EXAMPLE.read_text()
    assert "from conveyor import Pool" in conveyor_source
    stdlib_source = conveyor_source.replace(
        "from conveyor import Pool", "from multiprocessing import Pool"
    )
    ours = _run(conveyor_source, tmp_path)
    theirs = _run(stdlib_source, tmp_path)
    # Five workers print concurrently, so the order of lines is the scheduler's.
    assert sorted(ours) == sorted(theirs) == sorted("*" * i for i in range(5))
