"""What is measured: the workloads and the figures each one reports.

The case runner, the table and the chart all read this one list, so a figure's label,
unit and direction ("higher is better") are written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MANY_WORKER_COUNTS

# Which pools a workload opens: the engines' process pools, their thread pools, or none
# (the physical references, and the serial CPU baseline).
PROCESS_ENGINES = "process"
THREAD_ENGINES = "thread"
NO_ENGINE = "none"


@dataclass(frozen=True)
class Workload:
    name: str
    short: str  # chart panel titles
    title: str  # table headings; {fields} come from the run's sizes
    engines: str


@dataclass(frozen=True)
class Figure:
    key: str
    workload: str
    label: str
    unit: str
    higher_is_better: bool
    ratio: bool = True  # show value / multiprocessing.Pool's value
    chart: bool = True
    log_scale: bool = False  # peers differ by orders of magnitude


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("physical", "physical", "physical references (this machine)", NO_ENGINE),
        Workload(
            "tiny",
            "tiny tasks",
            "tiny tasks: {tiny_tasks:,} calls of x*x through map",
            PROCESS_ENGINES,
        ),
        Workload(
            "latency",
            "round trip",
            "round trip: {round_trips:,} sequential apply_async().get() / submit().result()",
            PROCESS_ENGINES,
        ),
        Workload(
            "callers",
            "16 callers",
            "many callers: {callers_threads} threads, each {callers_calls_each:,} sequential "
            "apply_async().get() / submit().result(), at {many_worker_counts} workers",
            PROCESS_ENGINES,
        ),
        Workload(
            "workers",
            "tiny tasks, many workers",
            "many workers: {workers_tasks:,} calls of x*x through map, default chunking, at "
            "{many_worker_counts} workers",
            PROCESS_ENGINES,
        ),
        Workload(
            "cpu",
            "CPU-bound",
            "CPU-bound: {cpu_tasks} pure-Python tasks of ~{cpu_task_s} s (serial: {serial_s})",
            PROCESS_ENGINES,
        ),
        Workload(
            "payload",
            "8 MB arrays",
            "large payloads: {payload_arrays} NumPy arrays of {payload_mb} MB",
            PROCESS_ENGINES,
        ),
        Workload(
            "startup",
            "start-up",
            "start-up: create a pool, run one task, shut down",
            PROCESS_ENGINES,
        ),
        Workload(
            "io",
            "I/O-bound, 32 threads",
            "I/O-bound: {io_tasks:,} tasks sleeping {io_sleep_ms} ms on {io_threads} threads "
            "(ideal {io_ideal_ms} ms)",
            THREAD_ENGINES,
        ),
        Workload(
            "lazy",
            "lazy imap, take 1,000",
            "lazy input: imap over a {lazy_source_items:,}-item generator, take {lazy_take:,}",
            PROCESS_ENGINES,
        ),
        Workload(
            "lazy_stall",
            "lazy imap, stalled consumer",
            "lazy input, consumer stalls {lazy_stall_s} s after the first result",
            PROCESS_ENGINES,
        ),
    ]
}

FIGURES: list[Figure] = [
    Figure("pickle_calls_per_s", "physical", "pickle dumps+loads of a small call", "/s", True),
    Figure("memcpy_gb_s", "physical", "memcpy of 8 MB (numpy copy)", "GB/s", True),
    Figure("pipe_gb_s", "physical", "pipe bandwidth between two processes", "GB/s", True),
    Figure("pipe_round_trip_us", "physical", "pipe ping-pong, 1 byte", "us", False),
    Figure("tiny_default_tasks_per_s", "tiny", "default chunking", "tasks/s", True, log_scale=True),
    Figure("tiny_tuned_tasks_per_s", "tiny", "chunksize 5000", "tasks/s", True, log_scale=True),
    Figure("round_trip_us", "latency", "per round trip", "us", False, log_scale=True),
    *(
        Figure(f"callers_w{n}_per_s", "callers", f"{n} workers", "round trips/s", True)
        for n in MANY_WORKER_COUNTS
    ),
    Figure(
        "callers_forkserver_w2_per_s",
        "callers",
        "2 workers, all forkserver",
        "round trips/s",
        True,
        chart=False,
    ),
    *(
        Figure(
            f"workers_w{n}_tasks_per_s", "workers", f"{n} workers", "tasks/s", True, log_scale=True
        )
        for n in MANY_WORKER_COUNTS
    ),
    Figure("cpu_parallel_s", "cpu", "wall time", "s", False, chart=False),
    Figure("cpu_speedup", "cpu", "speedup vs serial", "x", True),
    Figure("cpu_efficiency", "cpu", "efficiency", "%", True, chart=False),
    Figure("payload_in_gb_s", "payload", "in, task returns a float", "GB/s", True),
    Figure("payload_round_trip_gb_s", "payload", "round trip, task returns it", "GB/s", True),
    Figure("startup_ms", "startup", "default start method", "ms", False, log_scale=True),
    Figure("startup_forkserver_ms", "startup", "forkserver", "ms", False, log_scale=True),
    Figure("io_ms", "io", "wall time", "ms", False, chart=False),
    Figure("io_efficiency", "io", "ideal / actual", "%", True),
    Figure("lazy_rss_growth_mb", "lazy", "parent RSS growth", "MB", False, ratio=False),
    Figure("lazy_items_read", "lazy", "items read", "items", False, False, log_scale=True),
    Figure(
        "lazy_stall_read_at_first",
        "lazy_stall",
        "read by 1st result",
        "items",
        False,
        False,
        chart=False,
    ),
    Figure(
        "lazy_stall_items_read",
        "lazy_stall",
        "read by end of stall",
        "items",
        False,
        False,
        log_scale=True,
    ),
]


def figures_of(workload: str) -> list[Figure]:
    return [figure for figure in FIGURES if figure.workload == workload]


def select_workloads(only: list[str] | None) -> list[str]:
    """``--only lazy`` selects "lazy" and its variants ("lazy_stall")."""
    if not only:
        return list(WORKLOADS)
    unknown = [name for name in only if not any(_matches(w, name) for w in WORKLOADS)]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    return [w for w in WORKLOADS if any(_matches(w, name) for name in only)]


def _matches(workload: str, name: str) -> bool:
    return workload == name or workload.startswith(name + "_")
