"""The drop-in Pool / ThreadPool behave like multiprocessing.Pool, on every backend."""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.pool
import os
import threading
import time
import weakref

import pytest

import conveyor
import tasks
from conftest import skip_on_dask


def test_apply_returns_the_call_result(make_pool):
    pool = make_pool(2)
    assert pool.apply(tasks.add, (2, 3)) == 5
    assert pool.apply(divmod, (7, 2)) == (3, 1)
    assert pool.apply(tasks.sleep_then, (), {"x": 5, "seconds": 0}) == 5


def test_apply_async_passes_kwargs_and_returns_async_result(make_pool):
    pool = make_pool(2)
    res = pool.apply_async(tasks.sleep_then, (41,), {"seconds": 0.01})
    assert res.get(timeout=10) == 41
    assert res.ready() and res.successful()


def test_map_preserves_order_for_every_chunk_size(make_pool):
    pool = make_pool(2)
    items = list(range(1000))
    expected = [x * x for x in items]
    assert pool.map(tasks.square, items) == expected
    assert pool.map(tasks.square, items, chunksize=1) == expected
    assert pool.map(tasks.square, items, chunksize=333) == expected
    assert pool.map(tasks.square, iter(items)) == expected


def test_map_of_empty_input_is_empty(make_pool):
    pool = make_pool(2)
    assert pool.map(tasks.square, []) == []
    assert list(pool.imap(tasks.square, [])) == []
    assert pool.map_async(tasks.square, []).get(timeout=5) == []


def test_starmap_unpacks_arguments(make_pool):
    pool = make_pool(2)
    assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.starmap_async(tasks.add, [(5, 5)]).get(timeout=10) == [10]


def test_imap_is_ordered_and_imap_unordered_yields_every_result(make_pool):
    pool = make_pool(2)
    assert list(pool.imap(tasks.square, range(200))) == [x * x for x in range(200)]
    assert sorted(pool.imap_unordered(tasks.square, range(200))) == sorted(
        x * x for x in range(200)
    )
    assert list(pool.imap(tasks.square, range(50), chunksize=7)) == [x * x for x in range(50)]


def test_imap_next_with_timeout_raises_multiprocessing_timeout(make_pool):
    pool = make_pool(1)
    it = pool.imap(tasks.sleep_for, [2.0])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)


def test_imap_reports_an_exception_of_the_input_at_its_position(make_pool):
    def numbers():
        yield 1
        yield 2
        raise KeyError("input broke")

    pool = make_pool(2)
    it = pool.imap(tasks.square, numbers())
    assert next(it) == 1
    assert next(it) == 4
    with pytest.raises(KeyError, match="input broke"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_imap_continues_after_a_failing_item(make_pool):
    pool = make_pool(2)
    it = pool.imap(tasks.fail_on, range(6), chunksize=2)
    results = []
    for _ in range(6):
        try:
            results.append(next(it))
        except ValueError as exc:
            results.append(str(exc))
    assert results == [0, 1, 2, "bad item 3", 4, 5]


def test_map_raises_the_task_exception_with_remote_traceback(make_pool, backend):
    pool = make_pool(2)
    with pytest.raises(ValueError, match="bad item 3") as info:
        pool.map(tasks.fail_on, range(10))
    if backend == "process":
        cause = info.value.__cause__
        # Exactly multiprocessing's type, so code that checks it keeps working.
        assert type(cause) is multiprocessing.pool.RemoteTraceback
        assert "fail_on" in str(cause)


def test_async_result_get_times_out_then_succeeds(make_pool):
    pool = make_pool(1)
    res = pool.apply_async(tasks.sleep_then, (7, 0.5))
    with pytest.raises(multiprocessing.TimeoutError):
        res.get(timeout=0.01)
    assert not res.ready()
    with pytest.raises(ValueError, match="not ready"):
        res.successful()
    res.wait(timeout=10)
    assert res.ready()
    assert res.get() == 7


def test_callbacks_receive_value_or_exception(make_pool):
    pool = make_pool(2)
    got: list = []
    done = threading.Event()

    def remember(value):
        got.append(value)
        if len(got) == 3:
            done.set()

    pool.apply_async(tasks.square, (3,), callback=remember)
    pool.map_async(tasks.square, [1, 2], callback=remember)
    pool.apply_async(tasks.raise_value_error, ("cb",), error_callback=remember)
    assert done.wait(10)
    values = [g for g in got if not isinstance(g, BaseException)]
    errors = [g for g in got if isinstance(g, BaseException)]
    assert sorted(map(str, values)) == ["9", "[1, 4]"]
    assert [type(e) for e in errors] == [ValueError]


def test_failed_async_result_is_not_successful(make_pool):
    pool = make_pool(1)
    res = pool.apply_async(tasks.raise_value_error)
    res.wait(10)
    assert res.ready() and not res.successful()
    with pytest.raises(ValueError, match="boom"):
        res.get()


def test_lambdas_and_closures_work(make_pool):
    pool = make_pool(2)
    offset = 10
    assert pool.map(lambda x: x + offset, [1, 2, 3]) == [11, 12, 13]

    def closure(x):
        return x * offset

    assert pool.apply(closure, (4,)) == 40


def test_close_then_join_finishes_submitted_work(make_pool):
    pool = make_pool(2)
    results = [pool.apply_async(tasks.sleep_then, (i, 0.05)) for i in range(6)]
    pool.close()
    pool.join()
    assert [r.get(timeout=0) for r in results] == list(range(6))


def test_join_drains_an_unconsumed_imap(make_pool):
    pool = make_pool(2)
    it = pool.imap(tasks.square, range(500))
    pool.close()
    pool.join()
    assert list(it) == [x * x for x in range(500)]


def test_using_a_closed_pool_raises_value_error(make_pool):
    pool = make_pool(1)
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(tasks.square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(tasks.square, [1])
    pool.join()


def test_join_on_a_running_pool_raises(make_pool):
    pool = make_pool(1)
    with pytest.raises(ValueError, match="Pool is still running"):
        pool.join()


def test_terminate_fails_unfinished_results_instead_of_hanging(make_pool):
    pool = make_pool(1)
    res = pool.apply_async(tasks.sleep_for, (0.3,))
    queued = pool.apply_async(tasks.sleep_for, (0.3,))
    pool.terminate()
    pool.join()
    for r in (res, queued):
        r.wait(timeout=5)
        assert r.ready()
    with pytest.raises(conveyor.TaskCancelledError):
        queued.get()


def test_context_manager_terminates_on_exit(make_pool):
    with make_pool(2) as pool:
        assert pool.map(tasks.square, [1, 2]) == [1, 4]
    with pytest.raises(ValueError):
        pool.apply(tasks.square, (1,))


def test_pool_rejects_invalid_arguments(backend):
    cls = conveyor.Pool if backend == "process" else conveyor.ThreadPool
    with pytest.raises(ValueError, match="at least 1"):
        cls(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        cls(1, initializer=3)
    pool = cls(1)
    try:
        with pytest.raises(ValueError, match="Chunksize must be 1"):
            pool.imap(tasks.square, [1], chunksize=0)
    finally:
        pool.terminate()


def test_initializer_runs_in_every_worker_before_tasks(make_pool, backend):
    pool = make_pool(2, initializer=tasks.set_global, initargs=("ready",))
    assert set(pool.map(tasks.read_global, range(20), chunksize=1)) == {"ready"}


def test_worker_state_is_built_once_per_worker(make_pool, backend):
    pool = make_pool(2, worker_state=tasks.counting_state)
    states = pool.map(tasks.read_state, range(200), chunksize=5)
    if backend == "process":
        by_pid = {s["pid"]: s for s in states}
        assert all(s["built"] == 1 for s in by_pid.values())
        assert 1 <= len(by_pid) <= 2


def test_maxtasksperchild_replaces_workers(backend):
    if backend == "thread":
        pytest.skip("maxtasksperchild is a process-pool option")
    with conveyor.Pool(2, maxtasksperchild=3) as pool:
        pids = pool.map(tasks.pid_of, range(30), chunksize=1)
    counts = {pid: pids.count(pid) for pid in set(pids)}
    assert len(counts) >= 10
    assert max(counts.values()) <= 3


def test_default_size_is_the_usable_cpu_count(make_pool, backend):
    skip_on_dask(backend, "the default size is the cluster's thread count (test_dask.py)")
    pool = make_pool()
    assert pool._processes == conveyor.available_cpus()
    assert pool.stats().size == conveyor.available_cpus()


def test_process_workers_ignore_sigint_and_are_separate_processes():
    with conveyor.Pool(2) as pool:
        pids = set(pool.map(tasks.pid_of, range(40), chunksize=1))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_each_start_method_runs_tasks(start_method):
    with conveyor.Pool(2, context=start_method) as pool:
        assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
        assert pool.apply(lambda: 42) == 42


def test_stats_report_tasks_chunks_and_bytes():
    with conveyor.Pool(2) as pool:
        pool.map(tasks.square, range(10_000))
        stats = pool.stats()
    assert stats.tasks_done == 10_000
    assert stats.tasks_failed == 0
    assert stats.mean_chunk_size > 10  # tiny tasks travel in batches without tuning
    assert stats.bytes_sent > 10_000 and stats.bytes_received > 10_000
    assert sum(w.tasks_done for w in stats.workers) == 10_000


def test_slow_tasks_are_sent_one_at_a_time():
    with conveyor.Pool(2) as pool:
        pool.map(tasks.sleep_for, [0.05] * 8)
        stats = pool.stats()
    assert stats.chunks_sent == 8


def test_pool_repr_shows_state():
    pool = conveyor.Pool(1)
    assert "state=RUN" in repr(pool)
    pool.terminate()
    assert "state=TERMINATE" in repr(pool)


def test_pool_cannot_be_pickled():
    import pickle

    with conveyor.Pool(1) as pool, pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_a_dropped_pool_is_terminated_by_its_finalizer():
    pool = conveyor.Pool(1)
    pids = pool._core.engine.worker_pids()
    assert pool.apply(tasks.square, (2,)) == 4
    del pool
    import gc

    gc.collect()
    deadline = time.monotonic() + 10
    import psutil

    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.05)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def test_imap_keeps_no_reference_to_a_result_it_has_handed_over(make_pool):
    pool = make_pool(2)
    for box in pool.imap(tasks.make_box, range(50)):
        ref = weakref.ref(box)
        del box
        gc.collect()
        assert ref() is None  # freed at once: nothing of the pool's still holds it


def test_stats_split_each_workers_time_into_busy_and_waiting():
    with conveyor.Pool(1) as pool:
        pool.map(tasks.sleep_for, [0.1] * 3, chunksize=1)
        (worker,) = pool.stats().workers
    assert worker.busy_s >= 0.3  # measured in the worker, around the task calls
    assert worker.uptime_s >= worker.busy_s
    assert worker.waiting_s == pytest.approx(worker.uptime_s - worker.busy_s)


def test_pools_are_instances_of_the_stdlib_pool_classes(make_pool, backend):
    from multiprocessing import pool as mp_pool

    pool = make_pool(1)
    assert isinstance(pool, mp_pool.Pool)  # what dask's pool= checks
    assert isinstance(pool, mp_pool.ThreadPool) == (backend == "thread")
    assert pool.apply(pow, (2, 3)) == 8


@pytest.mark.parametrize("exc_type", [SystemExit, RuntimeError])
def test_a_result_callback_that_raises_is_reported_and_the_pool_goes_on(
    make_pool, exc_type, caplog
):
    pool = make_pool(2)

    def hostile(_):
        raise exc_type("from a result callback")

    pool.apply_async(tasks.square, (3,), callback=hostile).wait(timeout=30)
    assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]
    deadline = time.monotonic() + 10
    while "from a result callback" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)  # the callback runs just after the result is marked ready
    assert "from a result callback" in caplog.text


def test_dask_runs_a_graph_on_a_conveyor_pool(make_pool, backend):
    import dask  # a test dependency: a real client, not a mock of one

    pool = make_pool(2)
    graph = [dask.delayed(tasks.square)(i) for i in range(8)]
    scheduler = "processes" if backend == "process" else "threads"
    assert dask.compute(*graph, scheduler=scheduler, pool=pool) == tuple(i * i for i in range(8))
