"""``conveyor.Pipe``: two connected ends, each of which ends with the process holding it.

The stdlib's pipe reports end of file only once every copy of the other end is closed,
so a parent that forgets to close the child's copy waits forever after the child died.
Here each end belongs to one process, the last to send or receive on it or to be handed
it (``_owners.py``); when that process dies or closes its end, the other side's
``recv()`` raises ``EOFError`` once what was sent is read, and its ``send()`` raises
``BrokenPipeError``, whatever copies exist elsewhere.

The ends are a ``SOCK_SEQPACKET`` socket pair: the kernel delivers each message whole, so
threads can share an end, and messages use the queues' format (``_wire.py``): pickles
with NumPy buffers in memfds, bytes as they are, anything large in a memfd of its own.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import weakref
from multiprocessing import BufferTooShort, reduction
from multiprocessing.context import get_spawning_popen
from multiprocessing.util import register_after_fork
from typing import Any

from .._compat import process_arguments, process_being_forked
from .._transport._fds import ANCILLARY_BYTES, close_fds, received_fds, rights
from . import _handover
from ._crossing import take_descriptors
from ._owners import HolderWatch, Owners
from ._wire import (
    MESSAGE_MAX_BYTES,
    decode_any,
    discard,
    encode,
    encode_bytes,
    message_bytes,
    release_bytes,
)

# What the kernel holds in flight per direction (capped by net.core.wmem_max).
SOCKET_BUFFER_BYTES = 4 << 20
# A wait re-reads who holds the other end at least this often: a handover that happens
# while it waits changes the process to watch, and nothing else would wake it.
WATCH_SLICE_S = 0.1
# A send asks whether the other end is gone at most this often (a message sent in the
# moment after it went is lost with it, as it would be had it gone a moment later).
SEND_CHECK_S = 0.01

_DONTWAIT = int(socket.MSG_DONTWAIT)
_SEND_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
_live: weakref.WeakSet[Connection] = weakref.WeakSet()


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Two connected ends, as ``multiprocessing.Pipe``: ``(reader, writer)`` if not duplex.

    Example::

        parent, child = conveyor.Pipe()
        p = multiprocessing.Process(target=work, args=(child,))
        p.start()
        try:
            while True:
                print(parent.recv())
        except EOFError:  # the child closed its end, or died: no need to close ours
            pass
    """
    first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (first, second):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
    owners = Owners.create()
    if duplex:
        return (
            Connection(first.detach(), owners, 0, readable=True, writable=True),
            Connection(second.detach(), owners.duplicate(), 1, readable=True, writable=True),
        )
    return (
        Connection(first.detach(), owners, 0, readable=True, writable=False),
        Connection(second.detach(), owners.duplicate(), 1, readable=False, writable=True),
    )


class Connection:
    """One end of a :func:`Pipe`, with the methods of ``multiprocessing``'s connections.

    Example::

        a, b = conveyor.Pipe()
        a.send({"x": 1})
        assert b.recv() == {"x": 1}
    """

    def __init__(
        self, fd: int, owners: Owners, side: int, *, readable: bool, writable: bool
    ) -> None:
        self._sock: socket.socket | None = socket.socket(fileno=fd)
        self._fd = fd
        self._owners = owners
        self._side = side
        self._peer = 1 - side
        self._readable = readable
        self._writable = writable
        self._watch = HolderWatch()
        self._checked_at = -SEND_CHECK_S
        self._scratch = threading.local()
        _live.add(self)
        register_after_fork(self, _adopt_if_handed)

    # --- the stdlib's surface -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._sock is None

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    def fileno(self) -> int:
        self._open_socket()
        return self._fd

    def close(self) -> None:
        """Close this end; if this process holds it, the other side sees the end."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            self._owners.release(self._side)
        finally:
            self._watch.close()
            self._owners.close()
            sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None:
            try:
                self.close()
            except Exception:
                pass  # at interpreter exit

    # --- sending ------------------------------------------------------------------------

    def send(self, obj: Any) -> None:
        """Send a picklable object (a pickling error is raised here, nothing sent)."""
        self._writing()
        parts, fds = encode(obj)
        self._send(parts, fds)

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send the bytes of a buffer (``buf[offset:offset + size]``) as one message."""
        self._writing()
        view = memoryview(buf)
        if view.itemsize > 1 or view.ndim != 1:
            view = view.cast("B")
        n = view.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        parts, fds = encode_bytes(view[offset : offset + size])
        self._send(parts, fds)

    def _send(self, parts: list[Any], fds: list[int]) -> None:
        sock = self._open_socket()
        try:
            self._owners.claim(self._side)
            if self._peer_gone_lately():
                raise BrokenPipeError(self._gone_message("send to"))
            ancillary = rights(fds)
            while True:
                try:
                    sock.sendmsg(parts, ancillary, _SEND_FLAGS)
                    break
                except BlockingIOError:
                    if self._peer_gone():
                        raise BrokenPipeError(self._gone_message("send to")) from None
                    self._wait(select.POLLOUT, None)
        except BaseException:
            discard(fds)
            raise
        close_fds(fds)

    def _peer_gone_lately(self) -> bool:
        """``_peer_gone``, asked of the kernel at most once per ``SEND_CHECK_S``: a send
        that finds room need not pay a system call to learn what rarely changes."""
        now = time.monotonic()
        if now - self._checked_at < SEND_CHECK_S:
            return False
        self._checked_at = now
        return self._peer_gone()

    # --- receiving ----------------------------------------------------------------------

    def recv(self) -> Any:
        """The next object sent; ``EOFError`` once the other end is gone and drained."""
        message, fds = self._receive()
        return decode_any(message, fds)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """The next message's bytes (an object's pickle, for one sent with ``send``)."""
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        message, fds = self._receive()
        data = message_bytes(message, fds)
        try:
            if maxlength is not None and len(data) > maxlength:
                self.close()  # as the stdlib does: the rest of the stream is not ours
                raise OSError("bad message length")
            return bytes(data)
        finally:
            release_bytes(data)

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Read the next message into ``buf`` at byte ``offset``; returns its length.
        ``multiprocessing.BufferTooShort`` (holding the message) if it does not fit."""
        with memoryview(buf) as target:
            flat = target.cast("B") if target.itemsize > 1 or target.ndim != 1 else target
            if offset < 0:
                raise ValueError("negative offset")
            if offset > flat.nbytes:
                raise ValueError("offset too large")
            message, fds = self._receive()
            data = message_bytes(message, fds)
            try:
                size = len(data)
                if size > flat.nbytes - offset:
                    raise BufferTooShort(bytes(data))
                flat[offset : offset + size] = data
                return size
            finally:
                release_bytes(data)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether ``recv`` would return now (a message, or the end), waiting up to
        ``timeout`` seconds (None: until one of them)."""
        self._reading()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._readable_now() or self._peer_gone():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._wait(select.POLLIN, remaining)

    def _receive(self) -> tuple[bytes, list[int]]:
        self._reading()
        self._owners.claim(self._side)
        while True:
            got = self._try_receive()
            if got is not None:
                return got
            if self._peer_gone():
                got = self._try_receive()  # what it sent before it went comes first
                if got is not None:
                    return got
                raise EOFError(self._gone_message("receive from"))
            self._wait(select.POLLIN, None)

    def _try_receive(self) -> tuple[bytes, list[int]] | None:
        sock = self._open_socket()
        scratch = getattr(self._scratch, "view", None)
        if scratch is None:
            scratch = self._scratch.view = memoryview(bytearray(MESSAGE_MAX_BYTES))
        try:
            n, ancdata, flags, _ = sock.recvmsg_into([scratch], ANCILLARY_BYTES, _DONTWAIT)
        except BlockingIOError:
            return None
        fds = received_fds(ancdata, flags, "a message on this pipe")
        if n == 0 and not fds:
            raise EOFError("every copy of the other end is closed")
        return bytes(scratch[:n]), fds

    def _readable_now(self) -> bool:
        poller = select.poll()
        poller.register(self._open_socket(), select.POLLIN)
        return bool(poller.poll(0))

    # --- the other end ------------------------------------------------------------------

    def _peer_gone(self) -> bool:
        """Whether the process holding the other end closed it or died."""
        self._watch.follow(self._owners.word(self._peer))
        return self._watch.gone()

    def _wait(self, events: int, timeout: float | None) -> None:
        """Block until the socket has ``events``, the holder of the other end goes, or a
        slice passes (the caller looks again)."""
        poller = select.poll()
        poller.register(self._open_socket(), events)
        if self._watch.fd is not None:
            poller.register(self._watch.fd, select.POLLIN)
        slice_s = WATCH_SLICE_S if timeout is None else min(timeout, WATCH_SLICE_S)
        poller.poll(max(0.0, slice_s) * 1000)

    def _gone_message(self, verb: str) -> str:
        how = "closed it" if self._watch.closed else "exited"
        return (
            f"cannot {verb} the other end of the pipe: the process that held it "
            f"(pid {self._watch.pid}) {how}"
        )

    # --- checks -------------------------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        if self._sock is None:
            raise OSError("handle is closed")
        return self._sock

    def _reading(self) -> None:
        self._open_socket()
        if not self._readable:
            raise OSError("connection is write-only")

    def _writing(self) -> None:
        self._open_socket()
        if not self._writable:
            raise OSError("connection is read-only")

    # --- crossing to another process ----------------------------------------------------

    def __reduce__(self) -> Any:
        """Pickled to be handed over: the receiver holds the end from when it unpickles
        it, or, for a ``Process`` being started, from when the child exists."""
        sock = self._open_socket()
        handing = self._owners.hand(self._side)
        popen = get_spawning_popen()
        if popen is not None:
            _handover.when_started(popen, _ToChild(self._owners.duplicate(), self._side, handing))
        return _rebuild, (
            reduction.DupFd(sock.fileno()),
            reduction.DupFd(self._owners.fd),
            self._side,
            self._readable,
            self._writable,
        )

    def _adopt(self) -> None:
        self._owners.claim(self._side)

    def _forget_after_fork(self) -> None:
        self._watch = HolderWatch()  # the parent's pidfd stays the parent's to close
        self._scratch = threading.local()


class _ToChild:
    """Once a child being started has a pid, it holds the end handed to it."""

    def __init__(self, owners: Owners, side: int, handing: int) -> None:
        self._owners = owners
        self._side = side
        self._handing = handing

    def started(self, pid: int | None) -> None:
        try:
            if pid is not None:
                self._owners.settle(self._side, self._handing, pid)
        finally:
            self._owners.close()

    def forget(self) -> None:
        self._owners.close()


def _rebuild(sock: Any, page: Any, side: int, readable: bool, writable: bool) -> Connection:
    try:
        fd, page_fd = take_descriptors([sock, page], "a pipe end")
    except (OSError, EOFError) as exc:
        raise OSError(f"cannot take a pipe end: the process that sent it is gone ({exc})") from exc
    connection = Connection(fd, Owners(page_fd), side, readable=readable, writable=writable)
    connection._adopt()  # handed to this process: it holds the end now
    return connection


def _adopt_if_handed(connection: Connection) -> None:
    """In a child ``multiprocessing`` forked: hold the ends among its arguments."""
    if not connection.closed and any(arg is connection for arg in process_arguments()):
        connection._adopt()


# Ends handed to the child being forked now: (its Popen, what to do once it has a pid).
_forking: list[tuple[Any, _ToChild]] = []


def _before_fork() -> None:
    """A ``Process`` being forked is handed the ends among its arguments."""
    forking = process_being_forked()
    if forking is None:
        return
    popen, process = forking
    handed = {id(arg) for arg in process_arguments(process)}
    for connection in list(_live):
        if id(connection) in handed and not connection.closed:
            owners = connection._owners
            handing = owners.hand(connection._side)
            _forking.append((popen, _ToChild(owners.duplicate(), connection._side, handing)))


def _after_fork_in_parent() -> None:
    # The watch starts now, not before the fork: a thread started then could hold a
    # lock the child would inherit held.
    for popen, to_child in _forking:
        _handover.when_started(popen, to_child)
    _forking.clear()


def _after_fork_in_child() -> None:
    for _, to_child in _forking:
        to_child.forget()
    _forking.clear()
    for connection in list(_live):
        connection._forget_after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)

__all__ = ["Connection", "Pipe"]
