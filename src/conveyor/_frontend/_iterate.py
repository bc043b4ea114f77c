"""Iterating a many-task job's results: the buffer the engine fills, the iterator it feeds.

Results are kept in runs, a chunk's values as one list, so that a million tiny results
cost a few hundred buffer operations and lock rounds, not a million. The iterator hands
out one value at a time from the run in hand without taking any lock.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, Generic, TypeVar

from .._deadline import Deadline
from .._engine._engine import Engine
from .._engine._jobs import Job
from ._feeder import Feeder

T = TypeVar("T")


# A run of outcomes, as buffered and handed to the consumer: (True, [values...]) for
# consecutive successes, (False, exception) for one failed item.
Run = tuple[bool, Any]


class ResultBuffer:
    """Results of a many-item job, buffered for an iterator (ordered or not).

    Results are kept in runs, a chunk's values as one list, so that a million tiny results
    cost a few hundred buffer operations, not a million. ``on_take`` is told how many
    results the consumer takes, which is how the feeder knows it may read further.
    """

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._cond = threading.Condition()
        self._by_start: dict[int, Run] = {}  # ordered: runs by the index they start at
        self._arrived: collections.deque[Run] = collections.deque()  # unordered
        self._next = 0  # ordered: the index the consumer waits for; unordered: taken count
        self._length: int | None = None
        self._aborted: BaseException | None = None
        self._discarding = False
        self.on_take: Callable[[int], None] | None = None
        self.on_discard: Callable[[int], None] | None = None

    # --- sink ----------------------------------------------------------------------------

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        with self._cond:
            discarding = self._discarding
            if discarding:
                pass  # nobody will take them: counted below, not kept
            elif not self._ordered:
                self._arrived.append((True, _owned(values)))
            elif isinstance(indices, range) and indices.step == 1:
                self._by_start[indices.start] = (True, _owned(values))
            else:  # items re-run one by one after a crash: runs of one
                for index, value in zip(indices, values, strict=True):
                    self._by_start[index] = (True, [value])
            self._cond.notify_all()
        if discarding and self.on_discard is not None:
            self.on_discard(len(values))

    def discard(self) -> None:
        """The consumer is gone: drop the results it never took, and count them.

        Results that arrive later (tasks already running) are counted and dropped too.
        """
        with self._cond:
            self._discarding = True
            runs = [*self._by_start.values(), *self._arrived]
            self._by_start.clear()
            self._arrived.clear()
        dropped = sum(len(payload) for ok, payload in runs if ok)
        if dropped and self.on_discard is not None:
            self.on_discard(dropped)

    def fail(self, index: int, exc: BaseException) -> None:
        with self._cond:
            self._add_failure(index, exc)
            self._cond.notify_all()

    def input_failed(self, index: int, exc: BaseException) -> None:
        # The iterable itself raised after ``index`` items: that is the last "result".
        with self._cond:
            self._add_failure(index, exc)
            self._length = index + 1
            self._cond.notify_all()

    def _add_failure(self, index: int, exc: BaseException) -> None:
        if self._ordered:
            self._by_start[index] = (False, exc)
        else:
            self._arrived.append((False, exc))

    def abort(self, exc: BaseException) -> None:
        with self._cond:
            self._aborted = exc
            self._cond.notify_all()

    def close(self, total: int) -> None:
        with self._cond:
            if self._length is None:
                self._length = total
            self._cond.notify_all()

    def claim(self) -> bool:
        return True

    # --- consumer ------------------------------------------------------------------------

    def take(self, timeout: float | None, timeout_error: type[BaseException]) -> list[Run]:
        """Wait for the next result; return the runs of every result ready in order.

        One lock round per batch of runs is what lets a consumer keep up with tiny
        tasks. Raises StopIteration at the end, ``timeout_error`` after ``timeout``
        seconds with nothing ready.
        """
        deadline = Deadline(timeout)
        with self._cond:
            while True:
                runs, count = self._pop_ready()
                if runs:
                    break
                if self._length is not None and self._next >= self._length:
                    raise StopIteration
                if self._aborted is not None:
                    raise self._aborted
                if deadline.expired:
                    raise timeout_error()
                self._cond.wait(deadline.remaining())
        if self.on_take is not None:
            self.on_take(count)
        return runs

    def _pop_ready(self) -> tuple[list[Run], int]:
        if self._ordered:
            by_start, index = self._by_start, self._next
            runs = []
            while index in by_start:
                run = by_start.pop(index)
                runs.append(run)
                index += len(run[1]) if run[0] else 1
            count = index - self._next
        else:
            runs = list(self._arrived)
            self._arrived.clear()
            count = sum(len(payload) if ok else 1 for ok, payload in runs)
        self._next += count
        return runs, count


class ResultIterator(Generic[T]):
    """Iterator over a lazy map's results (``imap``); also ``next(timeout)``.

    Dropping it (or breaking out of the loop) cancels the items not yet started and stops
    reading the input.

    Example::

        for value in pool.imap(work, endless()):
            if good_enough(value):
                break          # no more input is read, queued items are withdrawn
    """

    def __init__(
        self,
        engine: Engine,
        job: Job,
        buffer: ResultBuffer,
        feeder: Feeder | None,
        timeout_error: type[BaseException],
        cancel_on_drop: bool = True,
        stop_progress: Callable[[], None] | None = None,
    ) -> None:
        self._buffer = buffer
        self._stop_progress = stop_progress
        self._runs: collections.deque[Run] = collections.deque()
        self._values: list[Any] = []  # the run being consumed, from ``_position`` on
        self._position = 0
        self._timeout_error = timeout_error
        self._job = job
        self._engine = engine
        self._feeder = feeder
        self._stream_rest: list[Any] = []  # runs(): the run in hand, reversed
        buffer.on_discard = engine.count_discarded
        if cancel_on_drop:
            # vars(self), not self: the finalizer must not keep the iterator alive, and it
            # reads what the iterator held but never handed out (see _unread).
            weakref.finalize(self, _drop, engine, job, feeder, buffer, vars(self), stop_progress)

    def __iter__(self) -> ResultIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        position, values = self._position, self._values
        if position < len(values):  # the common case: the run in hand goes on
            self._position = position + 1
            value = values[position]
            values[position] = None  # the caller may drop it: we must not keep it alive
            return value
        return self._next_run(timeout)

    def _next_run(self, timeout: float | None) -> T:
        while True:
            if not self._runs:
                try:
                    self._runs.extend(self._buffer.take(timeout, self._timeout_error))
                except KeyboardInterrupt:
                    self._stopped_waiting()
                    raise
            success, payload = self._runs.popleft()
            if not success:
                self._values, self._position = [], 0
                self._stopped_waiting()  # the bar stops where the error reached the caller
                raise payload
            if payload:
                self._values, self._position = payload, 1
                value, payload[0] = payload[0], None
                return value

    __next__ = next

    def runs(self) -> Iterator[Iterable[T]]:
        """Every remaining result, a run at a time, for a consumer that only iterates.

        ``itertools.chain.from_iterable(it.runs())`` is the fast way to hand out every
        result (``Executor.map``): no bytecode runs per value, only per run, and each
        value is let go of as it is handed out (the caller may drop it). An error ends
        the stream, as it ends a ``map`` in the stdlib.
        """
        while True:
            try:
                first = self.next()  # the slow path: also fetches the next run
            except StopIteration:
                return
            held = [first]
            del first  # this frame waits at the yield: it must not hold the value
            yield map(held.pop, repeat(-1, 1))  # let go of once handed out, as the rest
            rest, position = self._values, self._position
            self._values, self._position = [], 0
            rest.reverse()  # in place: what was handed out is now at the end
            del rest[len(rest) - position :]
            self._stream_rest = rest
            yield map(rest.pop, repeat(-1, len(rest)))  # popped in C, in order

    def cancel(self, error: BaseException | None = None) -> None:
        """Withdraw what has not started and stop reading the input.

        With ``error``, the consumer goes on: results not yet arrived raise ``error``
        instead of being waited for. Without, the consumer is done: results it did not
        take are dropped and counted (``results_discarded``).
        """
        if error is not None:
            _abandon(self._engine, self._job, self._feeder)
            self._buffer.abort(error)
            return
        _drop(self._engine, self._job, self._feeder, self._buffer, vars(self), self._stop_progress)

    def _stopped_waiting(self) -> None:
        if self._stop_progress is not None:
            self._stop_progress()

    @property
    def items_read(self) -> int:
        """How many items have been read from the input so far."""
        if self._feeder is None:  # a sequence: it was all there from the start
            return self._job.total or 0
        return self._feeder.items_read


def _abandon(engine: Engine, job: Job, feeder: Feeder | None) -> None:
    if feeder is not None:
        feeder.stop()
    if not job.complete:
        engine.cancel(job)


def _drop(
    engine: Engine,
    job: Job,
    feeder: Feeder | None,
    buffer: ResultBuffer,
    state: dict[str, Any],
    stop_progress: Callable[[], None] | None = None,
) -> None:
    """The consumer is done: withdraw the rest, count and let go of what it never took."""
    if stop_progress is not None:
        stop_progress()
    _abandon(engine, job, feeder)
    unread = _unread(state)
    state["_values"], state["_position"], state["_stream_rest"] = [], 0, []
    state["_runs"].clear()
    if unread:
        engine.count_discarded(unread)
    buffer.discard()


def _unread(state: dict[str, Any]) -> int:
    """Results a ResultIterator holds (``vars()`` of it) but has not handed out."""
    in_runs = sum(len(payload) for ok, payload in state["_runs"] if ok)
    return len(state["_values"]) - state["_position"] + len(state["_stream_rest"]) + in_runs


def _owned(values: Sequence[Any]) -> list[Any]:
    """The values as a list of the buffer's own: a chunk's decoded list is one already."""
    return values if type(values) is list else list(values)


__all__ = ["ResultBuffer", "ResultIterator", "Run"]
