"""What one process keeps for a queue, and the fast paths it allows."""

from __future__ import annotations

import socket

from .._transport._fds import ANCILLARY_BYTES, received_fds
from ._backlog import Backlog
from ._handles import QueueHandles, Role
from ._pid import current_pid
from ._rows import Row
from ._wire import MESSAGE_MAX_BYTES

_DONTWAIT = int(socket.MSG_DONTWAIT)


class _Side:
    """What one process keeps for a queue: its row in the books and its backlog.

    ``fast_put`` / ``fast_get``: nothing is left to settle before the next put or get
    but the message itself (this process is a producer, or a counted consumer; no error
    waits; the queue is unbounded, for puts), so they skip the checks of a first call.
    Every change of role clears them.

    A process receives under its row's lock (the busy bit covers the receive), so its
    threads share one receive buffer, and ``take_now`` needs no per-thread lookup.
    """

    def __init__(self, handles: QueueHandles) -> None:
        self.pid = current_pid()
        self.row = Row(handles.books)
        self.backlog = Backlog(handles, self.row)
        self.closed = False
        self.consuming = False
        self.fast_put = False
        self.fast_get = False
        # What the fast paths touch, one attribute away.
        self.words = handles.books.words
        self.lock = self.row.lock
        self.puts, self.gets = self.row.puts_index, self.row.gets_index
        self.backlogged = self.backlog.items  # non-empty: a put must queue behind it
        self.send = handles.tx.send
        self._receive_into = handles.rx.recvmsg_into
        self._scratch = memoryview(bytearray(MESSAGE_MAX_BYTES))
        self._into = [self._scratch]
        self.pending_error: Exception | None = None  # an item get_many could not unpickle
        handles.on_producing = self._producing
        handles.on_expected = self._settle_again
        if handles.role is Role.PRODUCER:
            self.row.producers(1)

    def take_now(self) -> tuple[int, bytes, list[int]] | None:
        """One message if there is one now (its kind byte, the rest, its descriptors),
        counted in this process's row: the busy bit is set around the receive and
        cleared, with the count moved, in one store after it (``_books.py``)."""
        words, gets = self.words, self.gets
        with self.lock:
            words[gets] += 1
            try:
                n, ancdata, flags, _ = self._receive_into(self._into, ANCILLARY_BYTES, _DONTWAIT)
            except BlockingIOError:
                words[gets] -= 1
                return None
            except BaseException:
                words[gets] -= 1  # no message was taken (the queue was closed under us)
                raise
            words[gets] += 1
            scratch = self._scratch
            kind, payload = scratch[0], bytes(scratch[1:n])
        if not ancdata and not flags:
            return kind, payload, []  # the common item: no descriptors, nothing cut short
        return kind, payload, received_fds(ancdata, flags, "a queue message")

    def _producing(self, now: bool) -> None:
        self.fast_put = self.fast_get = False
        self.row.producers(1 if now else -1)

    def _settle_again(self) -> None:
        """Handed the queue again: the next get must show this process is a consumer."""
        self.fast_put = self.fast_get = False


__all__ = ["_Side"]
