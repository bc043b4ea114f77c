"""conveyor's modern API: ``conveyor.map``/``imap``/``submit`` and ``WorkerPool``.

Behaviour common to both backends runs against both (conftest's ``backend`` fixture);
process-only behaviour (killed workers, retries) pins ``backend``. Tasks that must stay
busy wait on a *gate* file the test opens, never on a sleep.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import defaultdict
from concurrent import futures
from pathlib import Path

import pytest

import conveyor
import tasks
from conftest import WAIT_S, process_gone, wait_until


def live_worker_pids(pool: conveyor.WorkerPool) -> set[int]:
    return {w.pid for w in pool.stats().workers if w.alive and w.pid is not None}


class Gate:
    """A file that blocked tasks (``tasks.wait_for_path``) wait for; ``open`` releases them."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "gate-open"
        self.path = str(self._path)

    def open(self) -> None:
        self._path.touch()

    @property
    def is_open(self) -> bool:
        return self._path.exists()


@pytest.fixture
def make_pool(backend, backend_options):
    """Build WorkerPools on the current backend; terminate whatever the test left open."""
    pools = []

    def make(workers: int = 2, **kwargs) -> conveyor.WorkerPool:
        pool = conveyor.WorkerPool(workers, backend=backend, **backend_options, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()


@pytest.fixture
def gate(tmp_path, make_pool) -> Gate:
    # Requests make_pool so that this teardown (opening the gate, so blocked tasks
    # finish) runs before the pools are terminated.
    gate = Gate(tmp_path)
    yield gate
    gate.open()


# --- the one-call API over the shared pool ------------------------------------------------


def test_conveyor_map_reuses_one_shared_pool_across_calls():
    first = conveyor.map(tasks.pid_of, range(40), workers=2)
    pool = conveyor.shared_pool(2)
    second = conveyor.map(tasks.pid_of, range(40), workers=2)

    assert conveyor.shared_pool(2) is pool
    assert set(first) | set(second) <= live_worker_pids(pool)
    assert pool.stats().workers_started == 2  # the second call started no workers
    assert conveyor.map(tasks.square, range(10), workers=2) == [x * x for x in range(10)]


def test_conveyor_imap_yields_results_in_order_from_a_generator():
    results = conveyor.imap(tasks.square, (x for x in range(30)), workers=2)
    assert list(results) == [x * x for x in range(30)]
    unordered = conveyor.imap(tasks.square, range(30), workers=2, ordered=False)
    assert sorted(unordered) == [x * x for x in range(30)]


def test_conveyor_submit_returns_a_future_with_the_result():
    future = conveyor.submit(tasks.add, 2, b=3)
    assert isinstance(future, futures.Future)
    assert future.result(timeout=WAIT_S) == 5


def test_conveyor_map_runs_a_lambda_over_a_generator():
    assert conveyor.map(lambda x: x + 1, (x for x in range(20)), workers=2) == list(range(1, 21))


# --- WorkerPool: map, imap, starmap, submit -----------------------------------------------


def test_pool_map_returns_results_in_input_order(make_pool):
    pool = make_pool(2)
    # Earlier items sleep longer, so they finish after later ones.
    items = [(i, 0.01 * (5 - i)) for i in range(6)]
    assert pool.map(tasks.sleep_then, items, star=True) == [0, 1, 2, 3, 4, 5]
    assert pool.map(tasks.square, range(100)) == [x * x for x in range(100)]


def test_pool_imap_yields_results_in_input_order(make_pool):
    pool = make_pool(2)
    assert list(pool.imap(tasks.square, iter(range(100)))) == [x * x for x in range(100)]


def test_pool_starmap_unpacks_argument_tuples(make_pool):
    pool = make_pool(2)
    assert pool.starmap(tasks.add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]


def test_star_true_unpacks_arguments_in_map_and_imap(make_pool):
    pool = make_pool(2)
    pairs = [(i, 10 * i) for i in range(20)]
    expected = [a + b for a, b in pairs]
    assert pool.map(tasks.add, pairs, star=True) == expected
    assert list(pool.imap(tasks.add, iter(pairs), star=True)) == expected


def test_pool_submit_returns_a_future_with_result_or_exception(make_pool):
    pool = make_pool(2)
    future = pool.submit(tasks.add, 20, b=22)
    assert isinstance(future, futures.Future)
    assert future.result(timeout=WAIT_S) == 42
    error = pool.submit(tasks.raise_value_error, "nope").exception(timeout=WAIT_S)
    assert type(error) is ValueError and str(error) == "nope"


def test_unordered_imap_yields_every_result(make_pool):
    pool = make_pool(2)
    results = list(pool.imap(tasks.square, range(500), ordered=False))
    assert sorted(results) == [x * x for x in range(500)]


def test_unordered_imap_yields_finished_results_before_a_stuck_one(make_pool, gate, tmp_path):
    pool = make_pool(2)
    ready = tmp_path / "ready"
    ready.touch()
    items = [(gate.path, 0)] + [(str(ready), i) for i in range(1, 6)]
    # A per-task timeout sends one task at a time to each worker (no prefetch), so no
    # item is queued behind the stuck one.
    results = pool.imap(tasks.wait_for_path, items, star=True, ordered=False, timeout=WAIT_S)
    assert sorted(next(results) for _ in range(5)) == [1, 2, 3, 4, 5]
    gate.open()
    assert list(results) == [0]


def test_pool_map_runs_a_lambda_over_a_generator(make_pool):
    pool = make_pool(2)
    assert pool.map(lambda x: x * 2, (x for x in range(50))) == [2 * x for x in range(50)]


# --- per-task timeout -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["process"])
def test_task_timeout_stops_a_stuck_task_and_replaces_its_worker(make_pool, gate, tmp_path):
    pool = make_pool(2, timeout=0.5)
    started = tmp_path / "started"
    future = pool.submit(tasks.announce_then_wait, str(started), gate.path)

    error = future.exception(timeout=WAIT_S)
    assert isinstance(error, conveyor.TaskTimeoutError)
    assert isinstance(error, TimeoutError)
    stuck_pid = int(started.read_text())
    wait_until(lambda: process_gone(stuck_pid), "the stuck worker to be killed")
    wait_until(lambda: len(live_worker_pids(pool)) == 2, "a replacement worker")
    assert stuck_pid not in live_worker_pids(pool)
    assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
    stats = pool.stats()
    assert stats.task_timeouts == 1
    assert stats.workers_started == 3


@pytest.mark.parametrize("backend", ["thread"])
def test_thread_task_timeout_reaches_the_caller_while_the_thread_runs_on(make_pool, gate, tmp_path):
    pool = make_pool(2, timeout=0.3)
    started, finished = tmp_path / "started", tmp_path / "finished"
    future = pool.submit(
        tasks.announce_wait_then_touch, str(started), gate.path, str(finished), "late"
    )

    error = future.exception(timeout=WAIT_S)
    assert isinstance(error, conveyor.TaskTimeoutError)
    assert isinstance(error, TimeoutError)
    assert not gate.is_open and not finished.exists()  # the error came while the task ran
    assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]

    gate.open()
    wait_until(finished.exists, "the abandoned thread to finish its task")
    assert isinstance(future.exception(timeout=0), conveyor.TaskTimeoutError)  # result dropped
    assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]


def test_per_call_timeout_overrides_the_pool_default(make_pool, gate):
    without_default = make_pool(2)
    with pytest.raises(conveyor.TaskTimeoutError):
        without_default.map(tasks.wait_for_path, [gate.path], timeout=0.3)

    with_default = make_pool(2, timeout=0.2)
    assert with_default.map(tasks.sleep_then, [(7, 0.5)], star=True, timeout=None) == [7]
    with pytest.raises(conveyor.TaskTimeoutError):
        with_default.map(tasks.sleep_then, [(7, 0.5)], star=True)


# --- retries after a crash ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_default_retry_reruns_a_task_whose_worker_was_killed(make_pool, tmp_path):
    pool = make_pool(2)
    marker = tmp_path / "crashed-once"
    assert pool.submit(tasks.crash_item_first_time, 3, str(marker)).result(timeout=WAIT_S) == 3
    assert marker.exists()  # it did crash the first time
    stats = pool.stats()
    assert stats.worker_crashes == 1
    assert stats.tasks_retried == 1


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_default_retry_recovers_a_map_whose_worker_was_killed(make_pool, tmp_path):
    pool = make_pool(2)
    marker = tmp_path / "crashed-once"
    work = functools.partial(tasks.crash_item_first_time, marker_path=str(marker))
    assert pool.map(work, range(8)) == list(range(8))
    assert marker.exists()


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_task_that_always_crashes_fails_once_its_retry_is_spent(make_pool):
    pool = make_pool(2)
    error = pool.submit(tasks.crash_on, 3).exception(timeout=WAIT_S)
    assert isinstance(error, conveyor.WorkerCrashedError)
    assert error.attempts == 2  # the first run and one retry
    assert pool.stats().worker_crashes == 2


def test_conveyor_map_retries_a_task_whose_worker_was_killed(tmp_path):
    marker = tmp_path / "crashed-once"
    work = functools.partial(tasks.crash_item_first_time, marker_path=str(marker))
    assert conveyor.map(work, range(6), workers=2) == list(range(6))
    assert marker.exists()


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_zero_retries_fail_the_task_with_worker_crashed_error(make_pool):
    pool = make_pool(2, retries=0)
    error = pool.submit(tasks.crash_on, 3).exception(timeout=WAIT_S)
    assert isinstance(error, conveyor.WorkerCrashedError)
    assert error.attempts == 1
    with pytest.raises(conveyor.WorkerCrashedError):
        pool.map(tasks.crash_on, range(6))
    assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_per_call_retries_override_the_pool_default(make_pool, tmp_path):
    no_retries = make_pool(2, retries=0)
    marker = tmp_path / "crashed-once"
    items = [(3, str(marker))]
    assert no_retries.map(tasks.crash_item_first_time, items, star=True, retries=1) == [3]
    assert marker.exists()

    default_retries = make_pool(2)
    with pytest.raises(conveyor.WorkerCrashedError):
        default_retries.map(tasks.crash_on, [3], retries=0)


# --- progress -----------------------------------------------------------------------------


def test_progress_callback_gets_done_and_total_up_to_the_total(make_pool):
    pool = make_pool(2)
    calls = []
    results = pool.map(
        tasks.square, range(40), progress=lambda done, total: calls.append((done, total))
    )
    assert results == [x * x for x in range(40)]
    wait_until(lambda: (40, 40) in calls, "the final progress call")
    assert all(total == 40 for _, total in calls)
    done = sorted(d for d, _ in calls)
    assert len(set(done)) == len(done) and done[0] >= 1 and done[-1] == 40


def test_progress_callback_has_reported_every_task_when_map_returns(make_pool):
    pool = make_pool(2)
    calls = []

    def slow_callback(done, total):
        if done == total:
            time.sleep(0.2)  # a slow redraw (a GUI, a remote log), not synchronisation
        calls.append((done, total))

    assert pool.map(tasks.square, range(40), progress=slow_callback) == [x * x for x in range(40)]
    assert (40, 40) in calls


def test_progress_true_draws_a_tqdm_bar_and_results_are_right(make_pool, capfd):
    pool = make_pool(2)
    assert pool.map(tasks.square, range(30), progress=True) == [x * x for x in range(30)]
    # The bar is closed before map() returns: its last line is already written. (Reading
    # capfd while another thread writes can lose that write, so it is read once, now.)
    drawn = capfd.readouterr().err
    assert "100%" in drawn
    assert "30/30" in drawn


def _calls_settle(pool, calls) -> int:
    """How many progress calls there are once the pool has nothing left running."""
    wait_until(
        lambda: (lambda s: s.tasks_submitted == s.tasks_done + s.tasks_failed + s.tasks_cancelled)(
            pool.stats()
        ),
        "the pool to settle",
    )
    return len(calls)


def test_progress_stops_where_a_task_error_reached_the_caller(make_pool):
    pool = make_pool(2)
    calls = []
    with pytest.raises(ValueError, match="bad item 3"):
        pool.map(
            tasks.sleep_then_fail_on,
            list(range(60)),
            progress=lambda done, total: calls.append((done, total)),
        )
    reached = len(calls)
    assert _calls_settle(pool, calls) == reached  # no advance after the error
    assert all(total == 60 for _, total in calls)  # and the total was never rewritten


def test_progress_bar_is_closed_at_the_true_count_when_map_raises(make_pool, capfd):
    pool = make_pool(2)
    with pytest.raises(ValueError):
        pool.map(tasks.sleep_then_fail_on, list(range(60)), progress=True)
    drawn = capfd.readouterr().err
    _calls_settle(pool, [])
    assert capfd.readouterr().err == ""  # closed: the tasks that ran on drew nothing more
    last = drawn.replace("\r", "\n").strip().splitlines()[-1]
    assert "/60" in last and "60/60" not in last and "100%" not in last


def test_progress_after_an_early_break_keeps_its_total_and_stops(make_pool):
    pool = make_pool(2)
    calls = []
    for value in pool.imap(
        functools.partial(tasks.sleep_then, seconds=0.01),
        range(500),
        progress=lambda done, total: calls.append((done, total)),
    ):
        if value > 10:
            break
    reached = len(calls)
    assert _calls_settle(pool, calls) == reached
    assert all(total == 500 for _, total in calls)
    assert max(done for done, _ in calls) < 500


def test_progress_stops_at_ctrl_c_with_its_total_unchanged(make_pool):
    import os
    import signal
    import threading

    pool = make_pool(2)
    calls = []
    started = threading.Event()

    def record(done, total):
        calls.append((done, total))
        started.set()

    def interrupt():
        if started.wait(20):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to the main thread

    threading.Thread(target=interrupt, name="test-ctrl-c").start()
    with pytest.raises(KeyboardInterrupt):
        pool.map(functools.partial(tasks.sleep_then, seconds=0.01), range(400), progress=record)
    reached = len(calls)
    assert _calls_settle(pool, calls) == reached
    assert all(total == 400 for _, total in calls)
    assert max(done for done, _ in calls) < 400


def test_progress_of_lazy_input_learns_its_total_only_when_all_of_it_ran(make_pool, capfd):
    pool = make_pool(2)
    assert sum(pool.imap(tasks.square, iter(range(50)), progress=True)) == sum(
        x * x for x in range(50)
    )
    assert "50/50" in capfd.readouterr().err


# --- worker state -------------------------------------------------------------------------


def test_worker_state_is_built_once_per_worker_and_shared_by_its_tasks(make_pool):
    token = uuid.uuid4().hex
    pool = make_pool(2, worker_state=functools.partial(tasks.build_worker_state, token))
    rows = pool.map(tasks.inspect_worker_state, [token] * 60)

    state_ids = defaultdict(set)
    for worker, state_id, built_on, builds in rows:
        assert tuple(built_on) == worker  # each worker has its own state
        assert builds == 1  # the factory ran once on that worker
        state_ids[worker].add(state_id)
    assert all(len(ids) == 1 for ids in state_ids.values())  # the same object every time


def test_worker_state_outside_a_task_raises_runtime_error():
    with pytest.raises(RuntimeError, match="only available inside"):
        conveyor.worker_state()


# --- life cycle ---------------------------------------------------------------------------


def test_with_block_waits_for_submitted_work_on_normal_exit(backend):
    with conveyor.WorkerPool(2, backend=backend) as pool:
        pending = [pool.submit(tasks.sleep_then, i, 0.05) for i in range(6)]
    assert all(future.done() for future in pending)
    assert [future.result(timeout=0) for future in pending] == list(range(6))
    with pytest.raises(conveyor.PoolClosedError):
        pool.submit(tasks.square, 2)


@pytest.mark.parametrize("backend", ["process"])
def test_with_block_kills_workers_when_an_exception_escapes(backend, gate, tmp_path):
    started = tmp_path / "started"
    marker = tmp_path / "queued-task-ran"
    submitted = []

    def leave_by_exception():
        with conveyor.WorkerPool(1, backend=backend) as pool:
            submitted.append(pool.submit(tasks.announce_then_wait, str(started), gate.path))
            submitted.append(pool.submit(tasks.touch_path, str(marker)))
            wait_until(started.exists, "the first task to start")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        leave_by_exception()
    running, queued = submitted

    assert not gate.is_open  # the exit did not wait for the stuck task
    assert process_gone(int(started.read_text()))
    assert isinstance(running.exception(timeout=0), conveyor.TaskCancelledError)
    assert isinstance(queued.exception(timeout=0), conveyor.TaskCancelledError)
    assert not marker.exists()


@pytest.mark.parametrize("backend", ["thread"])
def test_thread_with_block_cancels_queued_work_when_an_exception_escapes(backend, tmp_path):
    markers = [tmp_path / f"queued-{i}" for i in range(3)]
    submitted = []

    def leave_by_exception():
        with conveyor.WorkerPool(1, backend=backend) as pool:
            submitted.append(pool.submit(tasks.sleep_for, 0.3))
            submitted.extend(pool.submit(tasks.touch_path, str(marker)) for marker in markers)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        leave_by_exception()
    for future in submitted:
        assert isinstance(future.exception(timeout=0), conveyor.TaskCancelledError)
    assert not any(marker.exists() for marker in markers)


@pytest.mark.parametrize(
    "use",
    [
        lambda pool: pool.map(tasks.square, [1]),
        lambda pool: pool.imap(tasks.square, [1]),
        lambda pool: pool.starmap(tasks.add, [(1, 2)]),
        lambda pool: pool.submit(tasks.square, 1),
    ],
    ids=["map", "imap", "starmap", "submit"],
)
@pytest.mark.parametrize("closed_by", ["close", "terminate", "with"])
def test_closed_pool_rejects_work_with_pool_closed_error(make_pool, use, closed_by):
    pool = make_pool(1)
    if closed_by == "close":
        pool.close()
        assert pool.join(timeout=WAIT_S)
    elif closed_by == "terminate":
        pool.terminate()
    else:
        with pool:
            pass
    with pytest.raises(conveyor.PoolClosedError) as info:
        use(pool)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad_backend", ["ray", "processes", ""])
def test_invalid_backend_is_rejected_with_value_error(bad_backend):
    with pytest.raises(ValueError, match="backend"):
        conveyor.WorkerPool(2, backend=bad_backend)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2"])
def test_invalid_worker_count_is_rejected_with_value_error(workers):
    with pytest.raises(ValueError, match="workers"):
        conveyor.WorkerPool(workers)


# --- statistics and adaptive chunking -----------------------------------------------------


def test_many_tiny_tasks_travel_in_chunks_bigger_than_one(make_pool):
    pool = make_pool(2)
    items = range(10_000)
    assert pool.map(tasks.square, items) == [x * x for x in items]
    stats = pool.stats()
    assert stats.tasks_done == len(items)
    assert stats.mean_chunk_size > 1


def test_few_slow_tasks_travel_one_per_chunk(make_pool):
    pool = make_pool(2)
    items = [(i, 0.05) for i in range(6)]
    assert pool.map(tasks.sleep_then, items, star=True) == list(range(6))
    stats = pool.stats()
    assert stats.tasks_done == len(items)
    assert stats.mean_chunk_size == 1
