"""A 200 MB read-only NumPy array for 2 workers under forkserver: ``shared=`` against
``initargs``.

Three ways to give every worker the array, each timed from the pool's creation to the
first answer of every worker (each worker sums the whole array, so all of it is read),
and the memory of the parent and the workers together then (their PSS: a page mapped by
three processes counts a third in each, so the sum counts it once):

- ``conveyor.WorkerPool(shared=array)``: pickled once, in memfds every worker maps;
- ``conveyor.WorkerPool(initializer=keep, initargs=(array,))``;
- ``multiprocessing.Pool(initializer=keep, initargs=(array,))``.

Run from the repository root::

    python -m benchmarks.shared_objects          # about half a minute
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import time
from typing import Any

import numpy as np
import psutil

import conveyor

ARRAY_BYTES = 200 << 20
WORKERS = 2
METHOD = "forkserver"
_kept: Any = None


def keep(array: Any) -> None:
    global _kept
    _kept = array


def _answer(array: Any) -> tuple[int, float, int]:
    total = float(array.sum())  # every page read
    return os.getpid(), total, psutil.Process().memory_full_info().pss


def from_shared(_: int) -> tuple[int, float, int]:
    return _answer(conveyor.shared())


def from_initargs(_: int) -> tuple[int, float, int]:
    return _answer(_kept)


def _every_worker(pool_map: Any, task: Any) -> dict[int, int]:
    """Run ``task`` until every worker has answered; each worker's PSS, by pid."""
    seen: dict[int, int] = {}
    while len(seen) < WORKERS:
        for pid, _, pss in pool_map(task, range(2 * WORKERS)):
            seen[pid] = pss
    return seen


def run(kind: str, array: Any) -> tuple[float, float]:
    """Seconds to every worker's first answer, and MB of memory of all processes."""
    started = time.perf_counter()
    if kind == "conveyor shared=":
        pool: Any = conveyor.WorkerPool(WORKERS, context=METHOD, shared=array)
        task, pool_map = from_shared, lambda f, xs: pool.map(f, xs, chunksize=1)
    elif kind == "conveyor initargs":
        pool = conveyor.WorkerPool(WORKERS, context=METHOD, initializer=keep, initargs=(array,))
        task, pool_map = from_initargs, lambda f, xs: pool.map(f, xs, chunksize=1)
    else:
        ctx = multiprocessing.get_context(METHOD)
        pool = ctx.Pool(WORKERS, initializer=keep, initargs=(array,))
        task, pool_map = from_initargs, lambda f, xs: pool.map(f, xs, chunksize=1)
    try:
        workers = _every_worker(pool_map, task)
        seconds = time.perf_counter() - started
        parent = psutil.Process().memory_full_info().pss
        return seconds, (parent + sum(workers.values())) / 1e6
    finally:
        pool.terminate()
        if hasattr(pool, "join"):
            pool.join()


KINDS = ("multiprocessing initargs", "conveyor initargs", "conveyor shared=")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    array = np.ones(ARRAY_BYTES // 8)
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeat):
        for kind in KINDS:
            gc.collect()
            results[kind].append(run(kind, array))
    base_s = statistics.median(r[0] for r in results[KINDS[0]])
    base_mb = statistics.median(r[1] for r in results[KINDS[0]])
    print(f"== {ARRAY_BYTES >> 20} MB array, {WORKERS} workers, {METHOD}")
    print(f"   {'':26} {'start-up':>9} {'':6} {'memory':>9}")
    for kind, samples in results.items():
        seconds = statistics.median(s for s, _ in samples)
        mb = statistics.median(m for _, m in samples)
        speed, memory = base_s / seconds, base_mb / mb
        print(f"   {kind:26} {seconds:8.2f}s {speed:5.2f}x {mb:7.0f} MB {memory:5.2f}x")


if __name__ == "__main__":
    main()
