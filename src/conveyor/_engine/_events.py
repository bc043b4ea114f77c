"""The task-event stream: frozen records of what happened to every task and worker.

The engine publishes an event for each step of a task (queued, started, finished,
failed, retried, cancelled), of a worker (started, exited, with its cause) and at the
end of each job (``JobEvent``, with its counts). Events
are built under the engine lock only when someone listens (a subscriber, or the
``conveyor.events`` logger at DEBUG), and delivered through the outbox, outside the
lock, in the order they happened. A chunk's tasks share one event: ``tasks`` lists
their indices, and ``duration_s`` is the time the worker spent on all of them.

Subscribers run on whichever thread settled the task (often the supervisor): they must
be quick, and what they raise is logged, never fatal. Progress bars, the command line's
job log and the journal are subscribers.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._callbacks import call_reporting_errors
from ..errors import describe_callable, describe_exit
from ._jobs import Chunk, Job
from ._outbox import Thunks
from ._states import ExitCause, Slot

logger = logging.getLogger("conveyor.events")


class EventKind(enum.Enum):
    QUEUED = "queued"  # admitted into a job (submitted, or read from a lazy input)
    STARTED = "started"  # began running on a worker
    FINISHED = "finished"  # returned a value
    FAILED = "failed"  # raised, crashed its worker, timed out, or could not be sent
    RETRIED = "retried"  # its worker crashed; it will run again (``attempt`` + 1)
    CANCELLED = "cancelled"  # withdrawn before it ran, or stopped while running
    WORKER_STARTED = "worker started"
    WORKER_EXITED = "worker exited"
    JOB_ENDED = "job ended"  # every task of a job has its outcome, or the pool stopped


@dataclass(frozen=True)
class TaskEvent:
    """One step of one or more tasks of a job (a chunk's tasks share one event).

    ``job``: the id of the ``submit``/``map`` call; ``tasks``: the tasks' indices in it;
    ``attempt``: 0 for the first run. ``worker``, ``pid``, ``host``: where they ran
    (``host`` None: this machine). ``started_at``: wall-clock start (``time.time()``),
    ``duration_s``: the worker's compute time for the tasks, both None until known.
    ``error``: the exception of a failed or cancelled task.

    Example::

        def log(event):
            if event.kind is conveyor.EventKind.FAILED:
                print(f"task {event.tasks[0]} failed on pid {event.pid}: {event.error!r}")

        with conveyor.WorkerPool(2) as pool, pool.subscribe(log):
            pool.map(work, items)
    """

    kind: EventKind
    job: int
    function: str
    tasks: Sequence[int]
    attempt: int = 0
    worker: int | None = None
    pid: int | None = None
    host: str | None = None
    started_at: float | None = None
    duration_s: float | None = None
    error: BaseException | None = None
    at: float = 0.0  # when the event happened, wall clock

    def __str__(self) -> str:
        where = f" on worker {self.worker} (pid {self.pid})" if self.worker is not None else ""
        what = f"{self.function} task{'s' if len(self.tasks) != 1 else ''} {_span(self.tasks)}"
        extra = f": {self.error!r}" if self.error is not None else ""
        took = f" in {self.duration_s * 1e3:.3f} ms" if self.duration_s is not None else ""
        retry = f" (attempt {self.attempt + 1})" if self.attempt else ""
        return f"job {self.job}: {what} {self.kind.value}{where}{took}{retry}{extra}"


@dataclass(frozen=True)
class WorkerEvent:
    """A worker started, or exited: ``cause`` says why, ``exitcode`` how (< 0: a signal).

    ``signal`` is the signal number that ended it, if one did.
    """

    kind: EventKind
    worker: int
    pid: int | None
    host: str | None = None
    cause: ExitCause | None = None
    exitcode: int | None = None
    at: float = 0.0

    @property
    def signal(self) -> int | None:
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None

    def __str__(self) -> str:
        if self.kind is EventKind.WORKER_STARTED:
            return f"worker {self.worker} (pid {self.pid}) started"
        cause = self.cause.value if self.cause is not None else "exited"
        return f"worker {self.worker} (pid {self.pid}) {cause}, {describe_exit(self.exitcode)}"


@dataclass(frozen=True)
class JobEvent:
    """A job (one ``submit``/``map`` call) is over: how many tasks ended how.

    ``error``: why it ended early, if it did (its input raised, the pool was terminated
    or broke); the counts then include what that cancelled or failed.
    """

    kind: EventKind
    job: int
    function: str
    tasks: int
    done: int
    failed: int
    cancelled: int
    error: BaseException | None = None
    at: float = 0.0

    def __str__(self) -> str:
        why = f" ({self.error!r})" if self.error is not None else ""
        return (
            f"job {self.job} ({self.function}) ended: {self.done} done, {self.failed} failed, "
            f"{self.cancelled} cancelled{why}"
        )


Event = TaskEvent | WorkerEvent | JobEvent
Subscriber = Callable[[Event], object]


def _span(tasks: Sequence[int]) -> str:
    if isinstance(tasks, range) and len(tasks) > 1 and tasks.step == 1:
        return f"{tasks.start}-{tasks.stop - 1}"
    return ", ".join(str(t) for t in tasks[:8]) + (", ..." if len(tasks) > 8 else "")


class EventStream:
    """The engine's publisher. Built under the engine lock; published from the outbox."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers = (*self._subscribers, subscriber)  # copy-on-write: no lock to read

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

    @property
    def active(self) -> bool:
        """Someone listens: build events (cheap to ask, on every state change)."""
        return bool(self._subscribers) or logger.isEnabledFor(logging.DEBUG)

    # --- building events (under the engine lock) -----------------------------------------

    def tasks(
        self,
        out: Thunks,
        kind: EventKind,
        job: Job,
        tasks: Sequence[int],
        *,
        chunk: Chunk | None = None,
        slot: Slot | None = None,
        error: BaseException | None = None,
    ) -> None:
        now = time.time()
        started_at = duration = None
        if chunk is not None:
            if chunk.started_at is not None:
                started_at = now - (time.monotonic() - chunk.started_at)
            duration = chunk.compute_s
        event = TaskEvent(
            kind=kind,
            job=job.id,
            function=describe_callable(job.fn),
            tasks=tasks,
            attempt=chunk.attempt if chunk is not None else 0,
            worker=slot.index if slot is not None else None,
            pid=slot.pid if slot is not None else None,
            host=slot.handle.host if slot is not None and slot.handle is not None else None,
            started_at=started_at,
            duration_s=duration,
            error=error,
            at=now,
        )
        out.append((self.publish, (event,)))

    def job_ended(self, out: Thunks, job: Job, error: BaseException | None) -> None:
        event = JobEvent(
            EventKind.JOB_ENDED,
            job.id,
            describe_callable(job.fn),
            job.admitted,
            job.done,
            job.failed,
            job.cancelled_items,
            error,
            time.time(),
        )
        out.append((self.publish, (event,)))

    @staticmethod
    def worker_started(slot: Slot) -> WorkerEvent:
        """The event of a worker that started earlier, dated when it did."""
        host = slot.handle.host if slot.handle is not None else None
        return WorkerEvent(
            EventKind.WORKER_STARTED, slot.index, slot.pid, host, at=slot.started_wall
        )

    def worker(
        self,
        out: Thunks,
        kind: EventKind,
        slot: Slot,
        *,
        cause: ExitCause | None = None,
        exitcode: int | None = None,
    ) -> None:
        host = slot.handle.host if slot.handle is not None else None
        event = WorkerEvent(kind, slot.index, slot.pid, host, cause, exitcode, time.time())
        out.append((self.publish, (event,)))

    # --- delivering (outside the lock) ---------------------------------------------------

    def publish(self, event: Event) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", event)
        for subscriber in self._subscribers:
            call_reporting_errors(subscriber, event)


__all__ = [
    "Event",
    "EventKind",
    "EventStream",
    "JobEvent",
    "Subscriber",
    "TaskEvent",
    "WorkerEvent",
]
