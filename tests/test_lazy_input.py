"""Lazy input: every imap-like API reads a huge generator only a bounded way ahead."""

from __future__ import annotations

import functools
import gc
import itertools
import threading
import time

import psutil
import pytest

import conveyor
import tasks

HUGE = 10_000_000
# O(workers x chunk): 2 workers x 4 chunks x 4096 items, plus one batch of slack.
READ_AHEAD_BOUND = 100_000
MEMORY_BOUND_BYTES = 50 * 1024 * 1024


class CountingInput:
    """A 10-million-item generator that counts how far it has been read."""

    def __init__(self, size: int = HUGE) -> None:
        self.read = 0
        self._size = size

    def __iter__(self):
        for i in range(self._size):
            self.read = i + 1
            yield i


def _settled_count(source: CountingInput, quiet_s: float = 0.3, limit_s: float = 10.0) -> int:
    """Wait until the input stops being read (the feeder is blocked); return the count."""
    deadline = time.monotonic() + limit_s
    last, last_change = source.read, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if source.read != last:
            last, last_change = source.read, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return last
    pytest.fail(f"the input never stopped being read (read {source.read})")


def returns_within(call, timeout_s: float = 20.0) -> bool:
    """Run ``call`` on a thread; True if it returned in time (so a hang fails one test)."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


def _imap_factories():
    """Every conveyor API that maps lazily, as (name, open_pool, make_iterator)."""
    return {
        "Pool.imap": (lambda: conveyor.Pool(2), lambda p, it: p.imap(tasks.square, it)),
        "Pool.imap_unordered": (
            lambda: conveyor.Pool(2),
            lambda p, it: p.imap_unordered(tasks.square, it),
        ),
        "ThreadPool.imap": (lambda: conveyor.ThreadPool(2), lambda p, it: p.imap(tasks.square, it)),
        "ProcessPoolExecutor.map": (
            lambda: conveyor.ProcessPoolExecutor(2),
            lambda p, it: p.map(tasks.square, it),
        ),
        "ThreadPoolExecutor.map": (
            lambda: conveyor.ThreadPoolExecutor(2),
            lambda p, it: p.map(tasks.square, it),
        ),
        "WorkerPool.imap": (lambda: conveyor.WorkerPool(2), lambda p, it: p.imap(tasks.square, it)),
        "WorkerPool.imap(ordered=False)": (
            lambda: conveyor.WorkerPool(2),
            lambda p, it: p.imap(tasks.square, it, ordered=False),
        ),
        "conveyor.imap": (lambda: None, lambda p, it: conveyor.imap(tasks.square, it, workers=2)),
    }


API = _imap_factories()


def _shutdown(pool) -> None:
    if pool is None:
        return
    if hasattr(pool, "terminate"):
        pool.terminate()
    else:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("api", list(API))
def test_taking_1000_results_reads_a_bounded_prefix_of_a_huge_generator(api):
    open_pool, make_iterator = API[api]
    pool = open_pool()
    try:
        source = CountingInput()
        rss_before = psutil.Process().memory_info().rss
        results = make_iterator(pool, iter(source))
        taken = list(itertools.islice(results, 1000))
        assert len(taken) == 1000
        if "unordered" not in api and "ordered=False" not in api:
            assert taken == [x * x for x in range(1000)]
        read = _settled_count(source)
        assert read < READ_AHEAD_BOUND, f"{api} read {read} items to produce 1000"
        growth = psutil.Process().memory_info().rss - rss_before
        assert growth < MEMORY_BOUND_BYTES, f"{api} grew the parent by {growth / 1e6:.0f} MB"
        del results
        gc.collect()
    finally:
        _shutdown(pool)


@pytest.mark.parametrize("api", ["Pool.imap", "WorkerPool.imap", "ProcessPoolExecutor.map"])
def test_a_stalled_consumer_stops_the_reading(api):
    open_pool, make_iterator = API[api]
    pool = open_pool()
    try:
        source = CountingInput()
        results = make_iterator(pool, iter(source))
        next(results)  # then the consumer stalls
        stalled_at = _settled_count(source)
        assert stalled_at < READ_AHEAD_BOUND
        # It resumes when the consumer does.
        list(itertools.islice(results, stalled_at + 10))
        assert source.read > stalled_at
    finally:
        _shutdown(pool)


@pytest.mark.parametrize("api", ["Pool.imap", "WorkerPool.imap", "ThreadPool.imap"])
def test_a_consumer_that_stops_early_stops_the_reading_for_good(api):
    open_pool, make_iterator = API[api]
    pool = open_pool()
    try:
        source = CountingInput()
        for i, _ in enumerate(make_iterator(pool, iter(source))):
            if i == 100:
                break
        gc.collect()
        stopped_at = _settled_count(source)
        time.sleep(0.3)
        assert source.read == stopped_at
        assert stopped_at < READ_AHEAD_BOUND
        if hasattr(pool, "apply"):
            assert pool.apply(tasks.square, (3,)) == 9  # the pool is still fine
    finally:
        _shutdown(pool)


def test_abandoned_imap_withdraws_queued_items():
    with conveyor.Pool(1) as pool:
        results = pool.imap(tasks.sleep_then, range(50), chunksize=1)
        assert next(results) == 0
        results.cancel()
        stats = pool.stats()
        assert stats.tasks_cancelled > 0
        assert pool.apply(tasks.square, (4,)) == 16


def test_stopping_the_consumer_while_a_batch_is_being_read_does_not_hang_shutdown():
    # The feeder is inside the user's generator when the consumer stops; the batch it
    # then hands over must count as withdrawn, or the pool waits for it forever.
    in_generator, release = threading.Event(), threading.Event()

    def source():
        for i in itertools.count():
            if i == 16:  # the first item past the first window: read after one take
                in_generator.set()
                release.wait(20)
            yield i

    pool = conveyor.Pool(2)
    try:
        results = pool.imap(functools.partial(tasks.sleep_then, seconds=0.3), source())
        assert next(results) == 0
        assert in_generator.wait(20)
        results.cancel()  # what dropping the iterator does
        release.set()
        pool.close()
        assert returns_within(pool.join), "join() hung on a batch read after the cancel"
    finally:
        release.set()
        pool.terminate()


def test_a_closed_pool_stops_once_its_last_lazy_input_ends():
    # The job's last event is the end of its input, not a result: the workers must still
    # be told to stop, or join() waits forever.
    waiting, release = threading.Event(), threading.Event()

    def source():
        yield from range(16)
        waiting.set()
        release.wait(20)  # the input ends only after close()

    pool = conveyor.Pool(2)
    try:
        results = pool.imap(tasks.square, source())
        assert list(itertools.islice(results, 16)) == [i * i for i in range(16)]
        assert waiting.wait(20)
        pool.close()
        release.set()
        assert returns_within(pool.join), "join() hung: the workers were never told to stop"
        assert list(results) == []
    finally:
        release.set()
        pool.terminate()
