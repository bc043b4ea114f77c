"""The engine: which chunk runs on which worker, and what happens when it ends.

The engine is backend-agnostic: it knows workers only as slots with a handle
(``_contract.py``), and knows nothing of processes, threads or pickling. It decides and
keeps the books; its parts are one module each:

- ``_states.py``: the engine's and each slot's state, and why a worker ended;
- ``_dispatch.py``: which job next, which worker, what chunk size, admission;
- ``_recovery.py``: what a worker's end costs the tasks it held;
- ``_timeouts.py``: which running tasks are overdue;
- ``_ledger.py``: every outcome settled in one place, the books checked;
- ``_outbox.py``: deliveries run after the lock is released.

Data flow for a process pool (see docs/architecture.md for the full picture)::

    caller thread ── submit/map ──> Engine.dispatch ── frame ──> socket ──> worker process
                                         ^                                      |
                                         |                                      v
                         Engine.on_chunk_done <── conveyor-supervisor <── socket (result)

The caller thread writes the first chunks itself (no hand-off on the way in); the
backend's supervision reads results, reaps dead workers, enforces deadlines and sends
more. Every state change happens under ``Engine._lock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._callbacks import call_reporting_errors
from .._deadline import Deadline
from .._stats import PoolStats
from ..errors import (
    ConveyorError,
    PoolClosedError,
    TaskCancelledError,
)
from ._chunking import Estimates
from ._contract import Backend
from ._dispatch import Dispatcher
from ._events import EventKind, EventStream, Subscriber
from ._jobs import Chunk, Job
from ._ledger import Ledger
from ._logs import DEATHS, log, log_exit, log_submitted
from ._outbox import Outbox, Thunks
from ._recovery import Recovery
from ._snapshot import snapshot
from ._states import EngineState, KillReason, Slot, SlotState, classify_exit
from ._timeouts import overdue

# With no timeout, waits still wake this often: a missed notification is never a hang.
WAIT_SLICE_S = 0.5


class Engine:
    """Schedules jobs onto a fixed number of supervised workers."""

    def __init__(self, backend: Backend, size: int, *, max_tasks_per_worker: int | None) -> None:
        if size < 1:
            raise ValueError("Number of processes must be at least 1")
        self.backend = backend
        self.size = size
        self.max_tasks_per_worker = max_tasks_per_worker
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = EngineState.RUNNING
        self._slots: list[Slot] = []
        self._outbox = Outbox()
        self.events = EventStream()
        self._ledger = Ledger(self.events)
        self._dispatcher = Dispatcher(self._slots, self._ledger, backend, self._outbox)
        self._recovery = Recovery(self._ledger, self._dispatcher)
        self._estimates = Estimates()
        self._created = (time.monotonic(), time.time())
        self._fatal: BaseException | None = None

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, then the backend's supervision; undo everything on failure."""
        self.backend.bind(self)
        with self._delivering() as out:
            try:
                for index in range(self.size):
                    self._slots.append(self._spawn(Slot(index, self.max_tasks_per_worker), out))
            except BaseException:
                self._state = EngineState.TERMINATED
                self.backend.abort_start()
                raise
        self.backend.start()

    def _spawn(self, slot: Slot, out: Thunks) -> Slot:
        slot.handle = self.backend.spawn(slot)
        self._ledger.counters.workers_started += 1
        if self.events.active:
            self.events.worker(out, EventKind.WORKER_STARTED, slot)
        return slot

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(event)`` for every task and worker event from now on.

        It first learns the workers alive now: one ``WORKER_STARTED`` each, dated when
        the worker started.
        """
        with self._lock:
            self.events.subscribe(subscriber)
            alive = [s for s in self._slots if s.state is not SlotState.DEAD]
            replay = [self.events.worker_started(s) for s in alive]
        for event in replay:
            call_reporting_errors(subscriber, event)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.events.unsubscribe(subscriber)

    @property
    def state(self) -> EngineState:
        return self._state

    def close(self) -> None:
        """No new work; workers exit once everything submitted is done."""
        with self._delivering() as out:
            if self._state is EngineState.RUNNING:
                self._set_state(EngineState.CLOSING, out)
                self._stop_if_idle(out)

    def terminate(self) -> None:
        """Stop now: kill the workers, fail everything unfinished."""
        with self._delivering() as out:
            if self._state is EngineState.TERMINATED:
                return
            self._set_state(EngineState.TERMINATED, out)
            error = TaskCancelledError("the pool was terminated before the task finished")
            self._abort_all(error, out, cancelled=True)
            self._changed.notify_all()
        self.backend.stop_supervision()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has exited; True if they all did in time."""
        deadline = Deadline(timeout)
        with self._lock:
            while any(s.state is not SlotState.DEAD for s in self._slots):
                if deadline.expired:
                    return False
                self._changed.wait(deadline.remaining(cap=WAIT_SLICE_S))
        return self.backend.shutdown(deadline.remaining())

    # --- submitting --------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Accept a job; its items (if already known) start going out at once."""
        with self._delivering() as out:
            self._check_accepting()
            try:
                self.backend.prepare(job)
            except Exception as exc:  # e.g. the function cannot be pickled: its job fails
                out.append((job.sink.abort, (exc,)))
                return
            self._estimates.seed(job.fn, job.sizer)
            self._ledger.open(job, out)
            log_submitted(out, job)
            self._dispatcher.add(job)
            if job.complete:  # an empty map
                self._finish_job(job, out)
            self._dispatcher.dispatch(out)

    def push(self, job: Job, batch: list[Any]) -> None:
        """Add lazily read items to a job (from its feeder thread)."""
        with self._delivering() as out:
            if job.cancelled or job.id not in self._ledger.active:
                # Read while the job was being cancelled: these items are settled as
                # withdrawn, or the job would wait for them forever once its input ends.
                self._ledger.admitted_withdrawn(job, len(batch), out)
                self._finish_if_complete(job, out)
                return
            job.push(batch)
            self._ledger.admit(job, len(batch), out)
            self._dispatcher.dispatch(out)

    def end_input(self, job: Job, total: int, error: BaseException | None = None) -> None:
        with self._delivering() as out:
            job.end_input(total, error)
            if error is not None:
                out.append((job.sink.input_failed, (total, error)))
            self._finish_if_complete(job, out)

    def cancel(self, job: Job, *, running: bool = False) -> int:
        """Withdraw a job's items not yet sent; return how many were withdrawn.

        With ``running``, also stop the workers running its tasks, if the backend can
        (they are replaced); those tasks are cancelled (``TaskCancelledError``).
        """
        with self._delivering() as out:
            job.cancelled = True
            dropped = job.withdraw()
            self._ledger.withdrawn(job, dropped, out)
            if running and self.backend.capabilities.can_kill:
                for slot in self._slots:
                    if slot.inflight and slot.inflight[0].job is job and slot.kill_reason is None:
                        slot.kill(KillReason.CANCEL)
            if job.id in self._ledger.active and (job.complete or not self._job_inflight(job)):
                self._finish_job(job, out)
            return len(dropped)

    def wake_dispatch(self) -> None:
        """Try again to send: an admission that refused (``Job.admission``) now has room."""
        with self._delivering() as out:
            if self._state.accepting:
                self._dispatcher.dispatch(out)

    def _check_accepting(self) -> None:
        if self._state is EngineState.BROKEN and self._fatal is not None:
            raise self._fatal
        if self._state is not EngineState.RUNNING:
            raise PoolClosedError("Pool not running")

    # --- up-calls from the backend (EngineEvents) --------------------------------------

    def on_ready(self, slot: Slot) -> None:
        with self._delivering() as out:
            self._recovery.worker_ready()
            if slot.state is SlotState.STARTING:
                slot.state = SlotState.READY
                log(out, logging.DEBUG, "worker %d (pid %s) ready", slot.index, slot.pid)
                if slot.inflight:  # it starts its first task only now: so does the clock
                    slot.inflight[0].started_at = time.monotonic()
                self._dispatcher.dispatch(out)

    def on_retiring(self, slot: Slot) -> None:
        """The worker will exit after this message (its memory limit): give it no more."""
        with self._delivering() as out:
            slot.state = SlotState.RETIRING
            slot.retired_itself = True
            log(out, logging.DEBUG, "worker %d (pid %s) retiring", slot.index, slot.pid)

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
            chunk.compute_s = compute_s
            if slot.inflight:
                self._started(slot, slot.inflight[0], out)
            slot.tasks_done += len(chunk)
            slot.chunks_done += 1
            slot.busy_s += compute_s
            self._ledger.counters.bytes_received += nbytes
            job = chunk.job
            job.sizer.observe(len(chunk), compute_s, chunk.nbytes)
            self._ledger.chunk_done(chunk, slot, values, errors, out)
            self._finish_if_complete(job, out)
            if slot.budget == 0 and not slot.inflight:
                slot.state = SlotState.RETIRING
            self._dispatcher.dispatch(out)
            self._stop_if_idle(out)

    def _started(self, slot: Slot, chunk: Chunk, out: Thunks) -> None:
        """The worker moves on to the next chunk it holds."""
        chunk.started_at = time.monotonic()
        if self.events.active:
            job, tasks = chunk.job, chunk.indices
            self.events.tasks(out, EventKind.STARTED, job, tasks, chunk=chunk, slot=slot)

    def on_cannot_start(self, slot: Slot, error: BaseException) -> None:
        """Workers cannot start (a failing initializer): the pool cannot run anything."""
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

    def on_worker_exit(self, slot: Slot, exitcode: int | None) -> None:
        """A worker is gone: settle what it held, and replace it if work remains."""
        with self._delivering() as out:
            cause = classify_exit(slot, exitcode)
            held = slot.clear()
            log_exit(self.events, slot, cause, exitcode, held, out)
            fatal = self._recovery.settle_exit(slot, cause, held, exitcode, self._state, out)
            if fatal is not None:
                self._break(fatal, out)
            # A slot replaced earlier (a thread abandoned after a timeout) is not replaced twice.
            if any(s is slot for s in self._slots) and self._should_replace():
                new = self._replace(slot, out)
                if cause in DEATHS:
                    log(out, logging.INFO, "worker %d replaced by pid %s", new.index, new.pid)
                self._dispatcher.dispatch(out)
            self._stop_if_idle(out)
            self._changed.notify_all()

    def tick(self, now: float) -> float | None:
        """Enforce per-task timeouts; return the next deadline (monotonic), if any."""
        with self._delivering() as out:
            late, next_deadline = overdue(self._slots, now)
            for slot in late:
                if self.backend.capabilities.can_kill:
                    slot.kill(KillReason.TIMEOUT)
                else:
                    self._recovery.abandon_overdue(slot, out)
                    self._replace(slot, out)
                    self._dispatcher.dispatch(out)
        return next_deadline

    def defer_deliveries(self) -> None:
        self._outbox.defer()

    def run_deferred(self) -> None:
        self._outbox.run_deferred()

    # --- internals ---------------------------------------------------------------------

    def _replace(self, slot: Slot, out: Thunks) -> Slot:
        position = next(i for i, s in enumerate(self._slots) if s is slot)
        new = self._spawn(Slot(slot.index, self.max_tasks_per_worker), out)
        self._slots[position] = new
        return new

    def _should_replace(self) -> bool:
        if self._state is EngineState.RUNNING:
            return True
        return self._state is EngineState.CLOSING and bool(self._ledger.active)

    def _break(self, error: BaseException, out: Thunks) -> None:
        if self._state is EngineState.BROKEN:
            return
        self._set_state(EngineState.BROKEN, out)
        log(out, logging.INFO, "the pool stopped: %s", error)
        self._fatal = error
        self._abort_all(error, out, cancelled=False)
        self._changed.notify_all()
        self.backend.stop_supervision()

    def _abort_all(self, error: BaseException, out: Thunks, *, cancelled: bool) -> None:
        self._ledger.abort_all(error, out, self._slots, cancelled=cancelled)
        self._dispatcher.clear()
        for slot in self._slots:
            slot.inflight.clear()
            slot.kill(KillReason.TERMINATE)

    def _finish_if_complete(self, job: Job, out: Thunks) -> None:
        if self._ledger.finish_if_complete(job, out):
            self._after_finish(job, out)

    def _finish_job(self, job: Job, out: Thunks) -> None:
        self._ledger.finish(job, out)
        self._after_finish(job, out)

    def _after_finish(self, job: Job, out: Thunks) -> None:
        self._estimates.learn(job.fn, job.sizer)
        self._changed.notify_all()
        # The last job of a closing pool may end anywhere (a result, a cancel, the end of
        # a lazy input): whichever it is, the workers must then be told to stop.
        self._stop_if_idle(out)

    def _job_inflight(self, job: Job) -> bool:
        return any(c.job is job for s in self._slots for c in s.inflight)

    def _set_state(self, state: EngineState, out: Thunks) -> None:
        log(out, logging.DEBUG, "pool %s -> %s", self._state.value, state.value)
        self._state = state

    def _stop_if_idle(self, out: Thunks) -> None:
        if self._state is not EngineState.CLOSING or self._ledger.active:
            return
        self._set_state(EngineState.STOPPING, out)
        for slot in self._slots:
            if slot.state is not SlotState.DEAD and slot.handle is not None:
                slot.state = SlotState.RETIRING
                slot.handle.stop()
        self._changed.notify_all()
        self.backend.stop_supervision()

    @contextmanager
    def _delivering(self) -> Iterator[Thunks]:
        """Hold the lock for the body; then run the deliveries it queued, lock released."""
        out: Thunks = []
        try:
            with self._lock:
                yield out
        finally:
            self._outbox.deliver(out)

    # --- statistics --------------------------------------------------------------------

    def statistics(self) -> PoolStats:
        with self._lock:
            counters, slots = self._ledger.counters, self._slots
            return snapshot(self.backend.name, self.size, counters, slots, *self._created)

    def check_books(self) -> None:
        """Raise ``AssertionError`` if the ledger does not balance (for tests)."""
        with self._lock:
            self._ledger.check_balanced()

    def count_discarded(self, results: int) -> None:
        """Results of finished tasks that nobody took (their iterator was dropped)."""
        with self._lock:
            self._ledger.counters.results_discarded += results

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [
                s.pid for s in self._slots if s.pid is not None and s.state is not SlotState.DEAD
            ]


__all__ = ["Engine"]
