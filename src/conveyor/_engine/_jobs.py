"""Jobs and chunks: the records of what was submitted and of what is on its way.

A *job* is one call of ``submit``/``apply_async`` (one item) or ``map``/``imap`` (many
items) with one function and one set of options. The engine cuts jobs into *chunks*, the
unit sent to a worker (sized by ``_chunking.py``). A *sink* is where a job's outcomes go.

Nothing here blocks or owns a thread; the engine calls it under its lock.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._run import CallMode
from ._chunking import ChunkSizer


@dataclass(frozen=True)
class TaskOptions:
    """Per-task policy. ``timeout``: seconds per task; ``retries``: re-runs after a crash."""

    timeout: float | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        timeout = self.timeout
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
                    f" {timeout!r}"
                )
            if not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise TypeError(
                f"retries must be an int, not {type(self.retries).__name__} {self.retries!r}"
            )
        if self.retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {self.retries!r}")


class Sink(Protocol):
    """Where a job's outcomes go. Called outside the engine lock, from any thread.

    All but ``claim``: that one alone runs under the engine lock, just before a chunk is
    sent, which is safe because it runs no user code and takes only the future's own
    condition lock (``Future.set_running_or_notify_cancel``).
    """

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None: ...

    def fail(self, index: int, exc: BaseException) -> None: ...

    def input_failed(self, index: int, exc: BaseException) -> None: ...

    def close(self, total: int) -> None: ...

    def abort(self, exc: BaseException) -> None:
        """No more outcomes will come: everything not yet delivered fails with ``exc``."""

    def claim(self) -> bool:
        """Called just before items are sent; False withdraws them (a cancelled future)."""


class Admission(Protocol):
    """Says how many of a job's tasks may be sent now: a limit, or room downstream.

    ``take`` runs under the engine lock, so it must be quick and never block or call
    back into the engine: it grants up to ``wanted`` tasks (0 for "not now") and counts
    what it granted as sent. When it would grant again, its owner calls
    ``Engine.wake_dispatch()``.
    """

    def take(self, job: Job, wanted: int) -> int: ...

    def bound(self, job: Job, indices: Sequence[int], granted: int) -> None:
        """The tasks the ``granted`` ones became (a retried chunk's tasks were granted
        before): what they did not use goes back. Under the engine lock, like ``take``."""


class Chunk:
    """Items of one job sent to one worker as a unit."""

    __slots__ = (
        "attempt",
        "compute_s",
        "expected_s",
        "id",
        "indices",
        "items",
        "job",
        "nbytes",
        "sent_at",
        "started_at",
    )

    def __init__(self, cid: int, job: Job, indices: Sequence[int], items: list[Any], attempt: int):
        self.id = cid
        self.job = job
        self.indices = indices
        self.items = items
        self.attempt = attempt
        self.nbytes = 0
        self.sent_at = 0.0
        self.started_at: float | None = None
        self.expected_s = 0.0  # expected run time beyond one task's (timeout slack)
        self.compute_s: float | None = None  # the worker's time for it, once it ran

    def __len__(self) -> int:
        return len(self.items)


class Job:
    """A stream of calls of one function; the engine takes chunks from it.

    Items come from a sequence (sliced on demand, nothing copied up front), or are pushed
    by a feeder thread reading a lazy iterable. Items to run again after a crash take
    precedence, one per chunk.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: CallMode,
        sink: Sink,
        options: TaskOptions,
        sizer: ChunkSizer,
        items: Sequence[Any] | None = None,
        admission: Admission | None = None,
    ) -> None:
        if not callable(fn):
            # Here, at submit, where the caller can see which call it was; in a worker
            # it would surface later, once per task, as "'int' object is not callable".
            raise TypeError(
                f"the task's function must be callable, not {type(fn).__name__} {fn!r:.80}"
            )
        self.id = next(Job._ids)
        self.fn = fn
        self.mode = mode
        self.sink = sink
        self.options = options
        self.sizer = sizer
        self.admission = admission
        self.input_error: BaseException | None = None  # what a lazy input raised
        self.shipped: Any = None  # what the backend made of ``fn`` (its pickle, its id)
        # task index -> the workers it crashed, attempt by attempt (named in the error)
        self.crashed_on: dict[int, list[str]] = {}
        self.cancelled = False
        self._sequence = items
        self._next_index = 0
        self._batches: deque[list[Any]] = deque()
        self._batched = 0  # items in _batches (summing them per dispatch was O(batches))
        self._retry: deque[tuple[Sequence[int], list[Any], int]] = deque()
        self.input_done = items is not None
        self.total = len(items) if items is not None else None
        self.admitted = self.total or 0  # items known so far (a lazy input grows)
        # Outcomes, settled only by the ledger: each admitted item ends in exactly one.
        self.done = 0
        self.failed = 0
        self.cancelled_items = 0

    # --- input -----------------------------------------------------------------------

    def push(self, batch: list[Any]) -> None:
        self._batches.append(batch)
        self._batched += len(batch)
        self.admitted += len(batch)

    def end_input(self, total: int, error: BaseException | None = None) -> None:
        self.input_done = True
        self.total = total
        self.input_error = error

    def has_ready_items(self) -> bool:
        return bool(self._retry) or self._queued() > 0

    def _queued(self) -> int:
        if self._sequence is not None:
            return max(0, len(self._sequence) - self._next_index)
        return self._batched

    def remaining_hint(self) -> int | None:
        """Items not yet sent, when the input's length is known (for guided chunking)."""
        if self._sequence is None:
            return None
        return self._queued()

    # --- cutting chunks ----------------------------------------------------------------

    @property
    def retry_next(self) -> bool:
        """The next chunk runs tasks again after a crash (they were admitted before)."""
        return bool(self._retry)

    def next_chunk(self, cid: int, size: int) -> Chunk:
        if self._retry:
            indices, items, attempt = self._retry.popleft()
            return Chunk(cid, self, indices, items, attempt)
        start = self._next_index
        if self._sequence is not None:
            stop = min(start + size, len(self._sequence))
            items = list(self._sequence[start:stop])
        else:
            items = self._take_batched(size)
            stop = start + len(items)
        self._next_index = stop
        return Chunk(cid, self, range(start, stop), items, 0)

    def _take_batched(self, size: int) -> list[Any]:
        """Up to ``size`` items, across as many pushed batches as it takes (a pipeline
        pushes small ones while its workers are busy)."""
        batches = self._batches
        head = batches[0]
        if len(head) > size:
            batches[0] = head[size:]
            items = head[:size]
        else:
            items = batches.popleft()
            while batches and len(items) < size:
                head = batches[0]
                want = size - len(items)
                if len(head) <= want:
                    items.extend(batches.popleft())
                else:
                    batches[0] = head[want:]
                    items.extend(head[:want])
        self._batched -= len(items)
        return items

    def requeue(self, indices: Sequence[int], items: list[Any], attempt: int) -> None:
        """Send these items again (after their worker died), ahead of new ones."""
        self._retry.append((indices, items, attempt))

    def withdraw(self) -> Sequence[int]:
        """Drop every item not yet sent; return their indices."""
        retried = [i for indices, _, _ in self._retry for i in indices]
        start = self._next_index
        if self._sequence is not None:
            end = len(self._sequence)
        else:
            end = start + sum(len(b) for b in self._batches)
        self._retry.clear()
        self._batches.clear()
        self._batched = 0
        self._next_index = end
        tail = range(start, end)
        return [*retried, *tail] if retried else tail

    def release(self) -> None:
        """Drop the references to the job's input (it is complete or abandoned)."""
        self._sequence = None
        self._batches.clear()
        self._batched = 0
        self._retry.clear()

    @property
    def finished(self) -> int:
        """Items with an outcome: done, failed or cancelled."""
        return self.done + self.failed + self.cancelled_items

    @property
    def complete(self) -> bool:
        return self.input_done and self.total is not None and self.finished >= self.total


__all__ = ["Admission", "CallMode", "Chunk", "Job", "Sink", "TaskOptions"]
