"""``conveyor.channel``: a queue seen through explicit send and receive handles.

The drop-in queue counts processes: a producer is a process that put and did not close.
A channel counts handles, in the manner of trio's memory channels: every
:class:`SendChannel` (the first, each ``clone()``, each copy another process unpickled)
is a sender until it is closed or its process dies, and receivers see the end of the
stream once the channel is empty and no sender is left, whether or not anything was
sent. Receive handles count the same way, so senders learn when nobody will ever read
again: ``send`` raises :class:`~conveyor.ReceiversGoneError` instead of waiting forever
on a full channel, and the items left behind are counted as undeliverable.

Each handle holds a writer on a FIFO, one FIFO for the senders (the queue's own, whose
hang-up is its end of stream) and one for the receivers: the kernel reports the hang-up
once the last writer is closed, by ``close()`` or by death. A handle pickled to another
process carries a writer opened for the receiver (``_handover.py`` keeps the parent's
copy until a child being started has its own), so a handle on its way counts too.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import select
import time
import weakref
from collections.abc import Iterable, Iterator
from multiprocessing import reduction
from multiprocessing.context import get_spawning_popen
from multiprocessing.util import register_after_fork
from typing import Any, Generic, TypeVar

from .._compat import process_arguments
from .._transport._fds import close_fds
from ..errors import ChannelClosedError, EndOfStream, ReceiversGoneError
from . import _handover
from ._crossing import private_dir, take_descriptors
from ._handles import QueueHandles
from ._queue import Queue, track_forks
from ._side import _Side
from ._stats import QueueStats
from ._wire import discard

T = TypeVar("T")

# A send asks the kernel whether every receiver is gone at most this often when it
# finds room; a send that waits for room asks each time it wakes.
RECEIVERS_CHECK_S = 0.01
_ids = itertools.count(1)


class _ChannelQueue(Queue[T]):
    """The queue under a channel: its producers and consumers are handles."""

    def __init__(self, maxsize: int, receivers_fd: int) -> None:
        self._maxsize = maxsize
        self._handles = QueueHandles.create(maxsize, tracks_producers=False)
        self._sides = None
        self._receivers_fd = self._also_wake = receivers_fd
        track_forks(self)

    def __reduce__(self) -> Any:
        raise TypeError("a channel crosses to other processes as its handles")

    def _start_producing(self) -> None:
        pass  # the send handle holds the writer

    def _producing_settled(self) -> bool:
        return True

    def _count_consumer(self, side: _Side) -> None:
        side.consuming = True  # counted per receive handle instead

    def _stream_ended(self) -> bool:
        # No "one must have put" rule: the first sender existed from the start.
        handles = self._handles
        return handles.producers_gone() and handles.books.waiting_to_send() == 0

    def _check_still_wanted(self, fds: list[int]) -> None:
        if receivers_gone(self._receivers_fd):
            discard(fds)
            raise ReceiversGoneError(_RECEIVERS_GONE)


_RECEIVERS_GONE = "every receive handle of the channel is closed or its process died"


def receivers_gone(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP: the last writer is gone
    return bool(poller.poll(0))


class _Core:
    """What the handles of one channel share in one process."""

    def __init__(self, queue: _ChannelQueue[Any], receivers_path: str, receivers_fd: int) -> None:
        self.queue = queue
        self.receivers_path = receivers_path
        self.receivers_fd = receivers_fd
        weakref.finalize(self, close_fds, [receivers_fd])

    def writer_path(self, kind: type[_Handle]) -> str:
        if kind is SendChannel:
            return self.queue._handles.fifo_path
        return self.receivers_path

    def open_writer(self, kind: type[_Handle]) -> int:
        return os.open(self.writer_path(kind), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def count(self, kind: type[_Handle], delta: int) -> None:
        row = self.queue._side().row
        if kind is SendChannel:
            row.producers(delta)
        else:
            row.consumers(delta)


class _Handle:
    """What both kinds of handle do: hold a writer, clone, close, cross processes."""

    def __init__(self, core: _Core, writer: int | None = None) -> None:
        self._core = core
        # [this handle's writer, one a forked child inherited]: a box the finalizer shares.
        self._ends: list[int | None] = [None, None]
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._ends, core, type(self))
        self._join(writer)
        register_after_fork(self, _after_fork_in_process_child)
        _live.add(self)

    def _join(self, writer: int | None = None) -> None:
        self._ends[0] = writer if writer is not None else self._core.open_writer(type(self))
        self._core.count(type(self), 1)

    def _in_use(self) -> None:
        if self._closed:
            raise ChannelClosedError(f"this {type(self).__name__} is closed")
        if self._ends[0] is None:  # a forked child's copy, used: it is this process's now
            inherited, self._ends[1] = self._ends[1], None
            self._join(inherited)

    def clone(self: _H) -> _H:
        """Another handle on the same channel, which counts until it too is closed."""
        if self._closed:
            raise ChannelClosedError(f"this {type(self).__name__} is closed")
        return type(self)(self._core)

    def close(self) -> None:
        """This handle is done (also when it is garbage collected, or its process ends)."""
        self._closed = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> QueueStats:
        """The channel's counters (``producers``: send handles open; ``consumers``:
        receive handles open; ``undeliverable``: items left once no receiver remains)."""
        queue = self._core.queue
        stats = queue.statistics()
        if receivers_gone(self._core.receivers_fd):
            stats = dataclasses.replace(stats, undeliverable=stats.depth + stats.waiting_to_send)
        return stats

    @property
    def maxsize(self) -> int:
        return self._core.queue.maxsize

    def __reduce__(self) -> Any:
        if self._closed:
            raise ChannelClosedError(f"cannot send a closed {type(self).__name__}")
        core = self._core
        writer = core.open_writer(type(self))  # the receiver's, from now
        travelling = reduction.DupFd(writer)
        popen = get_spawning_popen()
        if popen is not None:
            _handover.when_started(popen, _handover.ParentsCopy(writer))
        else:
            os.close(writer)  # the resource sharer holds a duplicate until it is taken
        receivers = reduction.DupFd(core.receivers_fd)
        state = (core.queue._maxsize, core.queue._handles, core.receivers_path, receivers)
        return _rebuild_handle, (type(self), state, travelling)


_H = TypeVar("_H", bound=_Handle)
_live: weakref.WeakSet[_Handle] = weakref.WeakSet()


class SendChannel(_Handle, Generic[T]):
    """The sending side of a :func:`channel`."""

    def send(self, item: T, timeout: float | None = None) -> None:
        """Send ``item``, waiting up to ``timeout`` for room (``queue.Full`` then).
        :class:`~conveyor.ReceiversGoneError` once no receive handle is left."""
        self._check_receivers()
        self._core.queue.put(item, True, timeout)

    def send_nowait(self, item: T) -> None:
        self._check_receivers()
        self._core.queue.put(item, False)

    def send_many(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Send every item, in order (pickled first: one that cannot be raises before
        any is sent); ``timeout`` is for the whole batch."""
        self._check_receivers()
        self._core.queue.put_many(items, True, timeout)

    def _check_receivers(self) -> None:
        self._in_use()
        now = time.monotonic()
        if now - getattr(self, "_checked_at", -RECEIVERS_CHECK_S) >= RECEIVERS_CHECK_S:
            self._checked_at = now
            if receivers_gone(self._core.receivers_fd):
                raise ReceiversGoneError(_RECEIVERS_GONE)


class ReceiveChannel(_Handle, Generic[T]):
    """The receiving side of a :func:`channel`."""

    def receive(self, timeout: float | None = None) -> T:
        """The next item, waiting up to ``timeout`` (``queue.Empty`` then);
        :class:`~conveyor.EndOfStream` once it is empty and no send handle is left."""
        self._in_use()
        item: T = self._core.queue.get(True, timeout)
        return item

    def receive_nowait(self) -> T:
        self._in_use()
        item: T = self._core.queue.get(False)
        return item

    def receive_many(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait for one item as ``receive`` does, then take up to ``max_items`` in all
        of those already there."""
        self._in_use()
        items: list[T] = self._core.queue.get_many(max_items, True, timeout)
        return items

    def __iter__(self) -> Iterator[T]:
        """Every item, until the end of the stream."""
        while True:
            try:
                yield self.receive()
            except EndOfStream:
                return


def channel(maxsize: int) -> tuple[SendChannel[Any], ReceiveChannel[Any]]:
    """A bounded channel between processes: ``(send handle, receive handle)``.

    Example::

        tx, rx = conveyor.channel(100)
        with conveyor.WorkerPool(4) as pool:
            for part in parts:
                pool.submit(produce, tx.clone(), part)  # each task's handle ends with it
            tx.close()                                  # ours: only the tasks' remain
            for item in rx:                             # ends when every sender is gone
                ...
    """
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
        raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
    path = os.path.join(private_dir(), f"receivers-{next(_ids)}")
    os.mkfifo(path, 0o600)
    receivers_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    core = _Core(_ChannelQueue(maxsize, receivers_fd), path, receivers_fd)
    return SendChannel(core), ReceiveChannel(core)


def _release(ends: list[int | None], core: _Core, kind: type[_Handle]) -> None:
    """Close one handle's writers (once: ``weakref.finalize`` sees to it)."""
    if ends[0] is not None:
        try:
            core.count(kind, -1)
        except Exception:  # at interpreter exit: the row goes with the process
            pass
    close_fds([fd for fd in ends if fd is not None])
    ends[:] = [None, None]


def _rebuild_handle(kind: type[_H], state: tuple[Any, ...], travelling: Any) -> _H:
    maxsize, handles, receivers_path, receivers = state
    writer, receivers_fd = take_descriptors([travelling, receivers], "a channel handle")
    queue = _ChannelQueue.__new__(_ChannelQueue)
    queue._maxsize, queue._handles, queue._sides = maxsize, handles, None
    queue._receivers_fd = queue._also_wake = receivers_fd
    track_forks(queue)
    return kind(_Core(queue, receivers_path, receivers_fd), writer)


def _after_fork_in_child() -> None:
    """A forked child's copies are its parent's until it uses them, or until
    ``multiprocessing`` says its ``Process`` was handed them."""
    for handle in list(_live):
        handle._ends[1], handle._ends[0] = handle._ends[0], None


def _after_fork_in_process_child(handle: _Handle) -> None:
    inherited, handle._ends[1] = handle._ends[1], None
    if inherited is None or handle._closed:
        return
    if any(arg is handle for arg in process_arguments()):
        handle._join(inherited)
    else:
        os.close(inherited)


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["ReceiveChannel", "SendChannel", "channel"]
