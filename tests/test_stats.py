"""stats(): counts that mean what their names say, and a report people can read."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import time

import pytest

import conveyor
import tasks


def _settled(pool, predicate, timeout_s: float = 20.0):
    """The pool's stats once ``predicate`` holds (tasks still running settle first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = pool.stats()
        if predicate(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"stats never settled: {stats!r}")
        time.sleep(0.01)


def test_print_stats_gives_a_short_report_with_wall_clock_start():
    with conveyor.WorkerPool(2) as pool:
        pool.map(tasks.square, range(1000))
        stats = pool.stats()
    report = str(stats)
    lines = report.splitlines()
    assert lines[0].startswith("process pool of 2 workers, started ")
    assert "1,000 submitted, 1,000 done" in report
    assert all(len(line) <= 120 for line in lines), report
    assert len([line for line in lines if line.lstrip().startswith("worker ")]) == 2
    # started_at is wall-clock time, not a monotonic clock value
    assert abs(stats.started_at - time.time()) < 600
    assert datetime.datetime.fromtimestamp(stats.started_at).isoformat(" ", "seconds") in report
    assert all(abs(w.started_at - time.time()) < 600 for w in stats.workers)


@pytest.mark.parametrize("ordered", [True, False])
def test_results_read_ahead_for_a_dropped_iterator_are_counted_as_discarded(ordered):
    with conveyor.WorkerPool(2) as pool:
        first = list(
            itertools.islice(pool.imap(tasks.square, itertools.count(), ordered=ordered), 5)
        )
        assert len(first) == 5
        stats = _settled(
            pool, lambda s: s.tasks_done == s.tasks_submitted - s.tasks_cancelled - s.tasks_failed
        )
    assert stats.tasks_done > 5  # the input was read ahead of the consumer
    assert stats.tasks_done - stats.results_discarded == 5
    assert f"{stats.results_discarded:,} of them read ahead, results discarded" in str(stats)


def test_an_executor_map_closed_early_counts_what_it_did_not_hand_out():
    with conveyor.ProcessPoolExecutor(2) as ex:
        results = ex.map(tasks.square, range(20_000))
        taken = [next(results) for _ in range(3)]
        results.close()
        stats = _settled(
            ex, lambda s: s.tasks_done == s.tasks_submitted - s.tasks_cancelled - s.tasks_failed
        )
    assert taken == [0, 1, 4]
    assert stats.tasks_done - stats.results_discarded == 3


def test_a_fully_consumed_map_discards_nothing():
    with conveyor.WorkerPool(2) as pool:
        assert sum(pool.imap(tasks.square, iter(range(5000)))) == sum(x * x for x in range(5000))
        stats = pool.stats()
    assert stats.results_discarded == 0
    assert stats.tasks_done == 5000


def test_statistics_is_on_every_pool_and_stats_is_its_alias():
    for cls in (
        conveyor.Pool,
        conveyor.ThreadPool,
        conveyor.ProcessPoolExecutor,
        conveyor.ThreadPoolExecutor,
        conveyor.WorkerPool,
    ):
        assert cls.stats is cls.statistics, cls
    with conveyor.WorkerPool(2, backend="thread") as pool:
        pool.map(abs, range(10))
        snapshot = pool.statistics()
        assert snapshot.tasks_done == 10
        with pytest.raises(dataclasses.FrozenInstanceError):
            snapshot.tasks_done = 0  # type: ignore[misc]
