"""Queues side by side: conveyor.Queue, multiprocessing.Queue and faster-fifo.

Three workloads, each run ``--repeat`` times per engine, the median reported with its
ratio to ``multiprocessing.Queue`` measured in the same run:

- 1 -> 1: one producer process puts 500,000 small items, one consumer process gets them;
- 4 -> 4: four producers put 125,000 each, four consumers get 125,000 each;
- arrays: one producer puts 64 NumPy arrays of 8 MB, one consumer gets them (GB/s).

Processes are forked and wait on an event, so their start is not timed: the clock runs
from the event to the last consumer's exit. Run from the repository root::

    python -m benchmarks.queues              # about two minutes
    python -m benchmarks.queues --quick
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import conveyor

CTX = multiprocessing.get_context("fork")
ARRAY_BYTES = 8 << 20


def _make_mp(maxsize: int = 0) -> Any:
    return CTX.Queue(maxsize)


def _make_conveyor(maxsize: int = 0) -> Any:
    return conveyor.Queue(maxsize)


def _make_faster_fifo(maxsize: int = 0) -> Any:
    import faster_fifo

    return faster_fifo.Queue(max_size_bytes=256 << 20)


ENGINES: dict[str, Callable[[], Any]] = {
    "multiprocessing.Queue": _make_mp,
    "conveyor.Queue": _make_conveyor,
    "faster_fifo.Queue": _make_faster_fifo,
}


def _produce(q: Any, go: Any, count: int, kind: str) -> None:
    item: Any = np.ones(ARRAY_BYTES // 8) if kind == "array" else None
    go.wait()
    for i in range(count):
        q.put(item if kind == "array" else (i, "item"))


def _consume(q: Any, go: Any, count: int) -> None:
    go.wait()
    for _ in range(count):
        q.get(timeout=120)


def run_once(
    make: Callable[[], Any], producers: int, consumers: int, items: int, kind: str
) -> float:
    q = make()
    go = CTX.Event()
    each_put, each_get = items // producers, items // consumers
    procs = [CTX.Process(target=_produce, args=(q, go, each_put, kind)) for _ in range(producers)]
    procs += [CTX.Process(target=_consume, args=(q, go, each_get)) for _ in range(consumers)]
    for p in procs:
        p.start()
    time.sleep(0.2)  # every process started and waiting
    started = time.perf_counter()
    go.set()
    for p in procs:
        p.join(300)
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed ({p.exitcode})")
    return time.perf_counter() - started


WORKLOADS = {
    "1 -> 1, 500,000 small items (items/s)": (1, 1, 500_000, "small"),
    "4 -> 4, 500,000 small items (items/s)": (4, 4, 500_000, "small"),
    "64 arrays of 8 MB, 1 -> 1 (GB/s)": (1, 1, 64, "array"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the items, one run")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    for title, (producers, consumers, items, kind) in WORKLOADS.items():
        if args.quick and kind == "small":
            items //= 10
        print(f"== {title}")
        # The engines take turns, one run each per round, so that a change in the
        # machine's load during the workload falls on all of them alike.
        times: dict[str, list[float]] = {}
        for _ in range(repeat):
            for name, make in ENGINES.items():
                if name in times and not times[name]:
                    continue  # unavailable
                try:
                    seconds = run_once(make, producers, consumers, items, kind)
                except ImportError as exc:
                    print(f"   {name:24} unavailable ({exc})")
                    times[name] = []
                    continue
                times.setdefault(name, []).append(seconds)
        baseline = None
        for name, samples in times.items():
            if not samples:
                continue
            seconds = statistics.median(samples)
            rate = items * ARRAY_BYTES / 1e9 / seconds if kind == "array" else items / seconds
            baseline = baseline or rate
            print(f"   {name:24} {rate:12,.2f}  {rate / baseline:5.2f}x")


if __name__ == "__main__":
    main()
