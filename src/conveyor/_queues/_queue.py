"""``conveyor.Queue`` and ``conveyor.SimpleQueue``: ``multiprocessing``'s API, made robust.

What the stdlib's queues lack, each in one sentence (``docs/queues.md`` has the proofs):
a consumer learns that every producer has closed or died (``EndOfStream``) instead of
waiting forever; ``shutdown()`` wakes every blocked caller in every process; a process
killed inside ``put`` or ``get`` can neither tear a message nor leave a lock held,
because there is no lock (``_wire.py``); a pickling error reaches the caller of
``put``; ``qsize()`` works everywhere; exit never blocks on unsent items for long.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import socket
import time
import weakref
from collections.abc import Iterable, Iterator
from multiprocessing.util import register_after_fork
from typing import Any, Generic, TypeVar

from .._compat import process_arguments
from .._deadline import Deadline
from ..errors import EndOfStream, QueueShutDown
from ._books import (
    H_DISCARDED,
    H_RETIRED_PUTS,
    H_ROOM_WAITERS,
    H_SHUTDOWN,
    R_PUTS,
    R_SPILLED,
    SHUTDOWN,
    SHUTDOWN_IMMEDIATE,
)
from ._handles import QueueHandles, Role
from ._pid import current_pid
from ._side import _Side
from ._stats import QueueStats, read_stats
from ._wire import decode_payload, discard, encode, encode_message

T = TypeVar("T")
_DONTWAIT = int(socket.MSG_DONTWAIT)


class Queue(Generic[T]):
    """A process-safe FIFO queue: ``multiprocessing.Queue``'s API, plus end of stream.

    Share it with ``multiprocessing.Process`` (any start method), pass it to a conveyor
    pool's tasks, use it from threads. A *producer* is a process that has put into the
    queue and not called :meth:`close`; once the queue is empty and every producer has
    closed or died, :meth:`get` raises :class:`~conveyor.EndOfStream` and iteration ends::

        q = conveyor.Queue()
        with conveyor.WorkerPool(4) as pool:
            pool.submit(produce, q)     # puts, then returns: its worker process closes
            for item in q:              # ends once every producer is gone
                ...
    """

    _counts_abandoned = False  # items taken and never marked done (JoinableQueue)
    _also_wake: int | None = None  # a descriptor whose hang-up wakes a waiting put

    def _check_still_wanted(self, fds: list[int]) -> None:
        """Called when a waiting put wakes: raise (discarding ``fds``) to give up."""

    def __init__(self, maxsize: int = 0) -> None:
        self._maxsize = maxsize if maxsize > 0 else 0
        self._handles = QueueHandles.create(self._maxsize)
        self._sides: _Side | None = None
        register_after_fork(self, _after_fork_in_process_child)
        _live.add(self)

    def __reduce__(self) -> Any:
        return _rebuild_queue, (type(self), self._maxsize, self._handles)

    def _side(self) -> _Side:
        side = self._sides
        if side is None or side.pid != current_pid():
            side = self._sides = _Side(self._handles)
        return side

    # --- putting -------------------------------------------------------------------------

    def put(self, obj: T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` into the queue; with a ``maxsize``, wait for room (``queue.Full``)."""
        side = self._sides
        if side is not None and side.fast_put and not side.backlogged:
            words = side.words
            if not words[H_SHUTDOWN]:
                message = encode_message(obj)
                if type(message) is not bytes:
                    self._send(side, *message)
                    return
                try:
                    side.send(message, _DONTWAIT)
                except BlockingIOError:
                    self._send(side, [message], [])
                    return
                with side.lock:  # the row's count, after the send (Row.put_sent)
                    words[side.puts] += 2
                return
        self._put(obj, block, timeout)

    def _put(self, obj: T, block: bool, timeout: float | None) -> None:
        side = self._open_side()
        handles = self._handles
        if handles.books.words[H_SHUTDOWN]:
            raise QueueShutDown("the queue was shut down: nothing more can be put")
        parts, fds = encode(obj)  # an unpicklable item fails here, in the caller
        try:
            self._start_producing()
        except BaseException:
            discard(fds)
            raise
        if self._maxsize:
            self._put_bounded(side, parts, fds, block, timeout)
        else:
            self._send(side, parts, fds)
            side.fast_put = self._producing_settled()

    def _start_producing(self) -> None:
        self._handles.become_producer()

    def _producing_settled(self) -> bool:
        """Whether a put may skip ``_start_producing``: this process is a producer."""
        return self._handles.role is Role.PRODUCER

    def _send(self, side: _Side, parts: list[Any], fds: list[int]) -> None:
        if side.backlog:
            side.backlog.add(parts, fds)  # behind this process's earlier items
            side.backlog.pump()
            return
        if self._handles.try_send(parts, fds):
            side.row.put_sent()
        else:
            side.backlog.add(parts, fds)

    def put_nowait(self, obj: T) -> None:
        self.put(obj, False)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put every item, in order. All are pickled first: one that cannot be pickled
        raises before any is put. A bounded queue waits for room as ``put`` does (the
        ``timeout`` is for the whole batch; on ``queue.Full`` the items before are in)."""
        side = self._open_side()
        handles = self._handles
        if handles.books.words[H_SHUTDOWN]:
            raise QueueShutDown("the queue was shut down: nothing more can be put")
        messages: list[tuple[list[Any], list[int]]] = []
        try:
            for obj in items:
                messages.append(encode(obj))
        except BaseException:
            for _, fds in messages:
                discard(fds)
            raise
        self._start_producing()
        deadline = Deadline(timeout if block else 0.0)
        for done, (parts, fds) in enumerate(messages):
            try:
                if self._maxsize:
                    self._put_bounded(side, parts, fds, block, deadline.remaining())
                else:
                    self._send(side, parts, fds)
            except BaseException:
                for _, unsent in messages[done + 1 :]:
                    discard(unsent)
                raise

    def _put_bounded(
        self, side: _Side, parts: Any, fds: list[int], block: bool, timeout: float | None
    ) -> None:
        """Send once there is room; the check and the send are one step, under the lock."""
        handles, books = self._handles, self._handles.books
        deadline = Deadline(timeout if block else 0.0)
        started = time.monotonic()
        try:
            while True:
                with books.locked():
                    if self._room_left() > 0:
                        self._send(side, parts, fds)
                        return
                    if not block or deadline.expired:
                        discard(fds)
                        raise queue.Full
                    books.words[H_ROOM_WAITERS] += 1
                try:
                    # Counted as a waiter before this last look, so a consumer that
                    # makes room from now on posts a signal for us.
                    if self._room_left() <= 0:
                        ready = handles.wait(
                            handles.room, select.POLLIN, deadline.remaining(), self._also_wake
                        )
                        if handles.room in ready:
                            handles.take_room_signal()
                        if handles.stopped in ready:
                            discard(fds)
                            raise QueueShutDown("the queue was shut down while put waited")
                        self._check_still_wanted(fds)
                finally:
                    with books.locked():
                        books.words[H_ROOM_WAITERS] -= 1
        finally:
            if time.monotonic() - started > 1e-3:
                side.row.blocked(time.monotonic() - started)

    def _room_left(self) -> int:
        books = self._handles.books
        return self._maxsize - books.depth() - books.waiting_to_send()

    # --- getting -------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return an item; wait for one unless ``block`` is false.

        Raises ``queue.Empty`` (nothing within ``timeout``), :class:`~conveyor.EndOfStream`
        (empty, and every producer closed or died) or :class:`~conveyor.QueueShutDown`.
        """
        side = self._sides
        if side is not None and side.fast_get and not side.words[H_SHUTDOWN]:
            message = side.take_now()
            if message is not None:
                if self._maxsize and side.words[H_ROOM_WAITERS] > 0:
                    self._handles.post_room()
                kind, payload, fds = message
                if not fds:
                    return pickle.loads(payload)
                return decode_payload(kind, payload, fds)
        return self._get(block, timeout)

    def _get(self, block: bool, timeout: float | None) -> T:
        side = self._open_side()
        if side.pending_error is not None:
            error, side.pending_error = side.pending_error, None
            raise error
        handles = self._handles
        deadline = Deadline(timeout if block else 0.0)
        started: float | None = None
        try:
            while True:
                shut = handles.books.words[H_SHUTDOWN]
                if shut & SHUTDOWN_IMMEDIATE:
                    raise QueueShutDown("the queue was shut down")
                handles.consuming()
                if not side.consuming:
                    self._count_consumer(side)
                message = self._take(side)
                if message is not None:
                    side.fast_get = self._consuming_settled()
                    return decode_payload(*message)
                if shut & SHUTDOWN:
                    raise QueueShutDown("the queue was shut down and is empty")
                if self._stream_ended():
                    # Look once more: the last producer may have put and closed between
                    # the take above and that look. Once every producer is gone nothing
                    # new can come, so a second empty take is conclusive.
                    message = self._take(side)
                    if message is not None:
                        return decode_payload(*message)
                    raise EndOfStream("the queue is empty and every producer has closed or died")
                if not block or deadline.expired:
                    raise queue.Empty
                if started is None:
                    started = time.monotonic()
                handles.wait_for_message(deadline.remaining())
        finally:
            if started is not None:
                side.row.blocked(time.monotonic() - started)

    def _consuming_settled(self) -> bool:
        """Whether a get may skip the first call's checks: this process is a counted
        consumer that was not just handed the queue."""
        handles = self._handles
        return handles.role is not Role.EXPECTED and handles.inherited_end is None

    def _count_consumer(self, side: _Side) -> None:
        """This process takes from the queue: one more consumer, until it ends."""
        side.consuming = True
        side.row.consumers(1)

    def get_nowait(self) -> T:
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        """Wait for one item as ``get`` does, then take up to ``max_items`` in all of
        those already there, without waiting for more."""
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items!r}")
        items = [self.get(block, timeout)]
        side = self._side()
        while len(items) < max_items:
            message = self._take(side)
            if message is None:
                break
            try:
                items.append(decode_payload(*message))
            except Exception as exc:
                # The batch so far is returned; the next get raises this item's error.
                side.pending_error = exc
                side.fast_get = False
                break
        return items

    def __iter__(self) -> Iterator[T]:
        """Every item, until end of stream."""
        while True:
            try:
                yield self.get()
            except EndOfStream:
                return

    def _take(self, side: _Side) -> tuple[int, bytes, list[int]] | None:
        """One message if there is one now, counted in this process's row (the busy
        bit covers the receive), and a room signal for producers waiting on a full queue."""
        message = side.take_now()
        waiting = self._maxsize and self._handles.books.words[H_ROOM_WAITERS] > 0
        if message is not None and waiting:
            self._handles.post_room()
        return message

    def _stream_ended(self) -> bool:
        """Every producer closed or died (after at least one put), and nothing is on
        its way: no live process still has items in its backlog.

        The FIFO hangs up once its writers are gone, but a process handed the queue
        holds a writer before it has put anything: one that put must have existed.
        """
        handles, books = self._handles, self._handles.books
        if not handles.producers_gone():
            return False
        ever_put = books.total(R_PUTS) + books.words[H_RETIRED_PUTS] + books.total(R_SPILLED)
        return ever_put > 0 and books.waiting_to_send() == 0

    # --- size ----------------------------------------------------------------------------

    def qsize(self) -> int:
        """Items put and not yet taken, in every process (backlogs included)."""
        books = self._handles.books
        return books.depth() + books.waiting_to_send()

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return bool(self._maxsize) and self.qsize() >= self._maxsize

    @property
    def maxsize(self) -> int:
        return self._maxsize

    # --- ending --------------------------------------------------------------------------

    def close(self) -> None:
        """This process puts nothing more (its backlog is still sent)."""
        side = self._side()
        side.closed = True
        side.fast_put = side.fast_get = False
        self._handles.stop_producing()

    def join_thread(self) -> None:
        """Wait until this process's backlog is sent (after :meth:`close`)."""
        side = self._side()
        if not side.closed:
            raise ValueError("Queue.join_thread() called before Queue.close()")
        side.backlog.flush(None)

    def cancel_join_thread(self) -> None:
        """Do not wait for this process's backlog at exit."""
        self._side().backlog.cancelled = True

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down, for every process: blocked callers wake.

        ``put`` then raises :class:`~conveyor.QueueShutDown`; ``get`` returns what is left
        and then raises it, or raises it at once with ``immediate=True``, which drops
        the items still queued (counted in ``statistics().discarded``).
        """
        handles = self._handles
        books = handles.books
        with books.locked():
            books.words[H_SHUTDOWN] |= SHUTDOWN | (SHUTDOWN_IMMEDIATE if immediate else 0)
        handles.signal_shutdown()
        if immediate:
            dropped = 0
            while (message := handles.try_receive()) is not None:
                discard(message[2])
                dropped += 1
            with books.locked():
                books.words[H_DISCARDED] += dropped

    def statistics(self) -> QueueStats:
        return read_stats(self._handles.books, self._maxsize, self._counts_abandoned)

    stats = statistics

    def _open_side(self) -> _Side:
        side = self._side()
        if side.closed:
            raise ValueError(f"Queue {self!r} is closed")
        return side

    def __repr__(self) -> str:
        return f"<conveyor.{type(self).__name__} maxsize={self._maxsize}>"


def producer_ends_for(values: Iterable[Any]) -> list[int]:
    """A producer end of each queue among ``values`` (top level, and inside a tuple), for
    a pool job that carries them: the job counts as their producer from its submission,
    so a consumer cannot see the end while its tasks wait in the pool's queue."""
    ends: list[int] = []
    seen: set[int] = set()
    for value in values:
        inner = value if type(value) is tuple else (value,)
        for candidate in inner:
            if isinstance(candidate, Queue) and id(candidate._handles) not in seen:
                seen.add(id(candidate._handles))
                try:
                    ends.append(candidate._handles.open_writer())
                except OSError:
                    continue  # its creator is gone: the task will say so when it runs
    return ends


def _rebuild_queue(cls: type[Queue[Any]], maxsize: int, handles: QueueHandles) -> Queue[Any]:
    queue_ = cls.__new__(cls)
    queue_._maxsize = maxsize
    queue_._handles = handles
    queue_._sides = None
    register_after_fork(queue_, _after_fork_in_process_child)
    _live.add(queue_)
    return queue_


def _after_fork_in_process_child(queue_: Queue[Any]) -> None:
    """In a child that ``multiprocessing`` forked: was it handed this queue?

    A forked child inherits every queue without unpickling any; the ones among its
    ``Process`` arguments were handed to it, as they would have been under spawn.
    """
    queue_._handles.adopt_inherited_end(handed=queue_ in process_arguments())


_live: weakref.WeakSet[Queue[Any]] = weakref.WeakSet()


def track_forks(queue_: Queue[Any]) -> None:
    """Forget ``queue_``'s side in a forked child (every queue made without ``__init__``)."""
    _live.add(queue_)


def _forget_sides_after_fork() -> None:
    """A forked child's side of each queue is its parent's (puts and gets skip the
    check of the pid on their fast path)."""
    for queue_ in list(_live):
        queue_._sides = None


os.register_at_fork(after_in_child=_forget_sides_after_fork)

__all__ = ["Queue", "producer_ends_for", "track_forks"]
