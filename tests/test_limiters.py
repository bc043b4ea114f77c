"""CapacityLimiter and RateLimiter: one limit for every process that has it."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time

import pytest

import conveyor
import limiter_tasks
from conftest import WAIT_S

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def manager():
    with conveyor.Manager() as manager:
        yield manager


def test_twenty_processes_sharing_a_7_per_second_limit_make_7_a_second(manager):
    limiter = conveyor.RateLimiter("7/s", manager=manager)
    assert limiter.burst == 7
    out = FORK.SimpleQueue()
    start = time.monotonic() + 1.0  # every process started by then
    end = start + 10.0
    workers = [
        FORK.Process(target=limiter_tasks.call_until, args=(limiter, end, out)) for _ in range(20)
    ]
    for w in workers:
        w.start()
    calls = sorted(t for _ in workers for t in out.get())
    for w in workers:
        w.join(WAIT_S)
    # GCRA: the burst at once, then one call every 1/7 s, whoever asks.
    assert len(calls) <= 7 * (end - calls[0]) + 7 + 1
    assert len(calls) >= 7 * 10 * 0.8  # and the limit is reached, not just respected
    busiest_second = max(sum(1 for t in calls if s <= t < s + 1) for s in calls)
    assert busiest_second <= 7 + 7  # even the first second: the burst and its refill
    assert limiter.statistics().granted == len(calls)


def test_a_rate_limiter_refuses_at_once_when_its_burst_is_spent(manager):
    limiter = conveyor.RateLimiter("2/s", burst=2, manager=manager)
    assert [limiter.acquire(False) for _ in range(3)] == [True, True, False]
    assert limiter.acquire(timeout=0.01) is False  # the next slot is 0.5 s away
    started = time.monotonic()
    assert limiter.acquire(timeout=WAIT_S) is True
    assert time.monotonic() - started > 0.3
    limiter.release()  # does nothing
    stats = limiter.statistics()
    assert (stats.granted, stats.refused) == (3, 2)


@pytest.mark.parametrize("rate", ["fast", "7", "0/s", "3/fortnight"])
def test_a_rate_that_cannot_be_read_is_a_clear_error(manager, rate):
    with pytest.raises(ValueError, match="rate"):
        conveyor.RateLimiter(rate, manager=manager)


def test_a_capacity_limiter_admits_at_most_its_total_at_once(manager):
    limiter = conveyor.CapacityLimiter(3, manager=manager)
    inside = manager.dict(now=0)
    workers = [
        FORK.Process(target=limiter_tasks.hold_for_a_while, args=(limiter, inside, 10))
        for _ in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT_S)
        assert w.exitcode == 0
    assert inside["max"] == 3
    stats = limiter.statistics()
    assert (stats.granted, stats.holders, stats.total) == (80, 0, 3)
    assert stats.waited_s > 0


def test_a_permit_held_by_a_killed_process_is_given_back(manager):
    limiter = conveyor.CapacityLimiter(1, manager=manager)
    ready = FORK.Event()
    child = FORK.Process(target=limiter_tasks.take_then_die, args=(limiter, ready))
    child.start()
    assert ready.wait(WAIT_S)
    child.join(WAIT_S)
    assert child.exitcode == -signal.SIGKILL
    assert limiter.acquire(timeout=WAIT_S)
    assert limiter.available_tokens == 0


def test_limiters_reach_pool_tasks_and_the_default_manager_serves_them():
    limiter = conveyor.CapacityLimiter(2)  # no manager given: the default one
    with conveyor.WorkerPool(3) as pool:
        assert pool.map(lambda x: limiter.acquire() and (limiter.release(), x)[1], range(6)) == [
            0,
            1,
            2,
            3,
            4,
            5,
        ]
    assert limiter.statistics().granted == 6


# --- pools that obey a limiter --------------------------------------------------------


def test_a_pool_given_a_capacity_limiter_runs_at_most_that_many_tasks_at_once(manager):
    limiter = conveyor.CapacityLimiter(2, manager=manager)
    inside = manager.dict(now=0)
    with conveyor.WorkerPool(4, limiter=limiter) as pool:
        items = [(inside, i) for i in range(16)]
        assert pool.starmap(limiter_tasks.inside_for_a_while, items) == list(range(16))
    assert inside["max"] == 2
    assert limiter.available_tokens == 2  # every permit given back


def test_two_pools_sharing_a_capacity_limiter_share_its_total(manager):
    limiter = conveyor.CapacityLimiter(2, manager=manager)
    inside = manager.dict(now=0)
    one = conveyor.WorkerPool(3, limiter=limiter)
    two = conveyor.WorkerPool(3, limiter=limiter)
    with one, two:
        futures = [
            pool.submit(limiter_tasks.inside_for_a_while, inside, i)
            for i in range(12)
            for pool in (one, two)
        ]
        assert sorted(f.result(WAIT_S) for f in futures) == sorted(list(range(12)) * 2)
    assert inside["max"] <= 2


def test_a_pool_given_a_rate_limiter_starts_its_tasks_at_that_rate(manager):
    limiter = conveyor.RateLimiter("10/s", burst=2, manager=manager)
    with conveyor.WorkerPool(4, limiter=limiter) as pool:
        starts = sorted(pool.map(limiter_tasks.started_at, range(22), chunksize=1))
    # 2 at once, then one every 0.1 s: no second holds more than 10 starts and the burst
    # (11 at most; 13 allows for when workers start a task granted a moment before).
    # Measured where the tasks start, not at the grant, so a bound on the whole span
    # would hang on the first task's own start-up (it failed once at 1.78 s for 1.8).
    busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert busiest <= 13, starts
    assert starts[-1] - starts[0] >= 1.0  # and they did not all go at once
    assert limiter.statistics().granted == 22


def test_a_task_retried_after_its_worker_crashed_does_not_leak_a_permit(manager, tmp_path):
    # One permit: the retried task holds it, so its retry must not wait for another.
    limiter = conveyor.CapacityLimiter(1, manager=manager)
    with conveyor.WorkerPool(2, limiter=limiter, retries=1) as pool:
        items = [(str(tmp_path), i) for i in range(6)]
        assert pool.starmap(limiter_tasks.crash_once, items) == list(range(6))
    assert limiter.available_tokens == 1


def test_a_calls_own_limiter_holds_that_call_and_ends_with_it(manager):
    limiter = conveyor.CapacityLimiter(1, manager=manager)
    inside = manager.dict(now=0)
    with conveyor.WorkerPool(4) as pool:
        items = [(inside, i) for i in range(8)]
        assert pool.starmap(limiter_tasks.inside_for_a_while, items, limiter=limiter) == list(
            range(8)
        )
        assert inside["max"] == 1
        inside["max"] = 0
        pool.starmap(limiter_tasks.inside_for_a_while, items)  # the next call is free
        assert inside["max"] > 1
    assert limiter.available_tokens == 1


def test_a_pool_whose_limiter_is_gone_still_finishes_its_work_and_says_so(caplog):
    manager = conveyor.Manager()
    limiter = conveyor.CapacityLimiter(1, manager=manager)
    with conveyor.WorkerPool(2, limiter=limiter) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        manager.shutdown()  # the limiter's server goes away under the pool
        assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]  # no hang
    assert "no longer limited" in caplog.text


def test_a_program_using_the_default_manager_exits_cleanly_from_threads():
    # Limiters on the default manager, used from threads that end before the program
    # does: the manager is shut down at exit through a connection still open (weakref's
    # exit hook once closed it first, and the exit printed a traceback).
    program = (
        "import concurrent.futures, conveyor\n"
        "if __name__ == '__main__':\n"
        "    limiter = conveyor.RateLimiter('50/s')\n"
        "    with concurrent.futures.ThreadPoolExecutor(2) as ex:\n"
        "        print(sum(ex.map(lambda _: limiter.acquire(True, 1.0), range(5))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    assert "Traceback" not in done.stderr, done.stderr
