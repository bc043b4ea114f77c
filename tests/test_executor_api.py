"""conveyor's executors behave like ``concurrent.futures``' own, plus supervision.

Every behaviour that both executors share runs against both (the ``kind`` fixture);
process-only behaviour (pickling lambdas, SIGKILLed workers, recycling) pins ``kind``.
Tasks that must stay busy wait on a *gate* file the test opens, never on a sleep.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
import weakref
from collections import Counter
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import psutil
import pytest

import conveyor
import conveyor._frontend._feeder
import tasks
from conftest import WAIT_S, wait_until

EXECUTORS = {
    "process": conveyor.ProcessPoolExecutor,
    "thread": conveyor.ThreadPoolExecutor,
}


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


@pytest.fixture(params=sorted(EXECUTORS))
def kind(request) -> str:
    return request.param


@pytest.fixture
def make_executor(kind):
    """Build executors of the current kind; shut down whatever the test left running."""
    made = []

    def make(*args, **kwargs):
        executor = EXECUTORS[kind](*args, **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def gate(tmp_path, make_executor) -> Gate:
    # Requests make_executor so that this teardown (opening the gate, so blocked tasks
    # finish) runs before the executors are shut down.
    gate = Gate(tmp_path)
    yield gate
    gate.open()


# --- futures ------------------------------------------------------------------------------


def test_submit_returns_a_concurrent_futures_future_with_the_result(make_executor):
    executor = make_executor(2)
    future = executor.submit(tasks.add, 2, b=40)
    assert isinstance(future, futures.Future)
    assert future.result(timeout=WAIT_S) == 42
    assert future.done() and not future.cancelled()


def test_wait_first_completed_returns_while_a_blocked_task_still_runs(make_executor, gate):
    executor = make_executor(2)
    blocked = executor.submit(tasks.wait_for_path, gate.path, "slow")
    fast = executor.submit(tasks.square, 4)

    done, not_done = futures.wait(
        [blocked, fast], timeout=WAIT_S, return_when=futures.FIRST_COMPLETED
    )
    assert done == {fast}
    assert not_done == {blocked}

    gate.open()
    done, not_done = futures.wait([blocked, fast], timeout=WAIT_S)
    assert done == {blocked, fast} and not not_done
    assert blocked.result() == "slow"


def test_as_completed_yields_futures_in_completion_order(make_executor, gate):
    executor = make_executor(2)
    blocked = executor.submit(tasks.wait_for_path, gate.path, "slow")
    fast = executor.submit(tasks.square, 4)

    completed = futures.as_completed([blocked, fast], timeout=WAIT_S)
    assert next(completed) is fast
    assert not blocked.done()
    gate.open()
    assert next(completed) is blocked
    assert list(completed) == []


def test_task_exception_propagates_with_its_type_and_message(make_executor):
    executor = make_executor(2)
    future = executor.submit(tasks.raise_value_error, "no such item")
    error = future.exception(timeout=WAIT_S)
    assert type(error) is ValueError
    with pytest.raises(ValueError, match="no such item"):
        future.result()


@pytest.mark.parametrize("kind", ["process"])
def test_process_task_exception_carries_the_worker_traceback_as_cause(make_executor):
    executor = make_executor(1)
    error = executor.submit(tasks.raise_value_error, "from the worker").exception(timeout=WAIT_S)
    cause = error.__cause__
    # Exactly the stdlib executor's own type, so code that checks it keeps working.
    assert type(cause) is futures.process._RemoteTraceback
    assert "raise_value_error" in cause.tb
    assert "ValueError: from the worker" in cause.tb


# --- map ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_returns_results_in_input_order_over_several_iterables(make_executor, chunksize):
    executor = make_executor(2)
    # Earlier items sleep longer, so they finish after later ones.
    delays = [0.04, 0.03, 0.02, 0.01, 0.0, 0.0]
    results = executor.map(tasks.sleep_then, range(6), delays, chunksize=chunksize)
    assert list(results) == [0, 1, 2, 3, 4, 5]

    assert list(executor.map(tasks.add, range(50), range(100, 150), chunksize=chunksize)) == [
        a + b for a, b in zip(range(50), range(100, 150), strict=True)
    ]


def test_map_raises_the_task_exception_when_iteration_reaches_it(make_executor):
    executor = make_executor(2)
    results = executor.map(tasks.fail_on, range(6))
    assert [next(results), next(results), next(results)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)


def test_map_raises_timeout_error_when_a_result_is_late(make_executor, gate):
    executor = make_executor(2)
    results = executor.map(tasks.wait_for_path, [gate.path], timeout=0.2)
    with pytest.raises(futures.TimeoutError):
        next(results)


def test_map_timeout_is_counted_from_the_map_call(make_executor, gate, tmp_path):
    executor = make_executor(2)
    ready = tmp_path / "ready"
    ready.touch()
    timeout_s = 1.0
    called_at = time.monotonic()
    results = executor.map(
        tasks.wait_for_path, [str(ready), gate.path], ["a", "b"], timeout=timeout_s
    )
    # Let the whole timeout pass before asking for anything: this elapsed time is the
    # behaviour under test, not synchronisation.
    time.sleep(max(0.0, called_at + timeout_s - time.monotonic()))

    assert next(results) == "a"  # finished in time: returned although the deadline passed
    asked_at = time.monotonic()
    with pytest.raises(futures.TimeoutError):
        next(results)
    # Counted from the map call, the deadline is already past: no second full timeout.
    assert time.monotonic() - asked_at < timeout_s / 2


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_rejects_chunksize_below_one(make_executor, chunksize):
    executor = make_executor(1)
    with pytest.raises(ValueError):
        executor.map(tasks.square, range(3), chunksize=chunksize)


# --- shutdown -----------------------------------------------------------------------------


def test_shutdown_with_wait_returns_only_after_pending_work_is_done(make_executor):
    executor = make_executor(2)
    pending = [executor.submit(tasks.sleep_then, i, 0.05) for i in range(8)]
    executor.shutdown(wait=True)
    assert all(future.done() for future in pending)
    assert [future.result(timeout=0) for future in pending] == list(range(8))


def test_shutdown_cancel_futures_cancels_queued_work_and_finishes_running_work(
    make_executor, gate, tmp_path
):
    executor = make_executor(1)
    started = tmp_path / "started"
    running = executor.submit(tasks.announce_then_wait, str(started), gate.path, "ran")
    wait_until(started.exists, "the first task to start")
    markers = [tmp_path / f"queued-{i}" for i in range(3)]
    queued = [executor.submit(tasks.touch_path, str(marker), i) for i, marker in enumerate(markers)]

    executor.shutdown(wait=False, cancel_futures=True)
    assert all(future.cancelled() for future in queued)
    assert not running.done()

    gate.open()
    executor.shutdown(wait=True)
    assert running.result(timeout=0) == "ran"
    assert not any(marker.exists() for marker in markers)


@pytest.mark.parametrize("input_kind", ["one list", "two iterables"])
def test_shutdown_cancel_futures_also_cancels_queued_map_items(
    make_executor, gate, tmp_path, input_kind
):
    # One list takes the in-memory path, several inputs the lazy one: both must cancel.
    executor = make_executor(1)
    started = tmp_path / "started"
    running = executor.submit(tasks.announce_then_wait, str(started), gate.path, "ran")
    wait_until(started.exists, "the first task to start")
    markers = [tmp_path / f"mapped-{i}" for i in range(4)]
    paths = [str(marker) for marker in markers]
    if input_kind == "one list":
        results = executor.map(tasks.touch_path, paths)
    else:
        results = executor.map(tasks.touch_path, paths, range(4))

    executor.shutdown(wait=False, cancel_futures=True)
    gate.open()
    executor.shutdown(wait=True)
    assert running.result(timeout=0) == "ran"
    assert not any(marker.exists() for marker in markers)
    with pytest.raises(futures.CancelledError):
        next(results)


def test_submit_after_shutdown_raises_runtime_error(make_executor):
    executor = make_executor(1)
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.submit(tasks.square, 2)
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.map(tasks.square, range(2))


def test_context_manager_waits_for_work_and_shuts_down(make_executor):
    with make_executor(2) as executor:
        pending = [executor.submit(tasks.sleep_then, i, 0.05) for i in range(4)]
    assert all(future.done() for future in pending)
    assert [future.result(timeout=0) for future in pending] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.square, 2)
    assert executor.stats().workers and not any(w.alive for w in executor.stats().workers)


@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_not_positive_raises_value_error(kind, max_workers):
    with pytest.raises(ValueError):
        EXECUTORS[kind](max_workers=max_workers)


# --- workers ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["process"])
@pytest.mark.parametrize("how", ["submit", "map"])
def test_max_tasks_per_child_recycles_workers_after_that_many_tasks(make_executor, how):
    executor = make_executor(2, max_tasks_per_child=3)
    if how == "submit":
        pids = [
            f.result(timeout=WAIT_S) for f in [executor.submit(tasks.pid_of) for _ in range(18)]
        ]
    else:
        pids = list(executor.map(tasks.pid_of, range(18), timeout=WAIT_S))
    per_pid = Counter(pids)
    assert max(per_pid.values()) <= 3
    assert len(per_pid) >= 6


def test_initializer_runs_once_in_each_worker_with_its_initargs(make_executor, tmp_path):
    init_dir = tmp_path / "init"
    init_dir.mkdir()
    executor = make_executor(
        2, initializer=tasks.record_initializer, initargs=(str(init_dir), "hi")
    )
    ran_on = {
        f.result(timeout=WAIT_S)
        for f in [executor.submit(tasks.worker_identity) for _ in range(12)]
    }
    executor.shutdown(wait=True)

    runs = {path.name: path.read_text() for path in init_dir.iterdir()}
    assert {f"{pid}-{ident}" for pid, ident in ran_on} <= set(runs)
    assert set(runs.values()) == {"hi\n"}  # once per worker, with the initargs
    assert len(runs) == executor.stats().workers_started


def test_failing_initializer_fails_futures_with_worker_init_error(make_executor):
    executor = make_executor(2, initializer=tasks.failing_initializer)
    try:
        future = executor.submit(tasks.square, 3)
    except futures.BrokenExecutor as exc:  # the pool already knew it was broken
        error = exc
    else:
        error = future.exception(timeout=WAIT_S)
    assert isinstance(error, conveyor.WorkerInitError)
    assert isinstance(error, futures.BrokenExecutor)
    assert "initializer failed on purpose" in str(error)


@pytest.mark.parametrize("kind", ["process"])
def test_lambda_and_closure_can_be_submitted_to_process_executor(make_executor):
    executor = make_executor(2)
    factor = 5

    def scale(x):
        return x * factor

    assert executor.submit(lambda x: x * 3, 7).result(timeout=WAIT_S) == 21
    assert executor.submit(scale, 7).result(timeout=WAIT_S) == 35
    assert list(executor.map(lambda x: -x, range(4))) == [0, -1, -2, -3]


@pytest.mark.parametrize("kind", ["process"])
def test_sigkilled_worker_fails_only_its_future_and_the_executor_stays_usable(make_executor):
    executor = make_executor(2)
    submitted = [executor.submit(tasks.crash_on, i) for i in range(6)]

    error = submitted[3].exception(timeout=WAIT_S)
    assert isinstance(error, conveyor.WorkerCrashedError)
    assert isinstance(error, BrokenProcessPool)
    assert error.exitcode == -signal.SIGKILL
    others = [f.result(timeout=WAIT_S) for i, f in enumerate(submitted) if i != 3]
    assert others == [0, 1, 2, 4, 5]
    assert executor.submit(tasks.square, 7).result(timeout=WAIT_S) == 49
    assert list(executor.map(tasks.square, range(4))) == [0, 1, 4, 9]


def test_cancelled_pending_future_never_runs(make_executor, gate, tmp_path):
    executor = make_executor(1)
    started = tmp_path / "started"
    running = executor.submit(tasks.announce_then_wait, str(started), gate.path, "first")
    wait_until(started.exists, "the first task to start")
    marker = tmp_path / "cancelled-task-ran"
    queued = executor.submit(tasks.touch_path, str(marker))

    assert not running.cancel()  # already running: too late, as in the stdlib
    assert queued.cancel()
    assert queued.cancelled()
    gate.open()
    assert running.result(timeout=WAIT_S) == "first"
    # One worker runs in order: once this later task is done, the cancelled one had its turn.
    assert executor.submit(tasks.square, 3).result(timeout=WAIT_S) == 9
    assert not marker.exists()
    with pytest.raises(futures.CancelledError):
        queued.result(timeout=0)


def test_stats_counts_done_and_failed_tasks(make_executor):
    executor = make_executor(2)
    submitted = [executor.submit(tasks.square, i) for i in range(5)]
    futures.wait(submitted, timeout=WAIT_S)
    assert list(executor.map(tasks.square, range(7))) == [i * i for i in range(7)]
    executor.submit(tasks.raise_value_error).exception(timeout=WAIT_S)

    stats = executor.stats()
    assert stats.tasks_done == 12
    assert stats.tasks_failed == 1


@pytest.mark.parametrize("kind", ["thread"])
def test_thread_name_prefix_names_the_worker_threads(make_executor):
    executor = make_executor(2, thread_name_prefix="resizer")
    names = {
        f.result(timeout=WAIT_S) for f in [executor.submit(tasks.thread_name) for _ in range(8)]
    }
    assert names and all(name.startswith("resizer") for name in names)
    assert threading.current_thread().name not in names


@pytest.mark.parametrize("kind", ["thread"])
def test_thread_names_default_to_the_stdlib_prefix(make_executor):
    executor = make_executor(2)
    name = executor.submit(tasks.thread_name).result(timeout=WAIT_S)
    assert name.startswith("ThreadPoolExecutor-")


def test_a_map_whose_input_reader_cannot_start_leaves_the_executor_usable(
    make_executor, monkeypatch
):
    # At interpreter shutdown no new thread can start; map() then fails, and nothing may
    # be left waiting for input that no thread will ever read.
    ex = make_executor(2)

    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(conveyor._frontend._feeder.Feeder, "start", refuse)
    with pytest.raises(RuntimeError, match="new thread"):
        ex.map(abs, iter([-1, -2]))  # an iterator is read lazily, on a feeder thread
    monkeypatch.undo()
    assert ex.submit(abs, -3).result(timeout=20) == 3
    shutting_down = threading.Thread(target=ex.shutdown)
    shutting_down.start()
    shutting_down.join(timeout=20)
    assert not shutting_down.is_alive(), "shutdown(wait=True) hung on the failed map"


def test_terminate_workers_stops_running_tasks_and_fails_their_futures(tmp_path):
    with conveyor.ProcessPoolExecutor(2) as ex:
        marker = str(tmp_path / "running")
        running = ex.submit(tasks.announce_then_sleep, marker)
        queued = [ex.submit(tasks.announce_then_sleep, marker + str(i)) for i in range(3)]
        pids = [w.pid for w in ex.stats().workers]
        wait_for_path(marker)
        ex.terminate_workers()
        for future in [running, *queued]:
            with pytest.raises(futures.CancelledError):
                future.result(timeout=10)
        assert not any(psutil.pid_exists(pid) and _alive(pid) for pid in pids)
        with pytest.raises(RuntimeError):
            ex.submit(abs, 1)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for_path(path: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_map_over_a_list_in_memory_needs_no_reader_thread(make_executor):
    executor = make_executor(2)
    before = {t.name for t in threading.enumerate()}
    results = executor.map(tasks.square, list(range(1000)))
    readers = [t.name for t in threading.enumerate() if t.name not in before]
    assert list(results) == [i * i for i in range(1000)]
    assert not [name for name in readers if name.startswith("conveyor-feeder")]


@pytest.mark.parametrize("inputs", ["a list", "a generator"])
def test_map_keeps_no_reference_to_a_result_it_has_handed_over(make_executor, inputs):
    executor = make_executor(2)
    items = list(range(50)) if inputs == "a list" else iter(range(50))
    for box in executor.map(tasks.make_box, items):
        ref = weakref.ref(box)
        del box
        gc.collect()
        assert ref() is None  # freed at once: nothing of the executor's still holds it


# --- accepted where the stdlib's classes are ------------------------------------------


def test_executors_are_instances_of_the_stdlib_classes():
    with conveyor.ProcessPoolExecutor(1) as process_ex, conveyor.ThreadPoolExecutor(1) as thread_ex:
        assert isinstance(process_ex, futures.ProcessPoolExecutor)
        assert isinstance(thread_ex, futures.ThreadPoolExecutor)
        assert process_ex.submit(pow, 2, 3).result(timeout=30) == 8


def test_thread_pool_executor_is_accepted_as_asyncio_default_executor():
    import asyncio

    executor = conveyor.ThreadPoolExecutor(2)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(executor)
        return await loop.run_in_executor(None, pow, 2, 10)

    assert asyncio.run(main()) == 1024  # asyncio.run also shuts the executor down
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)


def test_a_lock_from_the_default_context_passes_in_initargs_as_tqdm_process_map_does():
    from tqdm import tqdm

    lock = tqdm.get_lock()  # made in multiprocessing's default context
    with conveyor.ProcessPoolExecutor(2, initializer=tqdm.set_lock, initargs=(lock,)) as ex:
        assert list(ex.map(tasks.square, range(4))) == [0, 1, 4, 9]


# --- nothing lost, nothing hung, nothing stopped -----------------------------------------


@pytest.mark.parametrize("stop", ["shutdown_cancel_futures", "terminate_workers"])
@pytest.mark.parametrize("inputs", ["list", "generator"])
def test_a_map_being_read_when_the_executor_stops_raises_cancelled_error(
    make_executor, kind, stop, inputs
):
    ex = make_executor(2)
    data = list(range(200)) if inputs == "list" else (i for i in range(200))
    results = ex.map(tasks.sleep_then, data)
    outcome: dict[str, object] = {}

    def consume():
        got = 0
        try:
            for _ in results:
                got += 1
        except futures.CancelledError:
            outcome["cancelled_after"] = got
        else:
            outcome["ended_quietly_after"] = got

    reader = threading.Thread(target=consume, name="test-map-reader")
    reader.start()
    wait_until(lambda: ex.stats().tasks_done >= 4, "a few results")
    if stop == "terminate_workers" and kind == "process":
        ex.terminate_workers()
    else:
        ex.shutdown(wait=False, cancel_futures=True)
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert "ended_quietly_after" not in outcome, outcome
    assert 0 < outcome["cancelled_after"] < 200


class _RaisesWhenPickled:
    def __init__(self, exc_type):
        self.exc_type = exc_type

    def __reduce__(self):
        raise self.exc_type("raised while pickling")


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_while_submit_pickles_reaches_the_caller_and_shutdown_returns(exc_type):
    ex = conveyor.ProcessPoolExecutor(2)
    try:
        with pytest.raises(exc_type):
            ex.submit(tasks.identity, _RaisesWhenPickled(exc_type))
        assert ex.submit(tasks.square, 5).result(timeout=30) == 25
    finally:
        stopper = threading.Thread(target=ex.shutdown, name="test-shutdown")
        stopper.start()
        stopper.join(timeout=30)
    assert not stopper.is_alive(), "shutdown(wait=True) hung on the interrupted task"


def test_an_executor_dropped_without_shutdown_lets_its_workers_go():
    def use_and_drop():
        ex = conveyor.ProcessPoolExecutor(2)
        assert ex.submit(tasks.square, 3).result(timeout=30) == 9
        return [w.pid for w in ex.stats().workers]

    pids = [pid for _ in range(3) for pid in use_and_drop()]
    gc.collect()
    wait_until(lambda: not any(_alive(pid) for pid in pids), "dropped executors' workers exit")


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, ValueError])
def test_a_done_callback_that_raises_is_reported_and_the_executor_goes_on(
    make_executor, gate, exc_type, caplog
):
    ex = make_executor(2)
    blocked = ex.submit(tasks.wait_for_path, gate.path, "released")

    def hostile(_):
        raise exc_type("from a done-callback")

    blocked.add_done_callback(hostile)
    gate.open()
    assert blocked.result(timeout=30) == "released"
    assert [f.result(timeout=30) for f in [ex.submit(tasks.square, n) for n in range(4)]] == [
        0,
        1,
        4,
        9,
    ]
    wait_until(lambda: "from a done-callback" in caplog.text, "the callback's error is logged")


def test_submits_racing_a_shutdown_either_run_or_raise_the_stdlib_error():
    outcomes: list[str] = []
    lock = threading.Lock()
    executor = conveyor.ThreadPoolExecutor(2)
    started = threading.Barrier(5)

    def submit_until_refused():
        started.wait(10)
        for i in range(1_000_000):  # until the shutdown lands
            try:
                future = executor.submit(tasks.square, i)
            except RuntimeError as exc:
                refused = "after shutdown" in str(exc) and not isinstance(exc, ValueError)
                with lock:
                    outcomes.append("refused" if refused else f"other {exc!r}")
                return
            kind = "ran" if future.result(timeout=30) == i * i else "wrong"
            with lock:
                outcomes.append(kind)

    threads = [threading.Thread(target=submit_until_refused) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(10)
    executor.shutdown(wait=True)
    for t in threads:
        t.join(30)
    assert outcomes.count("refused") == 4  # each thread ended on the stdlib's error
    assert set(outcomes) <= {"ran", "refused"}, set(outcomes)  # never PoolClosedError
