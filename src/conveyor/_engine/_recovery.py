"""Recovery: what a worker's end costs the tasks it held, by ``ExitCause``.

The rules, in one place:

- Chunks a worker held but had not started cost nothing: they go back to the front of
  the queue (a cancelled job's are withdrawn instead).
- A worker that died before it was ready costs nothing either, but three such deaths in
  a row mean workers cannot start at all (``MAX_STARTUP_FAILURES``): the pool breaks.
- The running chunk of a crashed or overdue worker, if it held several tasks, is split
  and each task re-run alone, uncharged: which one was at fault is unknown, and the
  culprit crashes (or overruns) again on its own and is charged then.
- A lone task that crashed is re-run while it has retries left, else it fails with
  ``WorkerCrashedError``; one that overran its timeout fails with ``TaskTimeoutError``;
  one whose worker was stopped to cancel it is cancelled.
"""

from __future__ import annotations

from ..errors import (
    TaskCancelledError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerInitError,
    describe_call,
)
from ._dispatch import Dispatcher
from ._events import EventKind
from ._jobs import Chunk
from ._ledger import Ledger
from ._outbox import Thunks
from ._states import EngineState, ExitCause, Slot, SlotState

# Workers that die before they are ready, this many times in a row, mean the pool cannot
# start (a main module without the `if __name__ == "__main__":` guard, a broken import):
# the pool fails its tasks with WorkerInitError instead of respawning forever.
MAX_STARTUP_FAILURES = 3


class Recovery:
    def __init__(self, ledger: Ledger, dispatcher: Dispatcher) -> None:
        self._ledger = ledger
        self._dispatcher = dispatcher
        self.startup_failures = 0  # workers in a row that died before they were ready

    def worker_ready(self) -> None:
        self.startup_failures = 0

    def settle_exit(
        self,
        slot: Slot,
        cause: ExitCause,
        held: list[Chunk],
        exitcode: int | None,
        state: EngineState,
        out: Thunks,
    ) -> WorkerInitError | None:
        """Settle what an ended worker held; return the error that breaks the pool, if any."""
        self._count_exit(cause, exitcode, state)
        accepting = state.accepting
        if cause is ExitCause.TERMINATED or (not held and cause is not ExitCause.FAILED_TO_START):
            return None
        if cause is ExitCause.FAILED_TO_START:
            if not accepting:
                return None
            self.requeue(held, out)  # it never read them
            self.startup_failures += 1
            if self.startup_failures >= MAX_STARTUP_FAILURES:
                return WorkerInitError.died_while_starting(self.startup_failures, exitcode)
            return None
        if cause in (ExitCause.RETIRED, ExitCause.STOPPED):
            self.requeue(held, out)
            return None
        self._settle_lost(slot, cause, held, exitcode, out)
        for job in {chunk.job for chunk in held}:
            self._ledger.finish_if_complete(job, out)
        return None

    def _count_exit(self, cause: ExitCause, exitcode: int | None, state: EngineState) -> None:
        counters = self._ledger.counters
        if cause in (ExitCause.CRASHED, ExitCause.FAILED_TO_START) and exitcode != 0:
            counters.worker_crashes += 1  # died on its own: crash, OOM, kill -9
        if (
            exitcode == 0
            and cause in (ExitCause.STOPPED, ExitCause.RETIRED)
            and state is EngineState.RUNNING
        ):
            counters.workers_recycled += 1  # max tasks or memory limit reached

    def _settle_lost(
        self,
        slot: Slot,
        cause: ExitCause,
        held: list[Chunk],
        exitcode: int | None,
        out: Thunks,
    ) -> None:
        running, waiting = held[0], held[1:]
        self.requeue(waiting, out)  # never started: they cost nothing
        if cause is ExitCause.CANCELLED:
            self._cancel_running(slot, running, out)
        elif len(running) > 1:
            # Uncharged: the next run of each task keeps this attempt number.
            self._retried(running, slot, out)
            self.requeue([running], out, split=True)
        elif cause is ExitCause.TIMED_OUT:
            self._time_out(slot, running, out)
        else:
            self._retry_or_fail(slot, running, exitcode, out)

    def _cancel_running(self, slot: Slot, chunk: Chunk, out: Thunks) -> None:
        for index in chunk.indices:
            stopped = TaskCancelledError(
                "the task was cancelled while it ran; its worker was stopped"
            )
            self._ledger.cancelled(chunk.job, index, stopped, out, chunk=chunk, slot=slot)

    def _time_out(self, slot: Slot, chunk: Chunk, out: Thunks) -> None:
        job, index = chunk.job, chunk.indices[0]
        what = _describe_task(chunk)
        self._ledger.counters.task_timeouts += 1
        error = TaskTimeoutError(
            f"{what} ran longer than its timeout of {job.options.timeout} s; its worker "
            f"(pid {slot.pid}) was stopped and replaced",
            task=what,
            timeout=job.options.timeout,
        )
        self._ledger.failed(job, index, error, out, chunk=chunk, slot=slot)

    def _retry_or_fail(self, slot: Slot, chunk: Chunk, exitcode: int | None, out: Thunks) -> None:
        """A lone task crashed its worker: run it again while it has retries left."""
        job, index, item = chunk.job, chunk.indices[0], chunk.items[0]
        attempt, retries = chunk.attempt + 1, job.options.retries
        sites = job.crashed_on.setdefault(index, [])
        sites.append(_describe_worker(slot))
        crash = WorkerCrashedError(
            pid=slot.pid,
            exitcode=exitcode,
            task=_describe_task(chunk),
            attempts=attempt,
            retries=retries,
            workers=list(sites),
        )
        if attempt <= retries and not job.cancelled:
            self._ledger.counters.tasks_retried += 1
            self._retried(chunk, slot, out, crash)
            job.requeue((index,), [item], attempt)
            self._dispatcher.put_first(job)
        else:
            job.crashed_on.pop(index, None)
            self._ledger.failed(job, index, crash, out, chunk=chunk, slot=slot)

    def _retried(
        self, chunk: Chunk, slot: Slot, out: Thunks, error: BaseException | None = None
    ) -> None:
        events = self._ledger.events
        if events.active:
            job, tasks = chunk.job, chunk.indices
            events.tasks(out, EventKind.RETRIED, job, tasks, chunk=chunk, slot=slot, error=error)

    def abandon_overdue(self, slot: Slot, out: Thunks) -> None:
        """A thread ran past its task's timeout: fail the task now and let the thread go.

        A thread cannot be stopped; it runs on in the background, and its result is
        discarded. What it held behind the task never started and goes back in the queue.
        """
        assert slot.handle is not None
        chunk = slot.inflight.popleft()
        self.requeue(list(slot.inflight), out)
        slot.inflight.clear()
        slot.state = SlotState.RETIRING
        slot.handle.abandon()
        self._ledger.counters.task_timeouts += len(chunk)
        job = chunk.job
        what = describe_call(job.fn)
        for index in chunk.indices:
            error = TaskTimeoutError(
                f"{what} ran longer than its timeout of {job.options.timeout} s; a thread "
                "cannot be stopped, so it runs on in the background and its result will be "
                "discarded",
                task=what,
                timeout=job.options.timeout,
            )
            self._ledger.failed(job, index, error, out, chunk=chunk, slot=slot)
        self._ledger.finish_if_complete(job, out)

    def requeue(self, chunks: list[Chunk], out: Thunks, *, split: bool = False) -> None:
        """Send these chunks' tasks again, before new work (``split``: one per chunk)."""
        for chunk in chunks:
            job = chunk.job
            if job.cancelled:
                self._ledger.withdrawn(job, chunk.indices, out)
                self._ledger.finish_if_complete(job, out)
                continue
            if split:
                for index, item in zip(chunk.indices, chunk.items, strict=True):
                    job.requeue((index,), [item], chunk.attempt)
            else:
                job.requeue(chunk.indices, chunk.items, chunk.attempt)
            self._dispatcher.put_first(job)


def _describe_task(chunk: Chunk) -> str:
    """The task of a one-task chunk, for messages (its index only when the job has more)."""
    job = chunk.job
    return describe_call(job.fn, chunk.indices[0] if job.total != 1 else None)


def _describe_worker(slot: Slot) -> str:
    """A worker, for messages: its process, and its host when it is remote."""
    host = slot.handle.host if slot.handle is not None else None
    pid = f"pid {slot.pid}" if slot.pid is not None else "pid unknown"
    return f"{host} ({pid})" if host else pid


__all__ = ["MAX_STARTUP_FAILURES", "Recovery"]
