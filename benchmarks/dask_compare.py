"""conveyor on Dask against Dask's own client, on a 2-worker LocalCluster, in one run.

Three comparisons, each alternating the engines and taking the median of the repeats:

- tiny tasks (``x*x``): ``WorkerPool(backend="dask").map`` over 200,000 ints, against
  ``client.map`` with one task per item (over 4,000 items: at ~600 tasks/s the full input
  would take minutes, and its rate does not depend on the count) and against a
  hand-chunked ``client.map`` over lists of 100 items (the full 200,000);
- lazy input: ``imap`` over a 10-million-item generator, take 1,000, stop: the parent's
  RSS growth and how many items were read (``client.map`` refuses generators);
- round trip: sequential ``submit(...).result()``, conveyor's against a bare
  ``client.submit(..., pure=False).result()``.

Run from the repository root (the workers import ``benchmarks.tasks``)::

    python -m benchmarks.dask_compare            # about two minutes
    python -m benchmarks.dask_compare --quick

It writes ``benchmarks/results/dask.json`` (every sample) and prints the table that
``docs/scale-out.md`` quotes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import psutil

import conveyor

from . import tasks


def _rate(items: int, run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return items / (time.perf_counter() - started)


def tiny_tasks(client: Any, pool: conveyor.WorkerPool, n: int, n_per_item: int, repeats: int):
    data = list(range(n))
    expected = [x * x for x in data]
    chunks = [data[i : i + 100] for i in range(0, n, 100)]
    small = data[:n_per_item]

    def per_item() -> None:
        futures = client.map(tasks.square, small, pure=False)
        assert client.gather(futures) == expected[:n_per_item]
        del futures

    def hand_chunked() -> None:
        futures = client.map(tasks.square_all, chunks, pure=False)
        out = [y for part in client.gather(futures) for y in part]
        assert out == expected
        del futures

    def conveyor_map() -> None:
        assert pool.map(tasks.square, data) == expected

    samples: dict[str, list[float]] = {
        "client.map per item": [],
        "client.map, lists of 100": [],
        "conveyor map": [],
    }
    conveyor_map()  # warm: the first map learns the task's cost
    for _ in range(repeats):
        samples["client.map per item"].append(_rate(n_per_item, per_item))
        samples["client.map, lists of 100"].append(_rate(n, hand_chunked))
        samples["conveyor map"].append(_rate(n, conveyor_map))
    return samples


def lazy_input(pool: conveyor.WorkerPool, take: int, size: int) -> dict[str, float]:
    read = 0

    def endless():
        nonlocal read
        for i in range(size):
            read = i + 1
            yield i

    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    results = pool.imap(tasks.square, endless())
    for count, _ in enumerate(results, 1):
        if count % 100 == 0:
            peak = max(peak, process.memory_info().rss)
        if count >= take:
            break
    results.cancel()
    peak = max(peak, process.memory_info().rss)
    return {"rss_growth_mb": (peak - before) / 1e6, "items_read": read, "taken": take}


def round_trip(client: Any, pool: conveyor.WorkerPool, calls: int, repeats: int):
    def bare() -> None:
        for i in range(calls):
            assert client.submit(tasks.square, i, pure=False).result() == i * i

    def ours() -> None:
        for i in range(calls):
            assert pool.submit(tasks.square, i).result() == i * i

    samples: dict[str, list[float]] = {"client.submit().result()": [], "conveyor submit": []}
    bare(), ours()  # warm both paths
    for _ in range(repeats):
        samples["client.submit().result()"].append(1e3 / _rate(calls, bare))
        samples["conveyor submit"].append(1e3 / _rate(calls, ours))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results", "dask.json"))
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    n, n_per_item, repeats, calls = (200_000, 4_000, 5, 300)
    if args.quick:
        n, n_per_item, repeats, calls = (50_000, 1_000, 2, 100)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
        "sizes": {"tiny": n, "per_item": n_per_item, "repeats": repeats, "calls": calls},
    }
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
        conveyor.WorkerPool(backend="dask", client=client) as pool,
    ):
        report["tiny"] = tiny_tasks(client, pool, n, n_per_item, repeats)
        report["round_trip_ms"] = round_trip(client, pool, calls, repeats)
        report["lazy"] = lazy_input(pool, 1_000, 10_000_000)
        report["statistics"] = {"chunks_sent": pool.statistics().chunks_sent}
    report["load_after"] = os.getloadavg()
    _print(report)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)


def _print(report: dict[str, Any]) -> None:
    tiny = {k: statistics.median(v) for k, v in report["tiny"].items()}
    base_item, base_chunk = tiny["client.map per item"], tiny["client.map, lists of 100"]
    print("tiny tasks, x*x (items/s, median)")
    for name, value in tiny.items():
        print(
            f"  {name:28} {value:12,.0f}   {value / base_item:7.1f}x per item"
            f"   {value / base_chunk:6.2f}x lists of 100"
        )
    trip = {k: statistics.median(v) for k, v in report["round_trip_ms"].items()}
    bare = trip["client.submit().result()"]
    print("round trip (ms per call, median)")
    for name, value in trip.items():
        print(f"  {name:28} {value:8.2f}   {value / bare:5.2f}x bare")
    lazy = report["lazy"]
    print(
        f"lazy input: 10M-item generator, take {lazy['taken']:,}: parent RSS grew "
        f"{lazy['rss_growth_mb']:.1f} MB, {lazy['items_read']:,} items read"
    )


if __name__ == "__main__":
    main()
