"""The kill storm (tools/stress_kill.py) at a size that runs in well under a minute."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import stress_kill

TASKS = 6000
KILL_EVERY_S = (0.05, 0.15)


@pytest.mark.timeout(120)
def test_with_retries_every_result_arrives_exactly_once_despite_random_kills():
    report = stress_kill.run(TASKS, retries=10, kill_every_s=KILL_EVERY_S)
    assert report.kills >= 5, report
    assert report.crashes_seen >= 1, report
    assert report.succeeded == TASKS, report
    assert report.failed_crashed == 0, report
    assert report.lost == 0, report
    assert report.duplicated == 0, report
    assert report.wrong == 0, report


@pytest.mark.timeout(120)
def test_without_retries_every_task_ends_in_a_result_or_a_crash_error():
    report = stress_kill.run(TASKS, retries=0, kill_every_s=KILL_EVERY_S, seed=1)
    assert report.kills >= 5, report
    assert report.succeeded + report.failed_crashed == TASKS, report
    assert report.lost == 0, report
    assert report.duplicated == 0, report
    assert report.wrong == 0, report
