"""The stdlib's two other queues, over ``Queue``: ``JoinableQueue`` and ``SimpleQueue``."""

from __future__ import annotations

import select
from typing import TypeVar

from .._deadline import Deadline
from ._books import H_JOIN_WAITERS
from ._queue import Queue

T = TypeVar("T")


class JoinableQueue(Queue[T]):
    """``multiprocessing.JoinableQueue``: :meth:`task_done` and :meth:`join`, across processes.

    ``join()`` returns once every item put has been marked done, or taken by a process
    that then died (``statistics().abandoned``): the stdlib's would wait forever for it::

        q = conveyor.JoinableQueue()
        for job in jobs:
            q.put(job)
        q.join()        # every job done, whoever took it, or its taker died
    """

    _counts_abandoned = True

    def task_done(self) -> None:
        """Mark one item taken from the queue as done."""
        handles = self._handles
        books = handles.books
        if books.unfinished() <= 0:
            raise ValueError("task_done() called too many times")
        self._side().row.task_done()
        if books.unfinished() <= 0:
            handles.signal_all_done()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put is done; False if ``timeout`` passed first."""
        handles = self._handles
        books = handles.books
        deadline = Deadline(timeout)
        with books.locked():
            books.words[H_JOIN_WAITERS] += 1
        try:
            while books.unfinished() > 0:
                if deadline.expired:
                    return False
                ready = handles.wait(handles.done, select.POLLIN, deadline.remaining())
                if handles.done in ready:
                    handles.take_all_done_signal()
            return True
        finally:
            with books.locked():
                books.words[H_JOIN_WAITERS] -= 1


class SimpleQueue(Queue[T]):
    """``multiprocessing.SimpleQueue``'s API: unbounded, with ``get``, ``put``, ``empty``.

    As the stdlib's, once closed in a process it raises :class:`OSError` there (its
    pipe's "handle is closed"), where ``Queue`` raises ``ValueError``.
    """

    def __init__(self) -> None:
        super().__init__(0)

    def put(self, obj: T) -> None:  # type: ignore[override]
        self._check_open()
        super().put(obj)

    def get(self) -> T:  # type: ignore[override]
        self._check_open()
        return super().get()

    def empty(self) -> bool:
        self._check_open()
        return super().empty()

    def _check_open(self) -> None:
        if self._side().closed:
            raise OSError(f"SimpleQueue {self!r} is closed")


__all__ = ["JoinableQueue", "SimpleQueue"]
