"""The engine's log records: logger ``conveyor.engine``, queued to run after the lock.

DEBUG for every change of state of the pool, a job or a worker; INFO for what is news to
whoever runs the program: a worker that crashed, failed to start or overran a timeout,
its replacement, and a pool that stopped. Nothing is printed; every event of the task
stream is also logged at DEBUG, by ``conveyor.events`` (``_events.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import describe_callable, describe_exit
from ._events import EventKind, EventStream
from ._jobs import Chunk, Job
from ._outbox import Thunks
from ._states import ExitCause, Slot

logger = logging.getLogger("conveyor.engine")

# Causes of a worker's end that are news (INFO): the rest are the pool's own doing.
DEATHS = (ExitCause.CRASHED, ExitCause.FAILED_TO_START, ExitCause.TIMED_OUT)


def log(out: Thunks, level: int, message: str, *args: Any) -> None:
    """Log once the lock is released (a handler may write to a slow file)."""
    if logger.isEnabledFor(level):
        out.append((logger.log, (level, message, *args)))


def log_submitted(out: Thunks, job: Job) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        tasks = "a lazy input" if job.total is None else f"{job.total} tasks"
        what = describe_callable(job.fn)
        log(out, logging.DEBUG, "job %d (%s) submitted: %s", job.id, what, tasks)


def log_exit(
    events: EventStream,
    slot: Slot,
    cause: ExitCause,
    exitcode: int | None,
    held: list[Chunk],
    out: Thunks,
) -> None:
    """A worker ended: its event, and a record (INFO if it died, DEBUG if it was stopped)."""
    if events.active:
        events.worker(out, EventKind.WORKER_EXITED, slot, cause=cause, exitcode=exitcode)
    level = logging.INFO if cause in DEATHS else logging.DEBUG
    if logger.isEnabledFor(level):
        tasks = sum(len(chunk) for chunk in held)
        message = "worker %d (pid %s) %s with %s, holding %d tasks"
        log(out, level, message, slot.index, slot.pid, cause.value, describe_exit(exitcode), tasks)


__all__ = ["DEATHS", "log", "log_exit", "log_submitted", "logger"]
