"""The workloads, written once against the adapter interface (adapters/base.py).

Each function opens the engine's pool, warms it up (workers started, modules imported),
then times the work and returns ``{figure key: figure}``. Results are checked, not timed:
an engine that returns wrong answers gets no figure.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from . import tasks
from .adapters import THREAD, Engine, Unsupported
from .config import MANY_WORKER_COUNTS, MB, WORKERS, Sizes
from .measure import check, figure, rate_figure, repeat_timed, scaled_figure, timed

Figures = dict[str, Any]
SERIAL_MIN_REPEATS = 3


@dataclass(frozen=True)
class CaseContext:
    sizes: Sizes
    cpu_loops: int  # burn_cpu loops for one ~cpu_task_s task, calibrated by the parent

    def repeat(self, run: Callable[[], Any]) -> list[float]:
        return repeat_timed(run, self.sizes.repeats, self.sizes.figure_budget_s)


def tiny_tasks(engine: Engine, ctx: CaseContext) -> Figures:
    items = list(range(ctx.sizes.tiny_tasks))
    tuned = ctx.sizes.tiny_tuned_chunksize

    def run(chunksize: int | None) -> None:
        results = pool.map(tasks.square, items, chunksize)
        check(len(results) == len(items) and results[-1] == items[-1] ** 2, "squares")

    with engine.open(WORKERS) as pool:
        pool.map(tasks.square, items[: ctx.sizes.tiny_warmup_tasks])
        default_s = ctx.repeat(lambda: run(None))
        tuned_s = ctx.repeat(lambda: run(tuned))
        return {
            "tiny_default_tasks_per_s": rate_figure(len(items), default_s),
            "tiny_tuned_tasks_per_s": rate_figure(len(items), tuned_s, chunksize=tuned),
        }


def round_trip(engine: Engine, ctx: CaseContext) -> Figures:
    count = ctx.sizes.round_trips

    def run(n: int) -> None:
        for i in range(n):
            check(pool.call(tasks.square, i) == i * i, "square")

    with engine.open(WORKERS) as pool:
        run(ctx.sizes.round_trip_warmups)
        samples = ctx.repeat(lambda: run(count))
        return {"round_trip_us": scaled_figure(1e6 / count, samples)}


def cpu_serial(ctx: CaseContext) -> Figures:
    """The baseline for speedup: the same tasks, one after another, in this process."""
    loops = [ctx.cpu_loops] * ctx.sizes.cpu_tasks
    # Every engine's speedup divides by this one figure: worth a few runs even in --quick.
    repeats = max(ctx.sizes.repeats, SERIAL_MIN_REPEATS)
    samples = repeat_timed(lambda: [tasks.burn_cpu(n) for n in loops], repeats, float("inf"))
    return {"cpu_serial_s": scaled_figure(1.0, samples, loops_per_task=ctx.cpu_loops)}


def cpu_bound(engine: Engine, ctx: CaseContext) -> Figures:
    loops = [ctx.cpu_loops] * ctx.sizes.cpu_tasks
    expected = tasks.burn_cpu(ctx.cpu_loops)

    def run() -> None:
        check(pool.map(tasks.burn_cpu, loops) == [expected] * len(loops), "burn_cpu")

    with engine.open(WORKERS) as pool:
        # Warm up on tasks of the measured size: an engine that sizes chunks from the
        # task times it has seen should not be misled by a short warm-up task.
        pool.map(tasks.burn_cpu, [ctx.cpu_loops] * WORKERS)
        samples = ctx.repeat(run)
        # Speedup and efficiency need the serial time from another case: see report.py.
        return {"cpu_parallel_s": scaled_figure(1.0, samples)}


def payloads(engine: Engine, ctx: CaseContext) -> Figures:
    count = ctx.sizes.payload_arrays
    elements = ctx.sizes.payload_array_bytes // np.dtype(np.float64).itemsize
    # np.full writes every page, so no engine is handed lazily-zeroed memory.
    arrays = [np.full(elements, float(i)) for i in range(count)]
    total_bytes = count * ctx.sizes.payload_array_bytes

    def send_in() -> None:
        check(pool.map(tasks.first_element, arrays) == [float(i) for i in range(count)], "[0]")

    def round_trip() -> None:
        back = pool.map(tasks.identity, arrays)
        check(len(back) == count and back[-1].shape == (elements,), "shape")
        check(float(back[-1][-1]) == count - 1, "content")

    with engine.open(WORKERS) as pool:
        pool.map(tasks.identity, arrays[:WORKERS])
        in_s = ctx.repeat(send_in)
        round_trip_s = ctx.repeat(round_trip)
        # GB/s of array data handed to the pool (1 GB = 1e9 bytes); the round trip moves
        # the same arrays back too, so it is the same numerator over a longer time.
        return {
            "payload_in_gb_s": rate_figure(total_bytes / 1e9, in_s),
            "payload_round_trip_gb_s": rate_figure(total_bytes / 1e9, round_trip_s),
        }


def startup(engine: Engine, ctx: CaseContext) -> Figures:
    return {
        "startup_ms": _startup_figure(engine, ctx, start_method=None),
        "startup_forkserver_ms": _startup_figure(engine, ctx, start_method="forkserver"),
    }


def _startup_figure(engine: Engine, ctx: CaseContext, start_method: str | None) -> Any:
    def cycle() -> bool:
        with engine.open(WORKERS, start_method=start_method) as pool:
            return pool.call(tasks.was_forked, None)

    try:
        # The first cycle pays for imports (and for starting a forkserver): kept apart.
        cold_s, forked = timed(cycle)
    except Unsupported as reason:
        return {"status": "n/a", "detail": str(reason)}
    samples = repeat_timed(cycle, ctx.sizes.startup_repeats, ctx.sizes.figure_budget_s)
    how = "fork" if forked else "fresh interpreter"
    return scaled_figure(1e3, samples, cold_ms=cold_s * 1e3, workers_started_by=how)


def io_bound(engine: Engine, ctx: CaseContext) -> Figures:
    sizes = ctx.sizes
    waits = [sizes.io_sleep_s] * sizes.io_tasks
    ideal_s = sizes.io_tasks * sizes.io_sleep_s / sizes.io_threads

    with engine.open(sizes.io_threads, backend=THREAD) as pool:
        pool.map(tasks.sleep_io, waits[: sizes.io_threads])
        samples = ctx.repeat(lambda: check(pool.map(tasks.sleep_io, waits) == waits, "sleeps"))
        median_s = statistics.median(samples)
        return {
            "io_ms": scaled_figure(1e3, samples, ideal_ms=ideal_s * 1e3),
            "io_efficiency": figure(100 * ideal_s / median_s, samples),
        }


def many_callers(engine: Engine, ctx: CaseContext) -> Figures:
    """Many threads, each doing sequential round trips, on pools of several sizes.

    Also at 2 workers with every engine's workers started by a forkserver: workers made
    by a plain fork share the parent's memory, which makes each round trip cheaper for
    every engine alike (see docs/performance.md), so engines whose default start method
    differs are compared like for like there.
    """
    figures: Figures = {
        f"callers_w{workers}_per_s": _callers_figure(engine, ctx, workers)
        for workers in MANY_WORKER_COUNTS
    }
    try:
        figures["callers_forkserver_w2_per_s"] = _callers_figure(engine, ctx, 2, "forkserver")
    except Unsupported as reason:
        figures["callers_forkserver_w2_per_s"] = {"status": "n/a", "detail": str(reason)}
    return figures


def _callers_figure(
    engine: Engine, ctx: CaseContext, workers: int, start_method: str | None = None
) -> Figures:
    sizes = ctx.sizes
    with engine.open(workers, start_method=start_method) as pool:
        if not pool.concurrent_calls:
            raise Unsupported("its round-trip API is not safe to call from many threads")
        _run_callers(pool, sizes.callers_threads, sizes.callers_warmup_calls_each)
        samples = ctx.repeat(
            lambda: _run_callers(pool, sizes.callers_threads, sizes.callers_calls_each)
        )
    total = sizes.callers_threads * sizes.callers_calls_each
    return rate_figure(total, samples, threads=sizes.callers_threads)


def _run_callers(pool: Any, threads: int, calls_each: int) -> None:
    """``threads`` threads, released together, each doing ``calls_each`` round trips."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def caller(offset: int) -> None:
        start.wait()
        try:
            for i in range(offset, offset + calls_each):
                check(pool.call(tasks.square, i) == i * i, "square")
        except BaseException as error:  # re-raised by the main thread, below
            errors.append(error)

    callers = [
        threading.Thread(target=caller, args=(n * calls_each,), name=f"bench-caller-{n}")
        for n in range(threads)
    ]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    if errors:
        raise errors[0]


def many_workers(engine: Engine, ctx: CaseContext) -> Figures:
    """Tiny tasks through ``map`` (default chunking) on pools of several sizes."""
    items = list(range(ctx.sizes.workers_tasks))
    return {
        f"workers_w{workers}_tasks_per_s": _workers_figure(engine, ctx, items, workers)
        for workers in MANY_WORKER_COUNTS
    }


def _workers_figure(engine: Engine, ctx: CaseContext, items: list[int], workers: int) -> Figures:
    sizes = ctx.sizes
    warmup = items[: sizes.workers_warmup_tasks]

    def run(chosen: list[int]) -> None:
        results = pool.map(tasks.square, chosen)
        check(len(results) == len(chosen) and results[-1] == chosen[-1] ** 2, "squares")

    with engine.open(workers) as pool:
        # Workers may still be starting when open() returns: a first small map waits for
        # them, so the timed warm-up below projects the map's rate, not the start-up.
        run(items[: 4 * workers])
        warmup_s, _ = timed(lambda: run(warmup))
        measured = _items_within(items, len(warmup) / warmup_s, sizes.workers_run_cap_s)
        budget_s = min(sizes.figure_budget_s, sizes.workers_run_cap_s)
        samples = repeat_timed(lambda: run(measured), sizes.repeats, budget_s)
    return rate_figure(len(measured), samples, tasks=len(measured))


def _items_within(items: list[int], rate_per_s: float, cap_s: float) -> list[int]:
    """All of ``items``, or the prefix that the warm-up's rate says takes ``cap_s``."""
    affordable = int(rate_per_s * cap_s)
    return items if affordable >= len(items) else items[: max(affordable, 1)]


class CountingSource:
    """A long generator that counts what the engine has read from it.

    It stops early (``capped``) once the parent's RSS has grown by ``rss_cap_bytes``, so
    an engine that reads its whole input up front shows as "capped" instead of using
    many GB of memory on a shared machine.
    """

    RSS_CHECK_EVERY_ITEMS = 4096

    def __init__(self, items: int, rss_cap_bytes: int, base_rss_bytes: int) -> None:
        self.items = items
        self.read = 0
        self.capped = False
        self._rss_limit_bytes = base_rss_bytes + rss_cap_bytes

    def __iter__(self) -> Iterator[int]:
        process = psutil.Process()
        for i in range(self.items):
            if (
                i % self.RSS_CHECK_EVERY_ITEMS == 0
                and process.memory_info().rss > self._rss_limit_bytes
            ):
                self.capped = True
                return
            self.read += 1
            yield i


def _settled_rss_bytes() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _imap_over_counting_source(pool, sizes) -> tuple[CountingSource, Iterator, int]:
    """Warm the pool up, then start its lazy map over a counting 10 M-item source."""
    pool.map(tasks.square, list(range(100)))
    base_rss = _settled_rss_bytes()
    source = CountingSource(sizes.lazy_source_items, sizes.lazy_rss_cap_bytes, base_rss)
    return source, pool.imap(tasks.square, iter(source)), base_rss


def lazy_take(engine: Engine, ctx: CaseContext) -> Figures:
    sizes = ctx.sizes
    with engine.open(WORKERS) as pool:
        source, results, base_rss = _imap_over_counting_source(pool, sizes)
        taken = list(itertools.islice(results, sizes.lazy_take))
        growth_mb = (psutil.Process().memory_info().rss - base_rss) / MB
        read = source.read
        pool.abandon(results)
    check(taken == [i * i for i in range(sizes.lazy_take)], "first squares in order")
    return {
        "lazy_rss_growth_mb": figure(growth_mb, [growth_mb], capped=source.capped),
        "lazy_items_read": figure(read, [read], capped=source.capped),
    }


def lazy_stall(engine: Engine, ctx: CaseContext) -> Figures:
    sizes = ctx.sizes
    with engine.open(WORKERS) as pool:
        source, results, base_rss = _imap_over_counting_source(pool, sizes)
        check(next(results) == 0, "first square")
        read_at_first = source.read
        time.sleep(sizes.lazy_stall_s)  # the stall is the workload, not synchronisation
        read_after = source.read
        growth_mb = (psutil.Process().memory_info().rss - base_rss) / MB
        pool.abandon(results)
    return {
        "lazy_stall_read_at_first": figure(read_at_first, [read_at_first], capped=source.capped),
        "lazy_stall_items_read": figure(
            read_after, [read_after], capped=source.capped, rss_growth_mb=growth_mb
        ),
    }


RUNNERS: dict[str, Callable[[Engine, CaseContext], Figures]] = {
    "tiny": tiny_tasks,
    "latency": round_trip,
    "callers": many_callers,
    "workers": many_workers,
    "cpu": cpu_bound,
    "payload": payloads,
    "startup": startup,
    "io": io_bound,
    "lazy": lazy_take,
    "lazy_stall": lazy_stall,
}
