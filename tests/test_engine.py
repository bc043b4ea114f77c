"""The engine alone, driven through a fake backend: every way a worker ends, and the books.

No process or thread runs here: the test plays the backend, calling the engine's
up-calls (``EngineEvents``) as a real backend would, and answering the chunks the engine
sends. After every scenario the ledger must balance, and every task must have exactly
one outcome in its sink.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from conveyor._engine._chunking import ChunkSizer
from conveyor._engine._contract import Capabilities
from conveyor._engine._engine import Engine
from conveyor._engine._events import EventKind, JobEvent, TaskEvent, WorkerEvent
from conveyor._engine._jobs import CallMode, Chunk, Job, TaskOptions
from conveyor._engine._recovery import MAX_STARTUP_FAILURES
from conveyor._engine._states import ExitCause, Slot, SlotState
from conveyor.errors import (
    TaskCancelledError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerInitError,
)

SIGKILL_EXIT = -9


class FakeWorker:
    _pids = itertools.count(1000)

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.pid: int | None = next(self._pids)
        self.host: str | None = None
        self.sent: list[Chunk] = []
        self.killed = self.stopped = self.abandoned = False

    def send(self, chunk: Chunk) -> int:
        self.sent.append(chunk)
        return 8 * len(chunk)

    def stop(self) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.killed = True

    def abandon(self) -> None:
        self.abandoned = True


class FakeBackend:
    name = "fake"

    def __init__(self, can_kill: bool = True) -> None:
        self.capabilities = Capabilities(can_kill=can_kill, pickles=False)
        self.workers: list[FakeWorker] = []
        self.supervising = False
        self.deadlines_changed = 0

    def bind(self, events: Any) -> None:
        self.events = events

    def spawn(self, slot: Slot) -> FakeWorker:
        worker = FakeWorker(slot)
        self.workers.append(worker)
        return worker

    def start(self) -> None:
        self.supervising = True

    def abort_start(self) -> None:
        self.supervising = False

    def prepare(self, job: Job) -> None:
        job.shipped = job.fn

    def deadline_changed(self) -> None:
        self.deadlines_changed += 1

    def stop_supervision(self) -> None:
        self.supervising = False

    def shutdown(self, timeout: float | None) -> bool:
        return True


class RecordingSink:
    """Records each task's outcome; a second outcome for one task fails the test."""

    def __init__(self) -> None:
        self.outcomes: dict[int, tuple[str, Any]] = {}
        self.closed = 0
        self.aborted: BaseException | None = None

    def _record(self, index: int, kind: str, value: Any) -> None:
        assert index not in self.outcomes, f"task {index} settled twice"
        self.outcomes[index] = (kind, value)

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        for index, value in zip(indices, values, strict=True):
            self._record(index, "done", value)

    def fail(self, index: int, exc: BaseException) -> None:
        self._record(index, "failed", exc)

    def input_failed(self, index: int, exc: BaseException) -> None:
        self._record(index, "input failed", exc)

    def close(self, total: int) -> None:
        self.closed += 1

    def abort(self, exc: BaseException) -> None:
        self.aborted = exc

    def claim(self) -> bool:
        return True


def square(x: int) -> int:
    return x * x


TERMINAL = (EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED)


class EventLog:
    """A subscriber: keeps every event, and checks what the stream promises."""

    def __init__(self) -> None:
        self.events: list[TaskEvent | WorkerEvent | JobEvent] = []

    def __call__(self, event: TaskEvent | WorkerEvent | JobEvent) -> None:
        self.events.append(event)

    def of(self, kind: EventKind) -> list[TaskEvent]:
        return [e for e in self.events if isinstance(e, TaskEvent) and e.kind is kind]

    def assert_every_task_ended_once(self, job: Job) -> None:
        queued = [t for e in self.of(EventKind.QUEUED) if e.job == job.id for t in e.tasks]
        ended = [t for k in TERMINAL for e in self.of(k) if e.job == job.id for t in e.tasks]
        assert sorted(queued) == list(range(job.admitted))
        assert sorted(ended) == list(range(job.admitted)), "a task without one final event"
        (end,) = [e for e in self.events if isinstance(e, JobEvent) and e.job == job.id]
        assert end.done + end.failed + end.cancelled == end.tasks == job.admitted


def start_engine(backend: FakeBackend, size: int = 2, log: EventLog | None = None) -> Engine:
    engine = Engine(backend, size, max_tasks_per_worker=None)
    if log is not None:
        engine.subscribe(log)
    engine.start()
    for worker in backend.workers:
        engine.on_ready(worker.slot)
    return engine


def submit(
    engine: Engine, n: int, chunk: int, *, retries: int = 0, timeout: float | None = None
) -> tuple[Job, RecordingSink]:
    sink = RecordingSink()
    job = Job(
        square,
        CallMode.SINGLE,
        sink,
        TaskOptions(timeout=timeout, retries=retries),
        ChunkSizer(chunk, engine.size),
        list(range(n)),
    )
    engine.submit(job)
    return job, sink


def running_chunk(worker: FakeWorker) -> Chunk | None:
    return worker.slot.inflight[0] if worker.slot.inflight else None


def answer(engine: Engine, worker: FakeWorker) -> None:
    """The worker runs its oldest chunk and reports the results."""
    chunk = worker.slot.inflight[0]
    values = [square(x) for x in chunk.items]
    engine.on_chunk_done(worker.slot, chunk.id, values, {}, 0.001, 16)


def live(backend: FakeBackend) -> list[FakeWorker]:
    return [w for w in backend.workers if w.slot.state is not SlotState.DEAD]


def exit_worker(engine: Engine, backend: FakeBackend, worker: FakeWorker, code: int) -> None:
    engine.on_worker_exit(worker.slot, code)
    for new in live(backend):
        if new.slot.state is SlotState.STARTING and new is not worker:
            engine.on_ready(new.slot)


def run_to_end(engine: Engine, backend: FakeBackend) -> None:
    """Answer every chunk until nothing is in flight."""
    for _ in range(10_000):
        busy = [w for w in live(backend) if w.slot.inflight]
        if not busy:
            return
        answer(engine, busy[0])
    raise AssertionError("the engine kept sending")


def assert_every_task_settled_once(engine: Engine, job: Job, sink: RecordingSink) -> None:
    engine.check_books()
    stats = engine.statistics()
    assert job.complete
    if sink.aborted is None:
        assert sink.closed == 1
        if job.cancelled:  # tasks withdrawn before they were sent get no delivery
            assert set(sink.outcomes) <= set(range(job.admitted))
        else:
            assert sorted(sink.outcomes) == list(range(job.admitted))
    assert job.done + job.failed + job.cancelled_items == job.admitted
    assert stats.tasks_done + stats.tasks_failed + stats.tasks_cancelled == stats.tasks_submitted


def the_worker_running(backend: FakeBackend, job: Job) -> FakeWorker:
    for worker in live(backend):
        chunk = running_chunk(worker)
        if chunk is not None and chunk.job is job:
            return worker
    raise AssertionError("no worker runs the job")


def end_worker(engine: Engine, backend: FakeBackend, job: Job, cause: ExitCause) -> FakeWorker:
    """End the worker running ``job``'s first chunk, the way ``cause`` says."""
    worker = the_worker_running(backend, job)
    if cause is ExitCause.CRASHED:
        exit_worker(engine, backend, worker, SIGKILL_EXIT)
    elif cause is ExitCause.TIMED_OUT:
        engine.tick(1e12)  # far past every deadline
        assert worker.killed
        exit_worker(engine, backend, worker, SIGKILL_EXIT)
    elif cause is ExitCause.CANCELLED:
        engine.cancel(job, running=True)
        assert worker.killed
        exit_worker(engine, backend, worker, SIGKILL_EXIT)
    elif cause is ExitCause.TERMINATED:
        engine.terminate()
        assert all(w.killed for w in live(backend))
        for each in live(backend):
            exit_worker(engine, backend, each, SIGKILL_EXIT)
    elif cause is ExitCause.RETIRED:
        engine.on_retiring(worker.slot)
        exit_worker(engine, backend, worker, 0)
    else:  # pragma: no cover - the matrix below lists the causes above only
        raise AssertionError(cause)
    return worker


CAUSES = [
    ExitCause.CRASHED,
    ExitCause.TIMED_OUT,
    ExitCause.CANCELLED,
    ExitCause.TERMINATED,
    ExitCause.RETIRED,
]


@pytest.mark.parametrize("cancelled", [False, True], ids=["live-job", "cancelled-job"])
@pytest.mark.parametrize("retries", [0, 1], ids=["no-retries", "retries-left"])
@pytest.mark.parametrize("chunk", [1, 4], ids=["one-task-chunk", "many-task-chunk"])
@pytest.mark.parametrize("cause", CAUSES, ids=[c.value for c in CAUSES])
def test_every_exit_cause_settles_every_task_exactly_once(cause, chunk, retries, cancelled):
    backend = FakeBackend()
    log = EventLog()
    engine = start_engine(backend, log=log)
    job, sink = submit(engine, 12, chunk, retries=retries, timeout=60.0)
    first = running_chunk(the_worker_running(backend, job))
    assert first is not None
    first_tasks = list(first.indices)
    in_flight = sum(len(c) for w in live(backend) for c in w.slot.inflight)
    if cancelled:
        engine.cancel(job)  # withdraw what has not been sent; what runs runs on
    end_worker(engine, backend, job, cause)
    run_to_end(engine, backend)

    assert_every_task_settled_once(engine, job, sink)
    log.assert_every_task_ended_once(job)
    exited = [
        e for e in log.events if isinstance(e, WorkerEvent) and e.kind.value.endswith("exited")
    ]
    assert cause in {e.cause for e in exited}
    stats = engine.statistics()
    outcome = {i: sink.outcomes.get(i, ("aborted", sink.aborted)) for i in first_tasks}
    if cause is ExitCause.TERMINATED:
        assert isinstance(sink.aborted, TaskCancelledError)
        assert stats.tasks_cancelled + stats.tasks_done == 12
    elif cause is ExitCause.CANCELLED:
        assert all(isinstance(v, TaskCancelledError) for _, v in outcome.values())
    elif cause is ExitCause.RETIRED:
        # A worker that announced its exit never started what it held: re-run, uncharged.
        if cancelled:
            assert all(i not in sink.outcomes for i in first_tasks)  # withdrawn
        else:
            assert {k for k, _ in outcome.values()} == {"done"}
        assert stats.tasks_retried == 0
    elif chunk > 1:
        # Which task was at fault is unknown: each re-runs alone, uncharged.
        if cancelled:
            assert all(i not in sink.outcomes for i in first_tasks)  # withdrawn on requeue
        else:
            assert {k for k, _ in outcome.values()} == {"done"}
        assert stats.tasks_retried == 0
    elif cause is ExitCause.TIMED_OUT:
        ((kind, error),) = outcome.values()
        assert kind == "failed" and isinstance(error, TaskTimeoutError)
        assert stats.task_timeouts == 1
    else:  # a lone task crashed
        ((kind, value),) = outcome.values()
        if retries and not cancelled:
            assert (kind, value) == ("done", square(first_tasks[0]))
            assert stats.tasks_retried == 1
        else:
            assert kind == "failed" and isinstance(value, WorkerCrashedError)
            assert value.attempts == 1
    if cancelled and cause is not ExitCause.TERMINATED:
        # Tasks never sent were withdrawn: no outcome delivered, counted as cancelled.
        assert stats.tasks_cancelled >= 12 - in_flight
        assert not any(i in sink.outcomes for i in range(in_flight, 12))


def test_a_worker_that_dies_before_it_is_ready_costs_nothing_until_it_repeats():
    backend = FakeBackend()
    engine = Engine(backend, 1, max_tasks_per_worker=None)
    engine.start()
    _, sink = submit(engine, 3, 1)
    for attempt in range(1, MAX_STARTUP_FAILURES):
        worker = live(backend)[0]
        assert worker.slot.state is SlotState.STARTING and worker.slot.inflight
        engine.on_worker_exit(worker.slot, 1)
        assert sink.outcomes == {} and sink.aborted is None  # requeued, uncharged
        assert len(backend.workers) == attempt + 1  # replaced
    engine.on_worker_exit(live(backend)[0].slot, 1)
    assert isinstance(sink.aborted, WorkerInitError)
    assert "3 workers in a row died while starting" in str(sink.aborted)
    assert not backend.supervising  # the engine told the backend to stop
    engine.check_books()
    stats = engine.statistics()
    assert stats.tasks_failed == 3 and stats.worker_crashes == 3


def test_a_clean_exit_after_the_work_is_stopped_not_crashed():
    backend = FakeBackend()
    engine = start_engine(backend)
    job, sink = submit(engine, 6, 3)
    run_to_end(engine, backend)
    engine.close()
    assert all(w.stopped for w in live(backend)) and not backend.supervising
    for worker in live(backend):
        engine.on_worker_exit(worker.slot, 0)
    assert_every_task_settled_once(engine, job, sink)
    stats = engine.statistics()
    assert stats.worker_crashes == 0 and stats.workers_started == 2
    assert engine.join(timeout=1)


def test_a_thread_that_overruns_its_timeout_is_abandoned_and_replaced():
    backend = FakeBackend(can_kill=False)
    engine = start_engine(backend, size=1)
    job, sink = submit(engine, 4, 1, timeout=5.0)
    worker = the_worker_running(backend, job)
    (index,) = running_chunk(worker).indices
    engine.tick(1e12)
    assert worker.abandoned and not worker.killed
    assert isinstance(sink.outcomes[index][1], TaskTimeoutError)
    assert len(backend.workers) == 2  # the replacement
    engine.on_ready(backend.workers[-1].slot)
    run_to_end(engine, backend)
    engine.on_worker_exit(worker.slot, 0)  # the abandoned thread ends much later
    assert len(backend.workers) == 2  # not replaced twice
    assert_every_task_settled_once(engine, job, sink)


class Gate:
    """An admission that grants a fixed number of tasks, then nothing until refilled."""

    def __init__(self, allowance: int) -> None:
        self.allowance = allowance
        self.asked = 0

    def take(self, job: Job, wanted: int) -> int:
        self.asked += 1
        granted = min(wanted, self.allowance)
        self.allowance -= granted
        return granted

    def bound(self, job: Job, indices, granted: int) -> None:
        self.allowance += granted - len(indices)  # what the chunk did not use comes back


def test_admission_holds_a_job_back_until_it_is_woken():
    backend = FakeBackend()
    engine = start_engine(backend)
    gate = Gate(allowance=0)
    sink = RecordingSink()
    held = Job(
        square, CallMode.SINGLE, sink, TaskOptions(), ChunkSizer(1, 2), [1, 2, 3], admission=gate
    )
    engine.submit(held)
    other, other_sink = submit(engine, 2, 1)  # a job without admission is not held up
    assert gate.asked >= 1
    assert all(chunk.job is other for w in backend.workers for chunk in w.sent)
    run_to_end(engine, backend)
    assert sorted(other_sink.outcomes) == [0, 1]
    assert sink.outcomes == {}

    gate.allowance = 2
    engine.wake_dispatch()
    sent = [c for w in backend.workers for c in w.sent if c.job is held]
    assert sum(len(c) for c in sent) == 2  # exactly what was granted
    run_to_end(engine, backend)
    gate.allowance = 5
    engine.wake_dispatch()
    run_to_end(engine, backend)
    assert_every_task_settled_once(engine, held, sink)
    assert [sink.outcomes[i] for i in range(3)] == [("done", 1), ("done", 4), ("done", 9)]


def test_the_ledger_refuses_an_outcome_beyond_what_was_admitted():
    backend = FakeBackend()
    engine = start_engine(backend)
    job, _ = submit(engine, 1, 1)
    ledger = engine._ledger
    ledger.done(job, [0], [0], [])
    with pytest.raises(AssertionError, match="settled 2 outcomes"):
        ledger.done(job, [0], [0], [])


def cube(x: int) -> int:
    return x * x * x


def test_a_second_job_of_a_function_starts_from_what_the_first_measured():
    backend = FakeBackend()
    engine = start_engine(backend, size=1)

    def adaptive(fn):
        sink = RecordingSink()
        job = Job(fn, CallMode.SINGLE, sink, TaskOptions(), ChunkSizer(None, 1), list(range(1000)))
        engine.submit(job)
        return job

    first = adaptive(square)
    assert len(running_chunk(live(backend)[0])) == 1  # nothing known yet: a probe chunk
    run_to_end(engine, backend)  # answers report 1 ms per chunk
    assert first.complete
    second = adaptive(square)
    assert len(running_chunk(live(backend)[0])) > 1  # no probe: it starts where first ended
    run_to_end(engine, backend)
    other = adaptive(cube)
    assert len(running_chunk(live(backend)[0])) == 1  # another function learns for itself
    run_to_end(engine, backend)
    assert second.complete and other.complete
    engine.check_books()


def single_call(engine: Engine, fn, *, timeout: float | None = None) -> Job:
    job = Job(
        fn, CallMode.SINGLE, RecordingSink(), TaskOptions(timeout=timeout), ChunkSizer(1, 2), [3]
    )
    engine.submit(job)
    return job


def test_many_callers_of_a_fast_function_keep_every_call_in_flight():
    backend = FakeBackend()
    engine = start_engine(backend)
    warm = Job(square, CallMode.SINGLE, RecordingSink(), TaskOptions(), ChunkSizer(1, 2), [1, 2])
    engine.submit(warm)
    run_to_end(engine, backend)  # the engine now knows square takes ~1 ms a call
    assert warm.complete
    calls = [single_call(engine, square) for _ in range(16)]
    held = [len(w.slot.inflight) for w in live(backend)]
    assert held == [2, 2]  # 1 ms calls: one held behind the running one (HOLD_S)
    run_to_end(engine, backend)
    assert all(c.complete for c in calls)

    def fast(x: int) -> int:
        return x

    warm = Job(fast, CallMode.SINGLE, RecordingSink(), TaskOptions(), ChunkSizer(1, 2), [1])
    engine.submit(warm)
    worker = the_worker_running(backend, warm)
    chunk = running_chunk(worker)
    engine.on_chunk_done(worker.slot, chunk.id, [1], {}, 2e-6, 16)  # a 2 us call
    calls = [single_call(engine, fast) for _ in range(16)]
    assert [len(w.slot.inflight) for w in live(backend)] == [8, 8]  # nobody waits in the parent
    calls += [single_call(engine, fast, timeout=5.0)]
    run_to_end(engine, backend)
    assert all(c.complete for c in calls)
    engine.check_books()
