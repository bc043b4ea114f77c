"""Pipelines side by side: conveyor.Pipeline against pypeln and a hand-written chain.

Workloads (each engine in turns, ``--repeat`` rounds, the median reported):

- **tiny**: three stages of tiny functions (``x + 1``, ``2 * x``, ``-x``), process
  stages, over ``--items`` integers, in items/s: conveyor against pypeln's
  ``pl.process`` stages and the chain people write by hand, one process per stage
  between ``multiprocessing.Queue``s. pypeln runs a twentieth of the items (at its rate
  the full run takes minutes); its rate is what is compared.
- **cpu**: two CPU-bound process stages (~1 ms and ~0.5 ms of arithmetic an item) on
  every core: efficiency = the same work's serial time / (cores x the pipeline's wall
  time), medians of 5 rounds in turns, the stages' start-up included (not the fork
  server's, started once a program).
- **async**: 1,000 coroutines sleeping 50 ms through a stage of concurrency 100: the
  time against the ideal 0.5 s.

Run from the repository root, not while tests run (the machine is shared)::

    PYTHONPATH=src python -m benchmarks.pipelines            # about two minutes
    PYTHONPATH=src python -m benchmarks.pipelines --quick
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable

import conveyor

CTX = multiprocessing.get_context("fork")
_STOP = None


def inc(x: int) -> int:
    return x + 1


def dbl(x: int) -> int:
    return 2 * x


def neg(x: int) -> int:
    return -x


def spin(x: int, rounds: int = 20_000) -> int:
    total = 0
    for i in range(rounds):
        total += i * x
    return total


def spin_half(x: int) -> int:
    return spin(x, 10_000)


async def nap(x: int) -> int:
    await asyncio.sleep(0.05)
    return x


# --- tiny: three stages over many items --------------------------------------------------


def tiny_conveyor(n: int) -> float:
    started = time.perf_counter()
    pipeline = (
        conveyor.Pipeline(range(n))
        .map(inc, backend="process")
        .map(dbl, backend="process")
        .map(neg, backend="process")
    )
    count = sum(1 for _ in pipeline)
    seconds = time.perf_counter() - started
    assert count == n
    return n / seconds


def _chain_worker(fn: Callable[[int], int], inbox: object, outbox: object) -> None:
    while True:
        item = inbox.get()  # type: ignore[attr-defined]
        if item is _STOP:
            outbox.put(_STOP)  # type: ignore[attr-defined]
            return
        outbox.put(fn(item))  # type: ignore[attr-defined]


def tiny_queue_chain(n: int) -> float:
    queues = [CTX.Queue(1000) for _ in range(4)]
    stages = [
        CTX.Process(target=_chain_worker, args=(fn, queues[i], queues[i + 1]))
        for i, fn in enumerate((inc, dbl, neg))
    ]
    for stage in stages:
        stage.start()
    started = time.perf_counter()

    def feed() -> None:
        for i in range(n):
            queues[0].put(i)
        queues[0].put(_STOP)

    feeder = threading.Thread(target=feed)
    feeder.start()
    count = 0
    while queues[3].get() is not _STOP:
        count += 1
    seconds = time.perf_counter() - started
    feeder.join()
    for stage in stages:
        stage.join()
    assert count == n
    return n / seconds


def tiny_pypeln(n: int) -> float:
    import pypeln as pl

    n = max(1000, n // 20)
    started = time.perf_counter()
    stage = pl.process.map(inc, range(n), workers=1, maxsize=1000)
    stage = pl.process.map(dbl, stage, workers=1, maxsize=1000)
    stage = pl.process.map(neg, stage, workers=1, maxsize=1000)
    count = sum(1 for _ in stage)
    seconds = time.perf_counter() - started
    assert count == n
    return n / seconds


# --- cpu and async ---------------------------------------------------------------------


def cpu_serial_s(n: int) -> float:
    started = time.perf_counter()
    for x in range(n):
        spin_half(spin(x))
    return time.perf_counter() - started


def cpu_pipeline_s(n: int) -> float:
    cores = conveyor.available_cpus()
    started = time.perf_counter()
    pipeline = (
        conveyor.Pipeline(range(n))
        .map(spin, backend="process", workers=cores)
        .map(spin_half, backend="process", workers=cores)
    )
    count = sum(1 for _ in pipeline)
    assert count == n
    return time.perf_counter() - started


def _both(x: int) -> int:
    return spin_half(spin(x))


def cpu_pool_s(n: int) -> float:
    """The machine's parallel reference: one pool running both functions as one task."""
    started = time.perf_counter()
    with conveyor.WorkerPool(conveyor.available_cpus()) as pool:
        pool.map(_both, range(n))
    return time.perf_counter() - started


def cpu_efficiency(n: int, rounds: int) -> tuple[float, float]:
    """The same work serially in this process, in one pool, and through the pipeline,
    in turns; the medians compared: (efficiency against serial / cores, against the
    pool). A first pipeline, not counted, starts the fork server (once a program)."""
    cpu_pipeline_s(max(10, n // 20))
    serial, pool, wall = [], [], []
    for _ in range(rounds):
        serial.append(cpu_serial_s(n))
        pool.append(cpu_pool_s(n))
        wall.append(cpu_pipeline_s(n))
    cores = conveyor.available_cpus()
    pipeline = statistics.median(wall)
    return statistics.median(serial) / (cores * pipeline), statistics.median(pool) / pipeline


def async_ratio(_n: int) -> float:
    started = time.perf_counter()
    report = conveyor.Pipeline(range(1000)).map(nap, workers=100).run()
    assert report.emitted == 1000
    return (time.perf_counter() - started) / 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the items, one round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    n = args.items // 10 if args.quick else args.items

    print(f"== tiny: 3 process stages over {n:,} items (items/s)")
    engines = {
        "conveyor.Pipeline": tiny_conveyor,
        "multiprocessing.Queue chain": tiny_queue_chain,
        "pypeln (a twentieth of the items)": tiny_pypeln,
    }
    figures: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeat):
        for name, run in engines.items():
            figures[name].append(run(n))
    ours = statistics.median(figures["conveyor.Pipeline"])
    for name, samples in figures.items():
        figure = statistics.median(samples)
        print(f"   {name:36} {figure:12,.0f}   conveyor is {ours / figure:5.2f}x")

    print("== cpu: 2 CPU-bound process stages on every core, 3,000 items (1.0 = ideal)")
    efficiency, against_pool = cpu_efficiency(300 if args.quick else 3000, 1 if args.quick else 5)
    print(f"   conveyor.Pipeline, against serial    {efficiency:12.2f}")
    print(f"   ... against one pool of both stages  {against_pool:12.2f}")

    print("== async: 1,000 x 50 ms sleeps, concurrency 100 (time / ideal 0.5 s)")
    samples = [async_ratio(0) for _ in range(repeat)]
    print(f"   conveyor.Pipeline                    {statistics.median(samples):12.2f}x")


if __name__ == "__main__":
    main()
