"""The functions the benchmarks send to workers.

They live at module level in their own small module so every engine can pickle them by
reference (no cloudpickle needed) and spawned or forkserver workers import little.
"""

from __future__ import annotations

import time
from typing import Any

# Set by the parent after import. A forked worker inherits the value; a worker started
# from a fresh interpreter (spawn, forkserver, loky) re-imports this module and sees None.
PARENT_PID_IF_FORKED: int | None = None


def square(x: int) -> int:
    return x * x


def burn_cpu(loops: int) -> int:
    """Pure-Python work that holds the GIL; ``loops`` is calibrated to a wall time."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def sleep_io(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def first_element(array: Any) -> float:
    return float(array[0])


def identity(value: Any) -> Any:
    return value


def was_forked(_: Any = None) -> bool:
    """True when the worker inherited the parent's memory (fork start method)."""
    return PARENT_PID_IF_FORKED is not None


def square_all(xs: list[int]) -> list[int]:
    """A hand-made chunk: what a Dask user writes to amortise the per-task cost."""
    return [x * x for x in xs]
