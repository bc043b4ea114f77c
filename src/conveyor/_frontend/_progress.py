"""Progress reporting for the modern API: a tqdm bar, or a callback of the user's.

The bar is one subscriber of the task-event stream, following one job; the engine knows
nothing of progress. tqdm is imported only when a bar is asked for, keeping
``import conveyor`` light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._engine._engine import Engine
from .._engine._events import Event, EventKind, JobEvent, TaskEvent
from .._engine._jobs import Job

ProgressArg = bool | str | Callable[[int, int | None], Any] | None


class _Bar:
    """Counts finished tasks and shows them: tqdm, or calls ``callback(done, total)``.

    It closes once, at the true count: when every task is counted, when the job ends
    with some withdrawn (its total is then left as it was, never rewritten to look
    complete), or when the caller stops waiting (an exception reached them, Ctrl-C, an
    early ``break``). After that, late results no longer move it.
    """

    def __init__(self, progress: ProgressArg, total: int | None) -> None:
        self._lock = threading.Lock()
        self.done = 0
        self.total = total
        self._callback: Callable[[int, int | None], Any] | None = None
        self._tqdm: Any = None
        self._closed = False
        if callable(progress):
            self._callback = progress
        else:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else None
            self._tqdm = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)

    def advance(self, count: int) -> None:
        # Results arrive on several threads (thread pools); tqdm's own counter is not
        # thread-safe, so it is advanced under our lock.
        with self._lock:
            if self._closed:
                return
            self.done += count
            done = self.done
            if self._tqdm is not None:
                self._tqdm.update(count)
        if self._callback is not None:
            self._callback(done, self.total)
        if self.total is not None and done >= self.total:
            # Close the bar before the caller gets its last result, so that nothing the
            # caller prints next can land in the middle of the bar's last line.
            self.job_ended(self.total)

    def job_ended(self, total: int) -> None:
        """The job is over; ``total`` tasks were read (some may have been withdrawn)."""
        with self._lock:
            if self._tqdm is not None and self.total is None and self.done == total:
                self._tqdm.total = total  # lazy input, all of it run: now the total is known
        self.stop()

    def stop(self) -> None:
        """Close the display at the count reached so far (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._tqdm is not None:
                self._tqdm.close()  # draws the final state once more, then lets go


class _Follower:
    """Moves a bar with the events of one job; lets go of the stream when the job ends.

    The engine publishes a task's event before it delivers the task's result, so once
    the caller has its results (``map`` returned, the loop ended) the bar counted them.
    """

    def __init__(self, engine: Engine, job: Job, bar: _Bar) -> None:
        self._engine = engine
        self._job = job.id
        self.bar = bar

    def __call__(self, event: Event) -> None:
        if getattr(event, "job", None) != self._job:
            return
        if isinstance(event, TaskEvent):
            if event.kind in (EventKind.FINISHED, EventKind.FAILED):
                self.bar.advance(len(event.tasks))
        elif isinstance(event, JobEvent):
            if event.error is None:
                self.bar.job_ended(event.tasks)
            else:  # its input raised, or the pool stopped: the count stays where it is
                self.bar.stop()
            self.stop_following()

    def stop(self) -> None:
        """The caller stopped waiting: close the display at the count reached."""
        self.bar.stop()
        self.stop_following()

    def stop_following(self) -> None:
        self._engine.unsubscribe(self)


def follow(
    engine: Engine, job: Job, progress: ProgressArg, total: int | None
) -> Callable[[], None] | None:
    """Show the progress of ``job`` (call before it is submitted), if one is wanted.

    Returns the function that closes the display when the caller stops waiting (None
    without a display).
    """
    if not progress:
        return None
    follower = _Follower(engine, job, _Bar(progress, total))
    engine.subscribe(follower)
    return follower.stop
