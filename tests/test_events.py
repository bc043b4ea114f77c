"""The task-event stream and the logging built on it, on real pools with real faults."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

import conveyor
import tasks
from conveyor import EventKind, ExitCause, TaskEvent, WorkerEvent

pytestmark = pytest.mark.timeout(60)

FINAL = (EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED)


class Recorder:
    def __init__(self) -> None:
        self.events: list[TaskEvent | WorkerEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: TaskEvent | WorkerEvent) -> None:
        with self.lock:
            self.events.append(event)

    def tasks(self, *kinds: EventKind) -> list[TaskEvent]:
        with self.lock:
            return [e for e in self.events if isinstance(e, TaskEvent) and e.kind in kinds]

    def workers(self, kind: EventKind) -> list[WorkerEvent]:
        with self.lock:
            return [e for e in self.events if isinstance(e, WorkerEvent) and e.kind is kind]

    def final_count(self, job: int | None = None) -> dict[int, int]:
        """How many final events each task of ``job`` (or every job) got."""
        counts: dict[int, int] = {}
        for event in self.tasks(*FINAL):
            if job is None or event.job == job:
                for task in event.tasks:
                    counts[task] = counts.get(task, 0) + 1
        return counts


def wait_until(predicate, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_every_task_of_a_map_ends_in_exactly_one_final_event(backend):
    recorder = Recorder()
    with conveyor.WorkerPool(2, backend=backend) as pool, pool.subscribe(recorder):
        with pytest.raises(ValueError):
            pool.map(tasks.fail_on, range(200))
        results = pool.map(tasks.square, range(500))
    assert results == [x * x for x in range(500)]
    jobs = sorted({e.job for e in recorder.tasks(EventKind.QUEUED)})
    assert len(jobs) == 2
    failing, squares = jobs
    assert recorder.final_count(squares) == dict.fromkeys(range(500), 1)
    counts = recorder.final_count(failing)
    assert set(counts.values()) == {1}  # never two outcomes for one task
    (failure,) = [e for e in recorder.tasks(EventKind.FAILED) if e.job == failing]
    assert failure.tasks == (3,) and isinstance(failure.error, ValueError)
    finished = recorder.tasks(EventKind.FINISHED)
    assert all(e.duration_s is not None and e.duration_s >= 0 for e in finished)
    assert all(e.started_at is not None and abs(e.started_at - time.time()) < 60 for e in finished)
    assert all(e.function.endswith("square") or e.function.endswith("fail_on") for e in finished)


def test_events_name_the_worker_process_that_ran_the_tasks():
    recorder = Recorder()
    with conveyor.WorkerPool(2) as pool:
        pool.subscribe(recorder)  # open until the pool is gone: it sees the workers exit
        pids = pool.map(tasks.pid_of, range(50), chunksize=5)
    started = {e.pid for e in recorder.workers(EventKind.WORKER_STARTED)}
    assert len(started) == 2
    ran_on = {e.pid for e in recorder.tasks(EventKind.FINISHED)}
    assert ran_on == set(pids) and ran_on <= started
    assert {e.worker for e in recorder.tasks(EventKind.FINISHED)} <= {0, 1}
    assert all(e.host is None for e in recorder.tasks(EventKind.FINISHED))
    exits = recorder.workers(EventKind.WORKER_EXITED)
    assert {e.cause for e in exits} == {ExitCause.STOPPED} and len(exits) == 2


def test_a_crash_is_a_retried_event_then_a_finished_one_on_a_new_worker(tmp_path):
    recorder = Recorder()
    marker = str(tmp_path / "crashed")
    with conveyor.WorkerPool(1, retries=1) as pool:
        pool.subscribe(recorder)
        assert pool.submit(tasks.crash_once, marker, 7).result(timeout=30) == 7
    (retried,) = recorder.tasks(EventKind.RETRIED)
    assert isinstance(retried.error, conveyor.WorkerCrashedError)
    with open(marker) as f:
        assert retried.attempt == 0 and retried.pid == int(f.read())
    (finished,) = recorder.tasks(EventKind.FINISHED)
    assert finished.attempt == 1 and finished.pid != retried.pid
    crashed = [e for e in recorder.workers(EventKind.WORKER_EXITED) if e.cause is ExitCause.CRASHED]
    assert len(crashed) == 1 and crashed[0].signal == 9 and crashed[0].pid == retried.pid


def test_a_timeout_is_a_failed_event_and_a_worker_that_timed_out():
    recorder = Recorder()
    with conveyor.WorkerPool(1, timeout=0.3) as pool, pool.subscribe(recorder):
        future = pool.submit(tasks.sleep_for, 30)
        with pytest.raises(conveyor.TaskTimeoutError):
            future.result(timeout=30)
        wait_until(lambda: recorder.workers(EventKind.WORKER_EXITED))
    (failed,) = recorder.tasks(EventKind.FAILED)
    assert isinstance(failed.error, conveyor.TaskTimeoutError)
    causes = [e.cause for e in recorder.workers(EventKind.WORKER_EXITED)]
    assert ExitCause.TIMED_OUT in causes


def test_subscribers_run_outside_the_engine_lock_and_their_errors_are_only_logged(caplog):
    seen: list[int] = []

    def reads_statistics(event):
        # The engine lock would deadlock this if events were delivered under it.
        seen.append(pool.statistics().tasks_submitted)

    def broken(event):
        raise RuntimeError("a broken subscriber")

    with (
        caplog.at_level(logging.ERROR, logger="conveyor"),
        conveyor.WorkerPool(2, backend="thread") as pool,
    ):
        pool.subscribe(reads_statistics)
        pool.subscribe(broken)
        assert pool.map(tasks.square, range(20)) == [x * x for x in range(20)]
    assert seen and max(seen) == 20
    assert any("a broken subscriber" in r.getMessage() or r.exc_info for r in caplog.records)


def test_a_closed_subscription_gets_nothing_more(backend):
    recorder = Recorder()
    with conveyor.WorkerPool(2, backend=backend) as pool:
        subscription = pool.subscribe(recorder)
        pool.map(tasks.square, range(10))
        subscription.close()
        count = len(recorder.events)
        pool.map(tasks.square, range(10))
    assert not subscription.active
    assert len(recorder.events) == count


@pytest.mark.parametrize(
    "make",
    [
        lambda: conveyor.Pool(2),
        lambda: conveyor.ThreadPool(2),
        lambda: conveyor.ProcessPoolExecutor(2),
        lambda: conveyor.ThreadPoolExecutor(2),
    ],
    ids=["Pool", "ThreadPool", "ProcessPoolExecutor", "ThreadPoolExecutor"],
)
def test_every_face_offers_the_event_stream(make):
    recorder = Recorder()
    pool = make()
    try:
        with pool.subscribe(recorder):
            assert list(pool.map(tasks.square, range(30))) == [x * x for x in range(30)]
    finally:
        if isinstance(pool, conveyor.Pool):
            pool.terminate()
        else:
            pool.shutdown()
    assert recorder.final_count() == dict.fromkeys(range(30), 1)


def test_subscribe_rejects_what_cannot_be_called():
    with (
        conveyor.WorkerPool(1, backend="thread") as pool,
        pytest.raises(TypeError, match="callable"),
    ):
        pool.subscribe("print")


def test_debug_logging_tells_the_story_of_a_pool(caplog, tmp_path):
    marker = str(tmp_path / "crashed")
    with (
        caplog.at_level(logging.DEBUG, logger="conveyor"),
        conveyor.WorkerPool(1, retries=1) as pool,
    ):
        assert pool.submit(tasks.crash_once, marker, 3).result(timeout=30) == 3
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    text = "\n".join(m for _, _, m in messages)
    assert "submitted: 1 tasks" in text and "ended: 1 done, 0 failed, 0 cancelled" in text
    assert "ready" in text and "pool running -> closing" in text
    crash = [m for name, level, m in messages if level == logging.INFO and "crashed" in m]
    assert crash and "SIGKILL" in crash[0] and "holding 1 tasks" in crash[0]
    assert any(level == logging.INFO and "replaced by pid" in m for _, level, m in messages)
    assert any(name == "conveyor.events" and "retried" in m for name, _, m in messages)
    with open(marker) as f:
        pid = int(f.read())
    assert f"pid {pid}" in text
    assert os.getpid() != pid


def test_nothing_is_logged_at_info_for_a_pool_that_had_no_trouble(caplog):
    with caplog.at_level(logging.INFO, logger="conveyor"), conveyor.WorkerPool(2) as pool:
        pool.map(tasks.square, range(100))
    assert [r.getMessage() for r in caplog.records] == []
