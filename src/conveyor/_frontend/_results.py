"""Where results land: the stdlib-style result objects and the futures adapter.

Each class here is a *sink* for the engine (``deliver``/``fail``/``abort``/``close``),
and a face for the caller (``get``, ``next``, a ``Future``). Sinks are called outside the
engine lock; each guards its own state.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Generic, TypeVar

from .._callbacks import call_reporting_errors

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


class FutureSink:
    """Adapts a single-task job to a ``concurrent.futures.Future``.

    Each method takes the future's lock once: with many threads calling at once, the
    supervisor settles every round trip, and a future's lock costs it each time.
    """

    def __init__(self, future: Future[Any]) -> None:
        self.future = future
        self._running = False

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        try:
            self.future.set_result(values[0])
        except InvalidStateError:
            pass  # cancelled, or failed by a terminate that came first

    def fail(self, index: int, exc: BaseException) -> None:
        try:
            self.future.set_exception(exc)
        except InvalidStateError:
            pass

    input_failed = fail

    def abort(self, exc: BaseException) -> None:
        self.fail(0, exc)

    def close(self, total: int) -> None:
        pass

    def claim(self) -> bool:
        # A future cancelled while it waited must not run (the stdlib's contract). Sent
        # again after a crash, it is already running: asking the future again would
        # log a critical "unexpected state".
        if self._running:
            return not self.future.done()
        try:
            self._running = self.future.set_running_or_notify_cancel()
        except RuntimeError:  # already failed (the pool broke as it was sent)
            return False
        return self._running
