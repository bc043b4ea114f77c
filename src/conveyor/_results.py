"""Where results land: the stdlib-style result objects and the futures adapter.

Each class here is a *sink* for the engine (``deliver``/``fail``/``abort``/``close``),
and a face for the caller (``get``, ``next``, a ``Future``). Sinks are called outside the
engine lock; each guards its own state.
"""

from __future__ import annotations

import collections
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from ._callbacks import call_reporting_errors

T = TypeVar("T")


def _run_callback(callback: Callable[[Any], Any] | None, value: Any) -> None:
    if callback is None:
        return
    # The stdlib lets this kill its result thread (and hang the pool); we report it.
    call_reporting_errors(callback, value)


class ApplyResult(Generic[T]):
    """The result of ``apply_async``, with the API of ``multiprocessing.pool.AsyncResult``.

    Example::

        res = pool.apply_async(pow, (2, 10))
        res.get(timeout=5)   # 1024
    """

    def __init__(
        self,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        self._event.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _set(self, success: bool, value: Any) -> None:
        if self._event.is_set():
            return
        self._success, self._value = success, value
        _run_callback(self._callback if success else self._error_callback, value)
        self._event.set()

    # --- sink ----------------------------------------------------------------------------

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        self._set(True, values[0])

    def fail(self, index: int, exc: BaseException) -> None:
        self._set(False, exc)

    def input_failed(self, index: int, exc: BaseException) -> None:
        self._set(False, exc)

    def abort(self, exc: BaseException) -> None:
        self._set(False, exc)

    def close(self, total: int) -> None:
        pass

    def claim(self) -> bool:
        return True


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[T]]):
    """The result of ``map_async``: a list, or the first error (as the stdlib does)."""

    def __init__(
        self,
        length: int,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        super().__init__(callback, error_callback)
        self._values: list[Any] = [None] * length
        self._left = length
        self._lock = threading.Lock()
        if length == 0:
            self._success, self._value = True, []
            self._event.set()

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        with self._lock:
            if isinstance(indices, range) and indices.step == 1:
                self._values[indices.start : indices.stop] = values
            else:
                for index, value in zip(indices, values, strict=True):
                    self._values[index] = value
            self._left -= len(indices)
            finished = self._left == 0
        if finished:
            self._set(True, self._values)

    def fail(self, index: int, exc: BaseException) -> None:
        with self._lock:
            self._left -= 1
        self._set(False, exc)


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
                self._arrived.append((True, list(values)))
            elif isinstance(indices, range) and indices.step == 1:
                self._by_start[indices.start] = (True, list(values))
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
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                runs, count = self._pop_ready()
                if runs:
                    break
                if self._length is not None and self._next >= self._length:
                    raise StopIteration
                if self._aborted is not None:
                    raise self._aborted
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise timeout_error()
                self._cond.wait(remaining)
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


class FutureSink:
    """Adapts a single-task job to a ``concurrent.futures.Future``."""

    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        if not self.future.done():
            self.future.set_result(values[0])

    def fail(self, index: int, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    input_failed = fail

    def abort(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def close(self, total: int) -> None:
        pass

    def claim(self) -> bool:
        # A future cancelled while it waited must not run (the stdlib's contract).
        if self.future.running():
            return True
        if self.future.done():
            return False
        return self.future.set_running_or_notify_cancel()
