"""Items a process has put that the queue's socket had no room for yet.

The kernel holds a few megabytes of messages per queue. Past that, ``put`` on a queue
with room left (an unbounded one, or a bounded one below its ``maxsize``) must still
return at once, as ``multiprocessing.Queue.put`` does: the item waits in this process's
backlog, in order, and a thread (``conveyor-queue-feeder``) sends it as the socket
drains. While a backlog exists, later puts join it, so one producer's items stay in
the order it put them. The backlog's size is in the books, so other processes count
these items in ``qsize()`` and do not declare end of stream while they wait.

At exit the backlog is flushed for up to ``EXIT_FLUSH_S`` (the stdlib waits forever,
and a queue nobody reads then blocks exit); what is still there is dropped, logged,
and counted (``statistics().stranded``). A process killed with a backlog strands it.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import select
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .._transport._fds import close_fds

if TYPE_CHECKING:
    from ._handles import QueueHandles
    from ._rows import Row

EXIT_FLUSH_S = 5.0
_log = logging.getLogger("conveyor")
_backlogs: weakref.WeakSet[Backlog] = weakref.WeakSet()


class Backlog:
    """One process's unsent items for one queue, and the thread that sends them."""

    def __init__(self, handles: QueueHandles, row: Row) -> None:
        self._handles = handles
        self._row = row
        self.items: deque[tuple[list[Any], list[int]]] = deque()
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.cancelled = False  # cancel_join_thread(): do not wait at exit
        _backlogs.add(self)

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, parts: list[Any], fds: list[int]) -> None:
        """Queue one message (its parts, as ``encode`` made them) behind the others."""
        _flush_at_exit_of_this_process()
        with self._lock:
            self.items.append((parts, fds))
            self._row.spilled(+1)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._feed, name="conveyor-queue-feeder", daemon=True
                )
                self._thread.start()

    def pump(self) -> None:
        """Send what the socket takes now, oldest first (the producer's own thread).

        A producer that keeps putting keeps the socket full this way; waiting for the
        feeder thread instead would wait for the interpreter to switch threads, and the
        consumers would starve meanwhile.
        """
        with self._lock:
            self._send_what_fits()

    def _send_what_fits(self) -> None:
        items, handles = self.items, self._handles
        while items:
            parts, fds = items[0]
            if not handles.try_send(parts, fds):
                return
            items.popleft()
            self._row.sent_from_backlog()
        self._sent.notify_all()

    def _feed(self) -> None:
        handles = self._handles
        poller = select.poll()
        poller.register(handles.tx, select.POLLOUT)
        while True:
            with self._lock:
                if not handles.closed:
                    self._send_what_fits()
                if not self.items or handles.closed:
                    self._thread = None
                    self._sent.notify_all()
                    return
            poller.poll(1000)

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything is sent; True if it was, within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._sent.wait(min(left, 0.5) if left is not None else 0.5)
        return True

    def drop(self) -> int:
        """Give up on what is left (the process is exiting); return how many items."""
        with self._lock:
            items = list(self.items)
            self.items.clear()  # in place: the queue's side holds this deque too
        for _, fds in items:
            close_fds(fds)
        return len(items)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's items are the parent's to send."""
        for _, fds in self.items:
            close_fds(fds)  # the child's copies of the parent's descriptors
        self.items.clear()
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)
        self._thread = None


def _flush_at_exit() -> None:
    for backlog in list(_backlogs):
        if not backlog or backlog.cancelled:
            continue
        if backlog.flush(EXIT_FLUSH_S):
            continue
        dropped = backlog.drop()
        _log.warning(
            "conveyor: %d items put into a queue were still unsent after %.0f s at exit "
            "(nobody was reading it); they are dropped and counted as stranded",
            dropped,
            EXIT_FLUSH_S,
        )


_registered_pid = 0


def _flush_at_exit_of_this_process() -> None:
    """Run ``_flush_at_exit`` when this process ends, however it ends normally.

    ``atexit`` covers the main process; a ``multiprocessing`` child leaves through
    ``os._exit`` after running its finalizers instead, and its registry starts empty.
    """
    global _registered_pid
    if _registered_pid != os.getpid():
        _registered_pid = os.getpid()
        multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=100)


def _after_fork_in_child() -> None:
    for backlog in list(_backlogs):
        backlog.forget_after_fork()


atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["EXIT_FLUSH_S", "Backlog"]
