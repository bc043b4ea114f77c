"""Sizes of every workload, for the full run and for --quick."""

from __future__ import annotations

from dataclasses import dataclass, replace

WORKERS = 2
# The "callers" and "workers" workloads run each engine at these pool sizes (on a
# 2-core machine, 8 and 32 workers are oversubscribed on purpose: that is the case).
MANY_WORKER_COUNTS = (2, 8, 32)
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    repeats: int  # timed runs per figure, after one warm-up; the median is reported
    figure_budget_s: float  # stop repeating a figure once its runs took this long
    case_timeout_s: float  # one engine on one workload, in its own subprocess
    tiny_tasks: int = 200_000
    tiny_tuned_chunksize: int = 5000
    tiny_warmup_tasks: int = 10_000
    round_trips: int = 2000
    round_trip_warmups: int = 50
    callers_threads: int = 16
    callers_calls_each: int = 500  # sequential round trips per caller thread
    callers_warmup_calls_each: int = 10
    workers_tasks: int = 1_000_000
    workers_warmup_tasks: int = 10_000
    # An engine whose default chunking would take longer than this on the full input
    # (projected from its warm-up) maps a shorter prefix instead, and each pool size
    # stops repeating once its runs took this long: tasks/s is a rate, and the peers
    # at chunksize 1 (~10,000 tasks/s) would otherwise spend minutes per pool size.
    workers_run_cap_s: float = 5.0
    cpu_tasks: int = 16
    cpu_task_s: float = 0.25
    payload_arrays: int = 64
    payload_array_bytes: int = 8 * MB
    startup_repeats: int = 7
    io_tasks: int = 2000
    io_sleep_s: float = 0.005
    io_threads: int = 32
    lazy_source_items: int = 10_000_000
    lazy_take: int = 1000
    lazy_stall_s: float = 3.0
    # Eager engines would read all 10 M items (several GB of futures); the source stops
    # feeding them past this growth, which is already the answer ("eats > 1 GB").
    lazy_rss_cap_bytes: int = 1024 * MB
    physical_repeats: int = 5


FULL = Sizes(repeats=5, figure_budget_s=45.0, case_timeout_s=300.0)

QUICK = replace(
    FULL,
    repeats=1,
    figure_budget_s=5.0,
    case_timeout_s=60.0,
    tiny_tasks=20_000,
    tiny_warmup_tasks=1000,
    round_trips=200,
    round_trip_warmups=10,
    callers_calls_each=50,
    callers_warmup_calls_each=2,
    workers_tasks=50_000,
    workers_warmup_tasks=2000,
    workers_run_cap_s=2.0,
    cpu_tasks=4,
    payload_arrays=8,
    startup_repeats=2,
    io_tasks=320,
    lazy_stall_s=1.0,
    lazy_rss_cap_bytes=256 * MB,
    physical_repeats=2,
)


def sizes_for(quick: bool) -> Sizes:
    return QUICK if quick else FULL
