"""Shared state side by side: conveyor.Manager against multiprocessing.Manager.

Workloads, each run ``--repeat`` times per engine in turns (one run of each per round),
the median reported with its ratio to the stdlib's figure in the same run:

- dict get/set: 4 processes, each setting then reading its own key (ops/s);
- counter: 4 processes incrementing one key, ``incr`` against the stdlib's only safe
  spelling, a Manager ``Lock`` around ``d[k] = d[k] + 1`` (increments/s);
- limiter: one process taking and giving back a permit of a ``CapacityLimiter`` against a
  Manager ``Semaphore`` (microseconds per acquire and release).

Processes are forked and wait on an event, so their start is not timed. Run from the
repository root::

    python -m benchmarks.shared_state            # about a minute
    python -m benchmarks.shared_state --quick
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import conveyor

CTX = multiprocessing.get_context("fork")
PROCESSES = 4


def _get_set(shared: dict[str, Any], go: Any, count: int, key: str, lock: Any) -> None:
    go.wait()
    for i in range(count):
        shared[key] = i
        shared[key]


def _count_incr(shared: Any, go: Any, count: int, key: str, lock: Any) -> None:
    go.wait()
    for _ in range(count):
        shared.incr("n")


def _count_locked(shared: Any, go: Any, count: int, key: str, lock: Any) -> None:
    go.wait()
    for _ in range(count):
        with lock:
            shared["n"] = shared["n"] + 1


def _in_processes(work: Callable[..., None], shared: Any, lock: Any, count: int) -> float:
    go = CTX.Event()
    procs = [
        CTX.Process(target=work, args=(shared, go, count, f"k{j}", lock)) for j in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    time.sleep(0.2)
    started = time.perf_counter()
    go.set()
    for p in procs:
        p.join(300)
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed ({p.exitcode})")
    return time.perf_counter() - started


def dict_get_set(make: Callable[[], Any], count: int) -> float:
    with make() as manager:
        seconds = _in_processes(_get_set, manager.dict(), None, count)
    return PROCESSES * count * 2 / seconds


def counter(make: Callable[[], Any], count: int) -> float:
    with make() as manager:
        shared = manager.dict(n=0)
        if isinstance(manager, conveyor.Manager):
            seconds = _in_processes(_count_incr, shared, None, count)
        else:
            seconds = _in_processes(_count_locked, shared, manager.Lock(), count)
        assert shared["n"] == PROCESSES * count, "an increment was lost"
    return PROCESSES * count / seconds


def limiter_us(make: Callable[[], Any], count: int) -> float:
    with make() as manager:
        if isinstance(manager, conveyor.Manager):
            limit: Any = conveyor.CapacityLimiter(1_000_000, manager=manager)
        else:
            limit = manager.Semaphore(1_000_000)
        started = time.perf_counter()
        for _ in range(count):
            limit.acquire()
            limit.release()
        return (time.perf_counter() - started) / count * 1e6


ENGINES: dict[str, Callable[[], Any]] = {
    "multiprocessing.Manager": lambda: CTX.Manager(),
    "conveyor.Manager": lambda: conveyor.Manager(ctx=CTX),
}
WORKLOADS: dict[str, tuple[Callable[[Callable[[], Any], int], float], int, bool]] = {
    # title: (workload, count per process, higher is better)
    "dict get/set, 4 processes (ops/s)": (dict_get_set, 5_000, True),
    "counter, 4 processes (increments/s)": (counter, 2_000, True),
    "limiter acquire + release, 1 process (us)": (limiter_us, 5_000, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, one round")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    for title, (workload, count, higher_is_better) in WORKLOADS.items():
        count = count // 10 if args.quick else count
        print(f"== {title}")
        figures: dict[str, list[float]] = {name: [] for name in ENGINES}
        for _ in range(repeat):
            for name, make in ENGINES.items():
                figures[name].append(workload(make, count))
        baseline = statistics.median(figures["multiprocessing.Manager"])
        for name, samples in figures.items():
            figure = statistics.median(samples)
            ratio = figure / baseline if higher_is_better else baseline / figure
            print(f"   {name:24} {figure:12,.1f}  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
