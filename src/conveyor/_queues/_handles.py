"""One process's handles on a queue's kernel objects, and how they reach other processes.

A queue is six descriptors and a path, made by the process that creates it:

- ``tx`` / ``rx``: the two ends of a ``SOCK_SEQPACKET`` socket pair. Every producer sends
  on ``tx``, every consumer receives on ``rx``: the kernel keeps the messages, whole and
  in order, and gives each to exactly one reader (``_wire.py``).
- ``alive``: the read end of a FIFO whose path producers open for writing, each its
  own, at their first ``put``. The kernel reports ``POLLHUP`` on it once every writer
  that ever opened it has closed, by ``close()`` or by dying: end of stream, learnt from
  the processes themselves, with no timeout. Readers share one open file description
  (made before any writer), so each sees the hang-up whenever it joined.
- ``stopped``: an eventfd written once by ``shutdown()``; it stays readable, so every
  process blocked in the queue wakes, whichever it is.
- ``room``: a semaphore eventfd (bounded queues): a consumer posts one after taking an
  item while producers wait for room.
- ``done``: an eventfd ``task_done()`` writes when no item is left unfinished, for
  ``JoinableQueue.join()``.
- the books (``_books.py``): a memfd holding the shared counters.

They reach another process as ``multiprocessing`` passes descriptors: inherited when
the process is being spawned, else through ``multiprocessing``'s resource sharer, which
accepts only processes holding the creator's ``authkey``. A forked child keeps the
handles but not the parent's producer end (``os.register_at_fork``).
"""

from __future__ import annotations

import enum
import itertools
import os
import select
import socket
import threading
import weakref
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any

from .._transport._fds import ANCILLARY_BYTES, close_fds, received_fds, rights
from ..errors import QueueOwnerGoneError
from . import _handover
from ._books import Books
from ._crossing import forget_private_dir, private_dir, take_descriptors
from ._wire import MESSAGE_MAX_BYTES

# The socket's buffer, in bytes (the kernel caps it at net.core.wmem_max, and doubles
# it): what the kernel holds before ``put`` overflows into the sender's backlog.
SOCKET_BUFFER_BYTES = 4 << 20
POLL_SLICE_S = 1.0  # waits re-check their condition at least this often: never a hang

_EFD_FLAGS = os.EFD_CLOEXEC | os.EFD_NONBLOCK
# Plain ints: the socket module's flags are IntFlag members, whose operators cost
# microseconds on a path that runs for every item.
_DONTWAIT = int(socket.MSG_DONTWAIT)
_ids = itertools.count(1)
_live: weakref.WeakSet[QueueHandles] = weakref.WeakSet()
_by_token: weakref.WeakValueDictionary[str, QueueHandles] = weakref.WeakValueDictionary()


class Role(enum.Enum):
    """What this process is to the queue's end of stream (whether it holds a writer)."""

    NONE = "none"  # not a producer: it never put, or it closed, or its task ended
    EXPECTED = "expected"  # handed the queue, not used yet: counted as a producer
    PRODUCER = "producer"  # it put, and has not closed


class QueueHandles:
    """The descriptors of one queue in this process."""

    def __init__(
        self,
        token: str,
        fds: list[int],
        fifo_path: str,
        owner_pid: int,
        tracks_producers: bool = True,
    ) -> None:
        tx, rx, alive, stopped, room, done, books = fds
        # False for a channel's queue: its producers are send handles holding FIFO
        # writers of their own, not processes (_channel.py).
        self.tracks_producers = tracks_producers
        self.token = token
        self.tx = socket.socket(fileno=tx)
        self.rx = socket.socket(fileno=rx)
        self.alive = alive
        self.stopped = stopped
        self.room = room
        self.done = done
        self.books = Books(books)
        self.fifo_path = fifo_path
        self.owner_pid = owner_pid
        # This process's producer end of the FIFO, and a forked child's inherited one
        # until it knows whether it was handed the queue (_handover.py): in a box the
        # finalizer shares, so a dropped queue closes whatever it holds then.
        self._ends: list[int | None] = [None, None]
        self.role = Role.NONE
        # Told when this process starts or stops being a producer (for the books).
        self.on_producing: Callable[[bool], None] | None = None
        self.on_expected: Callable[[], None] | None = None  # handed the queue (again)
        self.pid = os.getpid()
        self._scratch = threading.local()
        self._waiters: list[_Waiter] = []  # every thread's, to close with the handles
        self.closed = False
        self._finalizer = weakref.finalize(
            self,
            _release,
            self.tx,
            self.rx,
            [alive, stopped, room, done],
            self.books,
            self._ends,
            self._waiters,
        )
        # Not at exit: the backlog's flush runs then and needs the socket; the kernel
        # closes what is left when the process ends.
        self._finalizer.atexit = False
        _live.add(self)
        _by_token[token] = self

    @property
    def writer(self) -> int | None:
        return self._ends[0]

    @writer.setter
    def writer(self, fd: int | None) -> None:
        self._ends[0] = fd

    @property
    def inherited_end(self) -> int | None:
        return self._ends[1]

    @inherited_end.setter
    def inherited_end(self, fd: int | None) -> None:
        self._ends[1] = fd

    @classmethod
    def create(cls, maxsize: int, tracks_producers: bool = True) -> QueueHandles:
        tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        path = os.path.join(private_dir(), f"queue-{next(_ids)}")
        os.mkfifo(path, 0o600)
        alive = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        books = Books.create(maxsize)
        fds = [
            tx.detach(),
            rx.detach(),
            alive,
            os.eventfd(0, _EFD_FLAGS),
            os.eventfd(0, _EFD_FLAGS | os.EFD_SEMAPHORE),
            os.eventfd(0, _EFD_FLAGS),
            books.fd,
        ]
        books.close()
        token = f"{os.getpid()}-{os.urandom(8).hex()}"
        return cls(token, fds, path, os.getpid(), tracks_producers)

    # --- crossing to another process ---------------------------------------------------

    def __reduce__(self) -> Any:
        fds = [self.tx.fileno(), self.rx.fileno(), self.alive, self.stopped, self.room]
        fds += [self.done, self.books.fd]
        shared = [reduction.DupFd(fd) for fd in fds]
        if not self.tracks_producers:
            return _rebuild, (self.token, shared, self.fifo_path, self.owner_pid, None, False)
        child_end = _handover.end_for_spawned_child(self)
        end = None if child_end is None else reduction.DupFd(child_end)
        return _rebuild, (self.token, shared, self.fifo_path, self.owner_pid, end)

    # --- producers ----------------------------------------------------------------------

    def become_producer(self) -> None:
        """This process puts: from now on, consumers wait for it to close or die."""
        if self.role is Role.PRODUCER:
            return
        if self.writer is None:
            self.writer = self._open_writer()
        self.role = Role.PRODUCER
        if self.on_producing is not None:
            self.on_producing(True)

    def expect_production(self, end: int | None = None) -> None:
        """This process was handed the queue: count it as a producer until it shows it is
        none (its first ``get`` comes before any ``put``), closes, or ends. ``end``: a
        producer end its parent opened for it (``_handover.py``)."""
        if self.role is Role.NONE:
            self.writer = end if end is not None else self._open_writer()
            self.role = Role.EXPECTED
            if self.on_expected is not None:
                self.on_expected()
        elif end is not None:
            os.close(end)  # it holds one already

    def adopt_inherited_end(self, handed: bool) -> None:
        """A forked child learns whether its ``Process`` was handed this queue."""
        end, self.inherited_end = self.inherited_end, None
        if end is None:
            return
        if handed:
            self.expect_production(end)
        else:
            os.close(end)

    def consuming(self) -> None:
        """A ``get``: a process handed the queue that has not put is a consumer."""
        if self.role is Role.EXPECTED:
            self.stop_producing()
        if self.inherited_end is not None:
            self.adopt_inherited_end(False)

    def stop_producing(self) -> None:
        writer, self.writer = self.writer, None
        was_producer = self.role is Role.PRODUCER
        self.role = Role.NONE
        if writer is not None:
            os.close(writer)
        if was_producer and self.on_producing is not None:
            self.on_producing(False)

    def open_writer(self) -> int:
        """A new producer end of the FIFO (the caller owns it)."""
        return self._open_writer()

    def _open_writer(self) -> int:
        try:
            return os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise QueueOwnerGoneError(
                f"cannot use the queue: the process that created it (pid "
                f"{self.owner_pid}) has exited ({exc.strerror})"
            ) from exc

    # --- messages -----------------------------------------------------------------------

    def try_send(self, parts: list[Any], fds: list[int]) -> bool:
        """Send one message if the socket has room now; True once sent (fds then closed)."""
        try:
            if fds:
                self.tx.sendmsg(parts, rights(fds), _DONTWAIT)
            else:
                self.tx.sendmsg(parts, (), _DONTWAIT)
        except BlockingIOError:
            return False
        if fds:
            close_fds(fds)
        return True

    def try_receive(self) -> tuple[int, bytes, list[int]] | None:
        """Take one message if there is one now: its kind byte, the rest, and the
        descriptors that came with it."""
        try:
            scratch, into = self._scratch.view, self._scratch.into
        except AttributeError:
            scratch = self._buffer()
            into = self._scratch.into = [scratch]
        try:
            n, ancdata, flags, _ = self.rx.recvmsg_into(into, ANCILLARY_BYTES, _DONTWAIT)
        except BlockingIOError:
            return None
        fds = received_fds(ancdata, flags, "a queue message")
        return scratch[0], bytes(scratch[1:n]), fds

    def _buffer(self) -> memoryview:
        scratch = getattr(self._scratch, "view", None)
        if scratch is None:
            scratch = self._scratch.view = memoryview(bytearray(MESSAGE_MAX_BYTES))
        return scratch

    # --- waiting ------------------------------------------------------------------------

    def wait(
        self, fd: int, events: int, timeout: float | None, also: int | None = None
    ) -> set[int]:
        """Block until ``fd`` has ``events``, the queue is shut down, or its producers
        are gone (or ``also`` hangs up); return which of (fd, stopped, alive, also) woke
        it (empty: timed out).

        The FIFO is watched only while it has not hung up: once it has, the hang-up
        stays, and a caller for whom it is not yet the end (nobody has put, or items
        are still on their way) would wake at once, again and again.
        """
        poller = select.poll()
        poller.register(fd, events)
        poller.register(self.stopped, select.POLLIN)
        if not self.producers_gone():
            poller.register(self.alive, 0)  # POLLHUP is always reported
        if also is not None:
            poller.register(also, 0)
        slice_s = POLL_SLICE_S if timeout is None else min(timeout, POLL_SLICE_S)
        return {ready for ready, _ in poller.poll(max(0.0, slice_s) * 1000)}

    def wait_for_message(self, timeout: float | None) -> None:
        """Block until a message may be there, the queue is shut down, or its producers
        are gone (the caller looks again; at most ``POLL_SLICE_S``).

        Waits in an epoll of this thread's, where the socket is ``EPOLLEXCLUSIVE``: a
        message wakes one waiting consumer, not all of them (with ``poll`` every
        consumer of a busy queue woke for each message, and all but one found none).
        """
        waiter = self._waiter()
        waiter.follow_producers(not self.producers_gone())
        slice_s = POLL_SLICE_S if timeout is None else min(timeout, POLL_SLICE_S)
        waiter.epoll.poll(max(0.0, slice_s))

    def _waiter(self) -> _Waiter:
        try:
            waiter: _Waiter = self._scratch.waiter
        except AttributeError:
            waiter = self._scratch.waiter = _Waiter(self)
            self._waiters.append(waiter)
        return waiter

    def producers_gone(self) -> bool:
        """At least one producer existed and none remains (each closed or died)."""
        poller = select.poll()
        poller.register(self.alive, 0)
        return bool(poller.poll(0))

    def signal_shutdown(self) -> None:
        os.eventfd_write(self.stopped, 1)

    def signal_all_done(self) -> None:
        os.eventfd_write(self.done, 1)

    def take_all_done_signal(self) -> None:
        try:
            os.eventfd_read(self.done)
        except BlockingIOError:
            pass  # another joiner took it; the count is what it looks at

    def post_room(self) -> None:
        os.eventfd_write(self.room, 1)

    def take_room_signal(self) -> None:
        try:
            os.eventfd_read(self.room)
        except BlockingIOError:
            pass  # another waiting producer took it

    # --- lifetime -----------------------------------------------------------------------

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's producer end and row are not ours."""
        if self.writer is not None:
            os.close(self.writer)
            self.writer = None
        self.role = Role.NONE
        self.on_producing = None
        self.on_expected = None
        self.pid = os.getpid()
        self._scratch = threading.local()
        for waiter in self._waiters:
            waiter.epoll.close()  # a copy of the parent's epoll: its interest list is theirs
        self._waiters.clear()

    def close(self) -> None:
        """Let go of every descriptor (also done when the handles are garbage collected)."""
        self.closed = True
        self.role = Role.NONE
        self._finalizer()


class _Waiter:
    """One thread's epoll on a queue: the socket (exclusive), ``stopped``, and the
    producers' FIFO while it has not hung up (its hang-up would be reported forever)."""

    def __init__(self, handles: QueueHandles) -> None:
        self.epoll = select.epoll()
        self.epoll.register(handles.rx.fileno(), select.EPOLLIN | _EXCLUSIVE)
        self.epoll.register(handles.stopped, select.EPOLLIN)
        self._alive = handles.alive
        self._watching_producers = False

    def follow_producers(self, watch: bool) -> None:
        if watch and not self._watching_producers:
            self.epoll.register(self._alive, 0)  # EPOLLHUP is always reported
        elif not watch and self._watching_producers:
            self.epoll.unregister(self._alive)
        self._watching_producers = watch


_EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


def _release(
    tx: socket.socket,
    rx: socket.socket,
    fds: list[int],
    books: Books,
    ends: list[int | None],
    waiters: list[_Waiter],
) -> None:
    """Close one process's handles on a queue (once: ``weakref.finalize`` sees to it)."""
    for waiter in waiters:
        waiter.epoll.close()
    waiters.clear()
    close_fds([fd for fd in ends if fd is not None])
    ends[:] = [None, None]
    books.close()
    close_fds([*fds, books.fd])
    tx.close()
    rx.close()


def _rebuild(
    token: str,
    shared: list[Any],
    fifo_path: str,
    owner_pid: int,
    end: Any = None,
    tracks_producers: bool = True,
) -> QueueHandles:
    try:
        fds = take_descriptors(shared, "the queue")
        end_fd = None if end is None else take_descriptors([end], "the queue")[0]
    except (OSError, EOFError) as exc:
        raise QueueOwnerGoneError(
            f"cannot join the queue: the process that sent it (its creator is pid "
            f"{owner_pid}) is gone ({exc})"
        ) from exc
    known = _by_token.get(token)
    if known is not None and not known.closed and known.pid == os.getpid():
        close_fds(fds)  # this process has the queue already: one set of handles each
        handles = known
    else:
        handles = QueueHandles(token, fds, fifo_path, owner_pid, tracks_producers)
    if tracks_producers:
        handed_over(handles, end_fd)
    return handles


# Queues handed to the task a pool worker is running now (None: not inside a task).
_task_scope: list[QueueHandles] | None = None


def handed_over(handles: QueueHandles, end: int | None = None) -> None:
    """This process was given the queue (unpickled, or as a ``Process`` argument).

    It counts as a producer until its first ``get`` or ``close()``, or until it ends,
    so that a consumer who starts reading before a slow producer's first ``put`` does
    not see the end of the stream early. In a pool worker the same holds until the
    task that brought the queue returns.
    """
    handles.expect_production(end)
    if _task_scope is not None:
        _task_scope.append(handles)


def begin_task() -> None:
    """A pool worker starts a task (its arguments are about to be unpickled)."""
    global _task_scope
    _task_scope = []


def end_task() -> None:
    """The task is over: what it was handed, it no longer produces into."""
    global _task_scope
    scope, _task_scope = _task_scope, None
    for handles in scope or ():
        if not handles.closed:
            handles.stop_producing()


def _before_fork() -> None:
    _handover.before_fork([handles for handles in _live if handles.tracks_producers])


def _after_fork_in_child() -> None:
    for handles in list(_live):
        handles.forget_after_fork()
    _handover.after_fork_in_child()
    forget_private_dir()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_handover.after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


__all__ = ["POLL_SLICE_S", "SOCKET_BUFFER_BYTES", "QueueHandles"]
