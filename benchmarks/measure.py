"""Timing helpers: repeat a run, keep every sample, report the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


class WrongResult(Exception):
    """An engine returned something other than what the tasks compute."""


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call to ``run`` (seconds), and what it returned."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def repeat_timed(run: Callable[[], Any], repeats: int, budget_s: float) -> list[float]:
    """Time ``run`` up to ``repeats`` times; stop early once ``budget_s`` is spent.

    The budget keeps a slow peer (e.g. 200,000 tasks at chunksize 1) from dominating the
    suite's run time; it still gets at least one timed run.
    """
    samples: list[float] = []
    while len(samples) < repeats and sum(samples) < budget_s:
        elapsed, _ = timed(run)
        samples.append(elapsed)
    return samples


def figure(value: float, samples: list[float], **extra: Any) -> dict[str, Any]:
    """One reported figure: the median-derived value plus the raw samples behind it."""
    return {"value": value, "samples": samples, **extra}


def rate_figure(count: float, samples_s: list[float], **extra: Any) -> dict[str, Any]:
    """``count`` per second, from the median time."""
    return figure(count / statistics.median(samples_s), samples_s, **extra)


def scaled_figure(scale: float, samples_s: list[float], **extra: Any) -> dict[str, Any]:
    """Median time times ``scale`` (e.g. 1e3 for ms, 1e6 / n for us per item)."""
    return figure(statistics.median(samples_s) * scale, samples_s, **extra)


def check(condition: bool, what: str) -> None:
    """Refuse to report a figure for an engine that returned wrong results."""
    if not condition:
        raise WrongResult(what)
