"""The engine: which chunk runs on which worker, and what happens when it ends.

The engine is backend-agnostic. A backend (``_process.py``, ``_thread.py``) starts workers
and moves chunks; the engine decides, and keeps the books: for every worker, the chunks it
holds right now (``Slot.inflight``), so a dead or stuck worker costs exactly those tasks.

Data flow for a process pool (see docs/architecture.md for the full picture)::

    caller thread ── submit/map ──> Engine.dispatch ── frame ──> socket ──> worker process
                                         ^                                      |
                                         |                                      v
                         Engine.on_chunk_done <── conveyor-supervisor <── socket (result)

The caller thread writes the first chunks itself (no hand-off on the way in); the
supervisor thread reads results, reaps dead workers, enforces deadlines and sends more.
Every state change happens under ``Engine._lock``. Results are handed to sinks after the
lock is released, so user callbacks never run under it.
"""

from __future__ import annotations

import enum
import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from ._callbacks import call_reporting_errors
from ._execute import FAILED
from ._scheduler import PREFETCH_BELOW_S, Chunk, Job
from ._serialize import (
    RESULT_NOT_PICKLED_NOTE,
    FunctionRegistry,
    FunctionTable,
    add_note,
    describe_call,
)
from ._stats import Counters, PoolStats, WorkerStats
from .errors import (
    ConveyorError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerInitError,
)

Thunk = tuple[Callable[..., Any], tuple[Any, ...]]

# Workers that die before they are ready, this many times in a row, mean the pool cannot
# start (a main module without the `if __name__ == "__main__":` guard, a broken import):
# the pool fails its tasks with WorkerInitError instead of respawning forever.
MAX_STARTUP_FAILURES = 3
# Exit code of a worker that found, while importing the main module, that the module
# creates a pool at import time (no `if __name__ == "__main__":` guard). It exits
# quietly; the parent says why, once (see _compat.starting_as_worker).
MAIN_WITHOUT_GUARD_EXIT = 5


class EncodeError(Exception):
    """Raised by a backend's ``send`` when some items (or the function) cannot be pickled.

    ``failures`` maps a position in the chunk to its error; position -1 is the function.
    """

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__(failures)
        self.failures = failures


class WorkerHandle(Protocol):
    slot: Slot
    pid: int | None

    def send(self, chunk: Chunk, send_function: bool) -> int: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def abandon(self) -> None: ...


class Backend(Protocol):
    name: str
    pickles: bool
    can_kill: bool
    engine: Engine | None  # bound by Engine.start, before any worker is spawned

    def start(self, engine: Engine) -> None: ...

    def dump_function(self, fn: Callable[..., Any]) -> bytes | None: ...

    def spawn(self, slot: Slot) -> WorkerHandle: ...

    def abort_start(self) -> None: ...

    def wakeup(self) -> None: ...

    def shutdown(self, timeout: float | None) -> bool: ...


class SlotState(enum.Enum):
    STARTING = "starting"  # started; its initializer may still be running
    READY = "ready"
    RETIRING = "retiring"  # takes no new work; exits after what it holds
    DEAD = "dead"


class EngineState(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"  # no new work; finishing what was submitted
    STOPPING = "stopping"  # all work done; workers told to exit
    TERMINATED = "terminated"
    BROKEN = "broken"  # workers cannot start (failing initializer)


class KillReason(enum.Enum):
    TIMEOUT = "timeout"
    CANCEL = "cancel"
    TERMINATE = "terminate"


class Slot:
    """The engine's record of one worker: what it holds, and its counters."""

    def __init__(self, index: int, budget: int | None) -> None:
        self.index = index
        self.handle: WorkerHandle | None = None
        self.state = SlotState.STARTING
        self.inflight: deque[Chunk] = deque()
        self.funcs = FunctionTable()
        self.budget = budget  # tasks it may still be given (max_tasks_per_child)
        self.kill_reason: KillReason | None = None
        self.retired_itself = False  # announced its exit; what it holds never started
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.tasks_done = 0
        self.chunks_done = 0
        self.busy_s = 0.0

    @property
    def takes_work(self) -> bool:
        return self.state in (SlotState.STARTING, SlotState.READY) and self.budget != 0


class Engine:
    """Schedules jobs onto a fixed number of supervised workers."""

    def __init__(self, backend: Backend, size: int, *, max_tasks_per_worker: int | None) -> None:
        if size < 1:
            raise ValueError("Number of processes must be at least 1")
        self.backend = backend
        self.size = size
        self.max_tasks_per_worker = max_tasks_per_worker
        self.functions = FunctionRegistry()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = EngineState.RUNNING
        self._slots: list[Slot] = []
        self._jobs: deque[Job] = deque()  # jobs with items still to send, in arrival order
        self._active: dict[int, Job] = {}  # jobs not yet complete
        self._chunk_ids = itertools.count(1)
        self._counters = Counters()
        self._created = time.monotonic()
        self._created_wall = time.time()
        self._fatal: BaseException | None = None
        self._startup_failures = 0
        self._deferring_thread: int | None = None
        self._deferred: list[Thunk] = []  # touched only by the deferring thread

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, then the backend's supervision; undo everything on failure."""
        self.backend.engine = self
        with self._lock:
            try:
                for index in range(self.size):
                    self._slots.append(self._spawn(Slot(index, self.max_tasks_per_worker)))
            except BaseException:
                self._state = EngineState.TERMINATED
                self.backend.abort_start()
                raise
        self.backend.start(self)

    def _spawn(self, slot: Slot) -> Slot:
        slot.handle = self.backend.spawn(slot)
        self._counters.workers_started += 1
        return slot

    @property
    def state(self) -> EngineState:
        return self._state

    def close(self) -> None:
        """No new work; workers exit once everything submitted is done."""
        with self._delivering() as out:
            if self._state is EngineState.RUNNING:
                self._state = EngineState.CLOSING
                self._stop_if_idle(out)

    def terminate(self) -> None:
        """Stop now: kill the workers, fail everything unfinished."""
        with self._delivering() as out:
            if self._state in (EngineState.TERMINATED,):
                return
            self._state = EngineState.TERMINATED
            self._abort_all(
                TaskCancelledError("the pool was terminated before the task finished"), out
            )
            for slot in self._slots:
                if slot.state is not SlotState.DEAD and slot.handle is not None:
                    slot.kill_reason = KillReason.TERMINATE
                    slot.handle.kill()
            self._changed.notify_all()
        self.backend.wakeup()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has exited; True if they all did in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while any(s.state is not SlotState.DEAD for s in self._slots):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining if remaining is not None else 0.5)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.backend.shutdown(left)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job is complete."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._active:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining if remaining is not None else 0.5)
        return True

    # --- submitting --------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Accept a job; its items (if already known) start going out at once."""
        with self._delivering() as out:
            self._check_accepting()
            try:
                job.func_id, job.func_bytes = self.functions.register(
                    job.fn, self.backend.dump_function
                )
            except Exception as exc:  # the function cannot be pickled: its job fails
                out.append((job.sink.abort, (exc,)))
                return
            self._active[job.id] = job
            if job.total is not None:
                self._counters.tasks_submitted += job.total
            self._jobs.append(job)
            if job.complete:  # an empty map
                self._finish_job(job, out)
            self._dispatch(out)

    def push(self, job: Job, batch: list[Any]) -> None:
        """Add lazily read items to a job (from its feeder thread)."""
        with self._delivering() as out:
            if job.cancelled or job.id not in self._active:
                # Read while the job was being cancelled: these items are settled as
                # withdrawn, or the job would wait for them forever once its input ends.
                job.finished += len(batch)
                self._finish_if_complete(job, out)
                return
            job.push(batch)
            self._counters.tasks_submitted += len(batch)
            self._dispatch(out)

    def end_input(self, job: Job, total: int, error: BaseException | None = None) -> None:
        with self._delivering() as out:
            job.end_input(total)
            if error is not None:
                out.append((job.sink.input_failed, (total, error)))
            self._finish_if_complete(job, out)

    def cancel(self, job: Job, *, running: bool = False) -> int:
        """Withdraw a job's items not yet sent; return how many were withdrawn.

        With ``running``, also stop the process workers running its tasks (they are
        replaced); those tasks fail with ``TaskCancelledError``.
        """
        with self._delivering() as out:
            job.cancelled = True
            dropped = job.withdraw()
            self._counters.tasks_cancelled += dropped
            job.finished += dropped
            if running and self.backend.can_kill:
                self._kill_running(job)
            if job.id in self._active and (job.complete or not self._job_inflight(job)):
                self._finish_job(job, out)
            return dropped

    def _kill_running(self, job: Job) -> None:
        for slot in self._slots:
            if slot.inflight and slot.inflight[0].job is job and slot.kill_reason is None:
                assert slot.handle is not None
                slot.kill_reason = KillReason.CANCEL
                slot.handle.kill()

    def _check_accepting(self) -> None:
        if self._state is EngineState.BROKEN and self._fatal is not None:
            raise self._fatal
        if self._state is not EngineState.RUNNING:
            raise ValueError("Pool not running")

    # --- dispatch ----------------------------------------------------------------------

    def _dispatch(self, out: list[Thunk]) -> None:
        """Send chunks while some job has items and some worker has room."""
        if self._state not in (EngineState.RUNNING, EngineState.CLOSING):
            return
        while True:
            job = self._next_ready_job()
            if job is None:
                return
            slot = self._free_slot(job)
            if slot is None:
                return
            self._send(slot, job, out)

    def _next_ready_job(self) -> Job | None:
        jobs = self._jobs
        for _ in range(len(jobs)):
            job = jobs[0]
            if job.has_ready_items() and not job.cancelled:
                return job
            if job.input_done or job.cancelled:
                jobs.popleft()  # fully sent; it stays in _active until its results are in
            else:
                jobs.rotate(-1)  # a lazy job waiting for its feeder: look past it
        return None

    def _free_slot(self, job: Job) -> Slot | None:
        capacity = self._capacity(job)
        best: Slot | None = None
        for slot in self._slots:
            if (
                slot.takes_work
                and len(slot.inflight) < capacity
                and (best is None or len(slot.inflight) < len(best.inflight))
            ):
                best = slot
                if not slot.inflight:
                    break
        return best

    def _capacity(self, job: Job) -> int:
        sizer = job.sizer
        if job.options.timeout is not None or sizer.item_s is None:
            return 1  # a known start time per task, or no estimate yet: no prefetch
        size = sizer.size(job.remaining_hint())
        return 2 if sizer.chunk_seconds(size) < PREFETCH_BELOW_S else 1

    def _send(self, slot: Slot, job: Job, out: list[Thunk]) -> None:
        size = job.sizer.size(job.remaining_hint())
        if slot.budget is not None:
            size = min(size, slot.budget)
        chunk = job.next_chunk(next(self._chunk_ids), size)
        if not job.sink.claim():
            self._drop_cancelled(chunk, out)  # e.g. a future cancelled while it waited
            return
        assert slot.handle is not None
        while chunk.items:
            send_function = not slot.funcs.touch(job.func_id)
            try:
                chunk.nbytes = slot.handle.send(chunk, send_function)
            except EncodeError as exc:
                self._drop_unsendable(chunk, exc.failures, out)
                continue
            except BaseException as exc:  # Ctrl-C (or SystemExit) while pickling arguments
                self._drop_interrupted(chunk, exc, out)
                if threading.get_ident() != self._deferring_thread:
                    raise  # the caller's own submit or map: the interrupt is theirs
                return
            if send_function:
                slot.funcs.put(job.func_id, True)
            break
        if not chunk.items:
            return
        now = time.monotonic()
        chunk.sent_at = now
        if len(chunk) > 1:
            # Slack for the chunk's other tasks. A chunk that overruns it is split and its
            # tasks re-run alone, uncharged, each then held to the exact timeout.
            chunk.expected_s = 2 * job.sizer.chunk_seconds(len(chunk))
        if not slot.inflight:
            chunk.started_at = now
        slot.inflight.append(chunk)
        if slot.budget is not None:
            slot.budget -= len(chunk)
        self._counters.chunks_sent += 1
        self._counters.bytes_sent += chunk.nbytes
        self._counters.last_chunk_size = len(chunk)
        if job.options.timeout is not None:
            self.backend.wakeup()  # the supervisor must learn the new deadline

    def _drop_cancelled(self, chunk: Chunk, out: list[Thunk]) -> None:
        job = chunk.job
        job.finished += len(chunk)
        self._counters.tasks_cancelled += len(chunk)
        self._finish_if_complete(job, out)

    def _drop_interrupted(self, chunk: Chunk, exc: BaseException, out: list[Thunk]) -> None:
        """Settle a chunk whose pickling was interrupted: its tasks never ran."""
        job = chunk.job
        for index in chunk.indices:
            error = TaskCancelledError(
                f"{describe_call(job.fn, index)} was not run: {type(exc).__name__} was "
                "raised while its arguments were being pickled"
            )
            error.__cause__ = exc
            self._fail_item(job, index, error, out)
        chunk.items, chunk.indices = [], []
        self._finish_if_complete(job, out)

    def _drop_unsendable(
        self, chunk: Chunk, failures: dict[int, BaseException], out: list[Thunk]
    ) -> None:
        """Fail the items that cannot be pickled; keep the rest of the chunk."""
        job = chunk.job
        if -1 in failures:
            failures = {pos: failures[-1] for pos in range(len(chunk.items))}
        keep = [pos for pos in range(len(chunk.items)) if pos not in failures]
        for pos, exc in failures.items():
            self._fail_item(job, chunk.indices[pos], exc, out)
        chunk.indices = [chunk.indices[pos] for pos in keep]
        chunk.items = [chunk.items[pos] for pos in keep]
        self._finish_if_complete(job, out)

    # --- outcomes (called by backends) -------------------------------------------------

    def on_ready(self, slot: Slot) -> None:
        with self._lock:
            self._startup_failures = 0
            if slot.state is SlotState.STARTING:
                slot.state = SlotState.READY

    def on_retiring(self, slot: Slot) -> None:
        """The worker will exit after this message (its memory limit): give it no more."""
        with self._lock:
            slot.state = SlotState.RETIRING
            slot.retired_itself = True

    def on_chunk_done(
        self,
        slot: Slot,
        chunk_id: int,
        values: list[Any],
        errors: dict[int, BaseException],
        compute_s: float,
        nbytes: int,
    ) -> None:
        with self._delivering() as out:
            if not slot.inflight or slot.inflight[0].id != chunk_id:
                return  # a thread worker finishing a task that already timed out
            chunk = slot.inflight.popleft()
            if -1 in errors:  # the whole chunk failed (its arguments or results unpicklable)
                errors = dict.fromkeys(range(len(chunk)), errors[-1])
                values = [None] * len(chunk)
            now = time.monotonic()
            if slot.inflight:
                slot.inflight[0].started_at = now
            slot.tasks_done += len(chunk)
            slot.chunks_done += 1
            slot.busy_s += compute_s
            self._counters.bytes_received += nbytes
            chunk.job.sizer.observe(len(chunk), compute_s, chunk.nbytes)
            self._record_outcomes(chunk, values, errors, out)
            if slot.budget == 0 and not slot.inflight:
                slot.state = SlotState.RETIRING
            self._dispatch(out)
            self._stop_if_idle(out)

    def _record_outcomes(
        self, chunk: Chunk, values: list[Any], errors: dict[int, BaseException], out: list[Thunk]
    ) -> None:
        job = chunk.job
        if errors:
            good = [pos for pos in range(len(values)) if pos not in errors]
            for pos, exc in errors.items():
                _name_the_task_of_an_unpicklable_result(exc, job, chunk.indices[pos])
                self._fail_item(job, chunk.indices[pos], exc, out)
            indices: Sequence[int] = [chunk.indices[pos] for pos in good]
            values = [values[pos] for pos in good]
        else:
            indices = chunk.indices
        if indices:
            job.finished += len(indices)
            self._counters.tasks_done += len(indices)
            out.append((job.sink.deliver, (indices, values)))
        self._finish_if_complete(job, out)

    def _fail_item(self, job: Job, index: int, exc: BaseException, out: list[Thunk]) -> None:
        """Record a failed task; the caller calls ``_finish_if_complete`` when done."""
        job.finished += 1
        self._counters.tasks_failed += 1
        out.append((job.sink.fail, (index, exc)))

    def on_init_failed(self, slot: Slot, exc: BaseException) -> None:
        """A worker's initializer raised: the pool cannot run anything."""
        error = WorkerInitError(
            f"the worker initializer raised {type(exc).__name__}: {exc}. The pool cannot "
            "start workers and has stopped; fix the initializer and create a new pool."
        )
        error.__cause__ = exc
        with self._delivering() as out:
            self._break(error, out)

    def on_internal_error(self, exc: BaseException) -> None:
        """The backend's supervision failed (a bug): fail everything loudly, stop."""
        error = ConveyorError(
            f"conveyor's supervisor thread failed ({type(exc).__name__}: {exc}); the pool "
            "has stopped. Please report this with the traceback printed above."
        )
        error.__cause__ = exc
        with self._delivering() as out:
            self._break(error, out)

    def _break(self, error: ConveyorError, out: list[Thunk]) -> None:
        if self._state is EngineState.BROKEN:
            return
        self._state = EngineState.BROKEN
        self._fatal = error
        self._abort_all(error, out)
        for other in self._slots:
            if other.state is not SlotState.DEAD and other.handle is not None:
                other.handle.kill()
        self._changed.notify_all()

    def _worker_failed_to_start(self, exitcode: int | None, out: list[Thunk]) -> None:
        self._startup_failures += 1
        if exitcode == MAIN_WITHOUT_GUARD_EXIT:
            self._break(WorkerInitError(_main_without_guard_message()), out)
        elif self._startup_failures >= MAX_STARTUP_FAILURES:
            self._break(
                WorkerInitError(
                    f"{self._startup_failures} worker processes in a row died while starting "
                    f"(last: {_describe_exitcode(exitcode)}) before running any task. Common "
                    "causes: a main module that starts a pool without the "
                    "`if __name__ == '__main__':` guard, an import that fails in a fresh "
                    "process, or too little memory. Their output (stderr) says more."
                ),
                out,
            )

    def on_worker_exit(self, slot: Slot, exitcode: int | None) -> None:
        """A worker is gone: settle what it held, and replace it if work remains."""
        with self._delivering() as out:
            never_ready = slot.state is SlotState.STARTING and slot.kill_reason is None
            if slot.kill_reason is None and not slot.retired_itself and exitcode != 0:
                self._counters.worker_crashes += 1  # died on its own: crash, OOM, kill -9
            slot.state = SlotState.DEAD
            held = list(slot.inflight)
            slot.inflight.clear()
            if (
                exitcode == 0
                and self._state is EngineState.RUNNING
                and (not held or slot.retired_itself)
            ):
                self._counters.workers_recycled += 1  # max tasks or memory limit reached
            if never_ready and self._state in (EngineState.RUNNING, EngineState.CLOSING):
                self._requeue(held, out)  # it never read them: they cost nothing
                held = []
                self._worker_failed_to_start(exitcode, out)
            elif slot.retired_itself:
                self._requeue(held, out)
                held = []
            if held:
                pid = slot.handle.pid if slot.handle else None
                self._settle_lost_chunks(slot, held, pid, exitcode, out)
                for job in {chunk.job for chunk in held}:
                    self._finish_if_complete(job, out)
            # A slot replaced earlier (a thread abandoned after a timeout) is not replaced twice.
            if any(s is slot for s in self._slots) and self._should_replace():
                self._counters.retired_busy_s += slot.busy_s
                self._replace(slot)
                self._dispatch(out)
            self._stop_if_idle(out)
            self._changed.notify_all()

    def _replace(self, slot: Slot) -> None:
        position = next(i for i, s in enumerate(self._slots) if s is slot)
        self._slots[position] = self._spawn(Slot(slot.index, self.max_tasks_per_worker))

    def _should_replace(self) -> bool:
        if self._state is EngineState.RUNNING:
            return True
        return self._state is EngineState.CLOSING and bool(self._active)

    def _settle_lost_chunks(
        self, slot: Slot, held: list[Chunk], pid: int | None, exitcode: int | None, out: list[Thunk]
    ) -> None:
        running, waiting = held[0], held[1:]
        self._requeue(waiting, out)  # never started: they cost nothing
        reason = slot.kill_reason
        if reason is KillReason.TERMINATE:
            return
        if reason is KillReason.CANCEL:
            for index in running.indices:
                self._counters.tasks_cancelled += 1
                self._fail_item(
                    running.job,
                    index,
                    TaskCancelledError(
                        "the task was cancelled while it ran; its worker was stopped"
                    ),
                    out,
                )
            return
        if len(running) > 1:
            # Which item crashed is unknown: run each alone, uncharged; the culprit
            # crashes again on its own and is charged then.
            self._requeue([running], out, split=True)
            return
        job = running.job
        index, item = running.indices[0], running.items[0]
        what = describe_call(job.fn, index if job.total != 1 else None)
        if reason is KillReason.TIMEOUT:
            self._counters.task_timeouts += 1
            exc: BaseException = TaskTimeoutError(
                f"{what} ran longer than its timeout of {job.options.timeout} s; its worker "
                f"(pid {pid}) was stopped and replaced",
                task=what,
                timeout=job.options.timeout,
            )
            self._fail_item(job, index, exc, out)
            return
        attempt = running.attempt + 1
        if attempt <= job.options.retries and not job.cancelled:
            self._counters.tasks_retried += 1
            job.requeue((index,), [item], attempt)
            self._schedule_first(job)
            return
        exc = WorkerCrashedError(
            pid=pid, exitcode=exitcode, task=what, attempts=attempt, retries=job.options.retries
        )
        self._fail_item(job, index, exc, out)

    def _requeue(self, chunks: list[Chunk], out: list[Thunk], *, split: bool = False) -> None:
        for chunk in chunks:
            job = chunk.job
            if job.cancelled:
                job.finished += len(chunk)
                self._counters.tasks_cancelled += len(chunk)
                self._finish_if_complete(job, out)
                continue
            if split:
                for index, item in zip(chunk.indices, chunk.items, strict=True):
                    job.requeue((index,), [item], chunk.attempt)
            else:
                job.requeue(chunk.indices, chunk.items, chunk.attempt)
            self._schedule_first(job)

    def _schedule_first(self, job: Job) -> None:
        if job not in self._jobs:
            self._jobs.appendleft(job)

    # --- deadlines ---------------------------------------------------------------------

    def tick(self, now: float) -> float | None:
        """Enforce per-task timeouts; return the next deadline (monotonic), if any."""
        next_deadline: float | None = None
        with self._delivering() as out:
            for slot in self._slots:
                if not slot.inflight or slot.kill_reason is not None:
                    continue
                chunk = slot.inflight[0]
                timeout = chunk.job.options.timeout
                if timeout is None or chunk.started_at is None:
                    continue
                deadline = chunk.started_at + timeout + chunk.expected_s
                if deadline <= now:
                    self._expire(slot, out)
                elif next_deadline is None or deadline < next_deadline:
                    next_deadline = deadline
        return next_deadline

    def _expire(self, slot: Slot, out: list[Thunk]) -> None:
        assert slot.handle is not None
        if self.backend.can_kill:
            slot.kill_reason = KillReason.TIMEOUT
            slot.handle.kill()
            return
        # A thread cannot be stopped: fail its task now, let it run on, replace it.
        chunk = slot.inflight.popleft()
        self._requeue(list(slot.inflight), out)
        slot.inflight.clear()
        slot.state = SlotState.RETIRING
        slot.handle.abandon()
        self._counters.task_timeouts += len(chunk)
        what = describe_call(chunk.job.fn)
        for index in chunk.indices:
            self._fail_item(
                chunk.job,
                index,
                TaskTimeoutError(
                    f"{what} ran longer than its timeout of {chunk.job.options.timeout} s; "
                    "a thread cannot be stopped, so it runs on in the background and its "
                    "result will be discarded",
                    task=what,
                    timeout=chunk.job.options.timeout,
                ),
                out,
            )
        self._finish_if_complete(chunk.job, out)
        self._replace(slot)
        self._dispatch(out)

    # --- completion --------------------------------------------------------------------

    def _finish_if_complete(self, job: Job, out: list[Thunk]) -> None:
        if job.complete and job.id in self._active:
            self._finish_job(job, out)

    def _finish_job(self, job: Job, out: list[Thunk]) -> None:
        del self._active[job.id]
        job.release()  # its items may be large; nothing will send them again
        out.append((job.sink.close, (job.total or 0,)))
        self._changed.notify_all()
        # The last job of a closing pool may end anywhere (a result, a cancel, the end of
        # a lazy input): whichever it is, the workers must then be told to stop.
        self._stop_if_idle(out)

    def _job_inflight(self, job: Job) -> bool:
        return any(c.job is job for s in self._slots for c in s.inflight)

    def _stop_if_idle(self, out: list[Thunk]) -> None:
        if self._state is not EngineState.CLOSING or self._active:
            return
        self._state = EngineState.STOPPING
        for slot in self._slots:
            if slot.state is not SlotState.DEAD and slot.handle is not None:
                slot.state = SlotState.RETIRING
                slot.handle.stop()
        self._changed.notify_all()

    def _abort_all(self, exc: BaseException, out: list[Thunk]) -> None:
        for job in list(self._active.values()):
            job.cancelled = True
            job.withdraw()
            out.append((job.sink.abort, (exc,)))
        self._active.clear()
        self._jobs.clear()
        for slot in self._slots:
            slot.inflight.clear()

    @contextmanager
    def _delivering(self) -> Iterator[list[Thunk]]:
        """Hold the lock for the body; then run the deliveries it queued, lock released.

        On the thread that called ``defer_deliveries`` they wait for ``run_deferred``.
        """
        out: list[Thunk] = []
        try:
            with self._lock:
                yield out
        finally:
            if threading.get_ident() == self._deferring_thread:
                self._deferred.extend(out)
            else:
                _run_thunks(out)

    def defer_deliveries(self) -> None:
        """Hold back deliveries triggered by the calling thread until ``run_deferred``.

        The process supervisor uses this to wake callers only just before it blocks in
        ``select``: a caller woken earlier would wake to find the GIL still held by the
        supervisor, and sleep again until it is released, which is one more thread
        wake-up on every round trip (~25 us here).
        """
        self._deferring_thread = threading.get_ident()

    def run_deferred(self) -> None:
        """Run the deliveries held back on the deferring thread (call only from it)."""
        while self._deferred:
            out, self._deferred = self._deferred, []
            _run_thunks(out)

    # --- statistics --------------------------------------------------------------------

    def stats(self) -> PoolStats:
        now = time.monotonic()
        with self._lock:
            c = self._counters
            workers = tuple(
                WorkerStats(
                    slot=s.index,
                    pid=s.handle.pid if s.handle else None,
                    alive=s.state is not SlotState.DEAD,
                    tasks_done=s.tasks_done,
                    chunks_done=s.chunks_done,
                    busy_s=s.busy_s,
                    started_at=s.started_wall,
                    uptime_s=now - s.started_at,
                )
                for s in self._slots
            )
            return PoolStats(
                backend=self.backend.name,
                size=self.size,
                tasks_submitted=c.tasks_submitted,
                tasks_done=c.tasks_done,
                tasks_failed=c.tasks_failed,
                tasks_retried=c.tasks_retried,
                tasks_cancelled=c.tasks_cancelled,
                worker_crashes=c.worker_crashes,
                task_timeouts=c.task_timeouts,
                workers_started=c.workers_started,
                workers_recycled=c.workers_recycled,
                chunks_sent=c.chunks_sent,
                bytes_sent=c.bytes_sent,
                bytes_received=c.bytes_received,
                last_chunk_size=c.last_chunk_size,
                uptime_s=now - self._created,
                workers=workers,
                results_discarded=c.results_discarded,
                started_at=self._created_wall,
            )

    def count_discarded(self, results: int) -> None:
        """Results of finished tasks that nobody took (their iterator was dropped)."""
        with self._lock:
            self._counters.results_discarded += results

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [
                s.handle.pid
                for s in self._slots
                if s.handle is not None
                and s.handle.pid is not None
                and s.state is not SlotState.DEAD
            ]


def _run_thunks(out: list[Thunk]) -> None:
    """Run deliveries; each may run user callbacks, whose exceptions never stop the rest."""
    interrupted: KeyboardInterrupt | None = None
    for fn, args in out:
        try:
            call_reporting_errors(fn, *args)
        except KeyboardInterrupt as exc:  # Ctrl-C on the main thread: deliver, then raise
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _name_the_task_of_an_unpicklable_result(exc: BaseException, job: Job, index: int) -> None:
    notes = getattr(exc, "__notes__", None) or ()
    if any(isinstance(n, str) and n.startswith(RESULT_NOT_PICKLED_NOTE) for n in notes):
        add_note(exc, f"conveyor: the result was returned by {describe_call(job.fn, index)}")


def _main_without_guard_message() -> str:
    main = sys.modules.get("__main__")
    where = getattr(main, "__file__", None) or "the main module"
    return (
        f"the pool's workers could not start: {where} creates a process pool when it is "
        "imported, and spawn and forkserver workers import the main module, so each would "
        "start a pool of its own. Put the code that creates the pool under "
        '`if __name__ == "__main__":` (or in a function that only the guard calls).'
    )


def _describe_exitcode(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {-exitcode}"
    return f"exit code {exitcode}"


__all__ = ["FAILED", "Backend", "ConveyorError", "EncodeError", "Engine", "Slot", "WorkerHandle"]
