"""CPython's own Pool/ThreadPool and executor tests must pass against conveyor.

Runs tools/cpython_compat (about a minute; the first run also builds a Python 3.13 venv
for the concurrent.futures suite).  Tests that read the stdlib's private attributes are
listed in tools/cpython_compat/suites.py and are not required.  Set
CONVEYOR_SKIP_CPYTHON_COMPAT=1 to skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS_TIMEOUT = 840  # seconds; the harness itself aims at well under 4 minutes

pytestmark = pytest.mark.skipif(
    os.environ.get("CONVEYOR_SKIP_CPYTHON_COMPAT") == "1",
    reason="CONVEYOR_SKIP_CPYTHON_COMPAT=1",
)


def _run_harness(report_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cpython_compat", "--json", str(report_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HARNESS_TIMEOUT,
        check=False,
    )


def _failure_lines(report: dict) -> list[str]:
    lines = []
    for name, suite in report["suites"].items():
        if suite["status"] == "load error":
            lines.append(f"{name}: {suite['error']}")
        lines += [
            f"{name}::{test['id']} [{test['outcome']}] {test['reason']}"
            for test in suite["tests"]
            if test["required_failure"]
        ]
    return lines


@pytest.mark.slow
@pytest.mark.timeout(HARNESS_TIMEOUT + 60)
def test_cpython_pool_and_executor_suites_pass(tmp_path: Path) -> None:
    report_path = tmp_path / "cpython_compat.json"
    result = _run_harness(report_path)
    if not report_path.exists():
        pytest.fail(f"the harness wrote no report:\n{result.stdout}\n{result.stderr}")
    report = json.loads(report_path.read_text())

    failures = _failure_lines(report)
    if failures:
        pytest.fail(
            "required CPython tests fail against conveyor (details: python -m "
            "tools.cpython_compat --only TEST_ID --keep-logs):\n" + "\n".join(failures),
            pytrace=False,
        )

    missing = [f"{name}: {s['error']}" for name, s in report["suites"].items() if s["error"]]
    if missing:
        pytest.skip("suite not run here: " + "; ".join(missing))
