"""The ledger: every task's outcome is settled here, and the books always balance.

Each task admitted into a job ends in exactly one outcome: **done** (its result was
delivered), **failed** (its exception was delivered) or **cancelled** (withdrawn before
it ran, or stopped while running; a caller who waits on it gets ``TaskCancelledError``).
Only the methods below change a job's outcome counts or the pool's counters, and each
checks the invariant it can: a job never settles more tasks than it admitted, and a job
that completes has settled every one. A break of the invariant is a bug in conveyor; it
raises ``AssertionError`` (not an ``assert``, which ``python -O`` would drop), which the
supervisor turns into a loud failure of the pool rather than a caller left waiting.

The ledger queues deliveries to sinks in the caller's outbox (``_outbox.py``); they run
after the engine lock is released. Everything here runs under that lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._stats import Counters
from ._events import EventKind, EventStream
from ._jobs import Chunk, Job
from ._outbox import Thunks
from ._states import Slot


class Ledger:
    """The active jobs, their outcomes and the pool's counters; it publishes the events."""

    def __init__(self, events: EventStream) -> None:
        self.active: dict[int, Job] = {}  # jobs not yet complete, by id
        self.counters = Counters()
        self.events = events

    # --- admission ---------------------------------------------------------------------

    def open(self, job: Job, out: Thunks) -> None:
        self.active[job.id] = job
        self.counters.tasks_submitted += job.admitted
        if job.admitted and self.events.active:
            self.events.tasks(out, EventKind.QUEUED, job, range(job.admitted))

    def admit(self, job: Job, count: int, out: Thunks) -> None:
        """``count`` more items were read from a lazy input (already pushed to ``job``)."""
        self.counters.tasks_submitted += count
        if self.events.active:
            first = job.admitted - count
            self.events.tasks(out, EventKind.QUEUED, job, range(first, first + count))

    # --- outcomes ----------------------------------------------------------------------
    # The event goes out before the delivery: once a caller has its result, every
    # subscriber (a progress bar) has counted it.

    def done(
        self,
        job: Job,
        indices: Sequence[int],
        values: list[Any],
        out: Thunks,
        *,
        chunk: Chunk | None = None,
        slot: Slot | None = None,
    ) -> None:
        job.done += len(indices)
        self.counters.tasks_done += len(indices)
        self._check_not_over(job)
        if self.events.active:
            self.events.tasks(out, EventKind.FINISHED, job, indices, chunk=chunk, slot=slot)
        out.append((job.sink.deliver, (indices, values)))

    def chunk_done(
        self,
        chunk: Chunk,
        slot: Slot,
        values: list[Any],
        errors: dict[int, BaseException],
        out: Thunks,
    ) -> None:
        """A worker ran a chunk: ``errors`` by position (-1: the whole chunk failed)."""
        job, indices = chunk.job, chunk.indices
        if not errors:
            self.done(job, indices, values, out, chunk=chunk, slot=slot)
            return
        if -1 in errors:  # its arguments or results could not be pickled
            errors = dict.fromkeys(range(len(indices)), errors[-1])
        for pos, exc in errors.items():
            self.failed(job, indices[pos], exc, out, chunk=chunk, slot=slot)
        good = [pos for pos in range(len(indices)) if pos not in errors]
        if good:
            values = [values[pos] for pos in good]
            self.done(job, [indices[p] for p in good], values, out, chunk=chunk, slot=slot)

    def failed(
        self,
        job: Job,
        index: int,
        exc: BaseException,
        out: Thunks,
        *,
        chunk: Chunk | None = None,
        slot: Slot | None = None,
    ) -> None:
        job.failed += 1
        self.counters.tasks_failed += 1
        self._deliver_error(EventKind.FAILED, job, index, exc, out, chunk, slot)

    def cancelled(
        self,
        job: Job,
        index: int,
        exc: BaseException,
        out: Thunks,
        *,
        chunk: Chunk | None = None,
        slot: Slot | None = None,
    ) -> None:
        """A task stopped (or never run) after it was sent: its caller gets ``exc``."""
        job.cancelled_items += 1
        self.counters.tasks_cancelled += 1
        self._deliver_error(EventKind.CANCELLED, job, index, exc, out, chunk, slot)

    def _deliver_error(
        self,
        kind: EventKind,
        job: Job,
        index: int,
        exc: BaseException,
        out: Thunks,
        chunk: Chunk | None,
        slot: Slot | None,
    ) -> None:
        self._check_not_over(job)
        if self.events.active:
            self.events.tasks(out, kind, job, (index,), chunk=chunk, slot=slot, error=exc)
        out.append((job.sink.fail, (index, exc)))

    def withdrawn(self, job: Job, tasks: Sequence[int], out: Thunks) -> None:
        """These tasks were dropped before they were sent (their job was cancelled)."""
        if not tasks:
            return
        job.cancelled_items += len(tasks)
        self.counters.tasks_cancelled += len(tasks)
        self._check_not_over(job)
        if self.events.active:
            self.events.tasks(out, EventKind.CANCELLED, job, tasks)

    def admitted_withdrawn(self, job: Job, count: int, out: Thunks) -> None:
        """Items read for a job already cancelled: admitted and withdrawn at once."""
        first = job.admitted
        job.admitted += count
        self.counters.tasks_submitted += count
        self.withdrawn(job, range(first, first + count), out)

    # --- completion --------------------------------------------------------------------

    def finish_if_complete(self, job: Job, out: Thunks) -> bool:
        """Close the job's sink if every task has its outcome; True if it just closed."""
        if job.complete and job.id in self.active:
            self.finish(job, out)
            return True
        return False

    def finish(self, job: Job, out: Thunks) -> None:
        """The job is over (complete, or cancelled with nothing left in flight)."""
        if job.complete and job.finished != job.admitted:
            raise AssertionError(
                f"conveyor's ledger does not balance for job {job.id}: {job.admitted} tasks "
                f"admitted, {job.done} done, {job.failed} failed, {job.cancelled_items} "
                "cancelled"
            )
        del self.active[job.id]
        job.release()  # its items may be large; nothing will send them again
        if self.events.active:
            self.events.job_ended(out, job, job.input_error)
        out.append((job.sink.close, (job.total or 0,)))

    def abort_all(
        self, exc: BaseException, out: Thunks, slots: Sequence[Slot], *, cancelled: bool
    ) -> None:
        """Settle every task without an outcome with ``exc`` (the pool stopped or broke).

        ``slots``: the workers, whose chunks in flight are named in the events. The sinks
        learn it in one call each (``Sink.abort``); the tasks count as cancelled (the pool
        was terminated) or failed (it broke).
        """
        kind = EventKind.CANCELLED if cancelled else EventKind.FAILED
        in_flight: dict[int, list[Chunk]] = {}
        for slot in slots:
            for chunk in slot.inflight:
                in_flight.setdefault(chunk.job.id, []).append(chunk)
        for job in list(self.active.values()):
            job.cancelled = True
            unsent = job.withdraw()
            rest = job.admitted - job.finished
            if cancelled:
                job.cancelled_items += rest
                self.counters.tasks_cancelled += rest
            else:
                job.failed += rest
                self.counters.tasks_failed += rest
            if self.events.active:
                for chunk in in_flight.get(job.id, ()):
                    self.events.tasks(out, kind, job, chunk.indices, chunk=chunk, error=exc)
                if unsent:
                    self.events.tasks(out, kind, job, unsent, error=exc)
                self.events.job_ended(out, job, exc)
            out.append((job.sink.abort, (exc,)))
        self.active.clear()

    def unsettled(self) -> int:
        """Tasks admitted but without an outcome yet (queued, or in flight)."""
        return sum(job.admitted - job.finished for job in self.active.values())

    def check_balanced(self) -> None:
        """Every task admitted so far has one outcome or is still on its way."""
        c = self.counters
        settled = c.tasks_done + c.tasks_failed + c.tasks_cancelled
        if settled + self.unsettled() != c.tasks_submitted:
            raise AssertionError(
                f"conveyor's ledger does not balance: {c.tasks_submitted} tasks submitted, "
                f"{c.tasks_done} done, {c.tasks_failed} failed, {c.tasks_cancelled} "
                f"cancelled, {self.unsettled()} unsettled"
            )

    @staticmethod
    def _check_not_over(job: Job) -> None:
        if job.finished > job.admitted:
            raise AssertionError(
                f"conveyor's ledger settled {job.finished} outcomes for job {job.id}, which "
                f"admitted only {job.admitted} tasks"
            )


__all__ = ["Ledger"]
