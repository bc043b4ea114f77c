"""Who holds each end of a pipe: one word per end, in a page both ends share.

An end belongs to the process that last sent or received on it, or was handed it
(unpickled it, or got it as a ``Process`` argument). The other end waits on that
process, not on every copy of the descriptor: when the holder dies (a ``pidfd`` reports
it, so no timeout guesses) or closes its end, the other side's ``recv()`` raises
``EOFError`` once the messages already sent are read, however many forgotten copies of
the end live elsewhere. Copies count again only when used: the first ``send`` or
``recv`` on one makes its process the holder.

A word is ``pid | state << 22 | start << 24`` (Linux pids are below 2**22), written with
one 8-byte store, so a reader never sees half of one. ``start`` is when the process
started, in clock ticks since boot: a pid alone could name a later process once the
holder is gone and its pid reused. Changes are rare (a handover, a close) and made under
the page's lock, so that a handover finishing in one process never undoes a close in
another.
"""

from __future__ import annotations

import mmap
import os
import select

from ._lock import SharedLock
from ._pid import alive, current_pid, start_ticks

PAGE_BYTES = 4096
PID_BITS = 22
PID_MASK = (1 << PID_BITS) - 1
STATE_MASK = 0b11
START_MASK = (1 << 40) - 1

HELD = 0  # the process named uses the end
CLOSED = 1  # the process named closed it (or dropped it): the end is gone
HANDED = 2  # the process named is handing it over; it answers for it until taken


def pack(pid: int, state: int, start: int) -> int:
    return pid | state << PID_BITS | (start & START_MASK) << (PID_BITS + 2)


def unpack(word: int) -> tuple[int, int, int]:
    """(pid, state, start ticks) of a word."""
    return word & PID_MASK, word >> PID_BITS & STATE_MASK, word >> (PID_BITS + 2)


class _Me:
    """This process's words, computed once per process (forks included)."""

    pid = 0
    words: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def word(cls, state: int) -> int:
        pid = current_pid()
        if cls.pid != pid:
            start = start_ticks(pid) or 0
            cls.words = tuple(pack(pid, s, start) for s in (HELD, CLOSED, HANDED))  # type: ignore[assignment]
            cls.pid = pid
        return cls.words[state]


class Owners:
    """The shared page of one pipe, mapped into this process (one per ``Connection``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, PAGE_BYTES)
        self._words = memoryview(self._map).cast("Q")
        self._lock = SharedLock(fd)

    @classmethod
    def create(cls) -> Owners:
        fd = os.memfd_create("conveyor-pipe", os.MFD_CLOEXEC)
        os.ftruncate(fd, PAGE_BYTES)
        owners = cls(fd)
        owners._words[0] = owners._words[1] = _Me.word(HELD)
        return owners

    def duplicate(self) -> Owners:
        """The same page through a descriptor of its own (for the other end, or a
        handover that may outlive this end)."""
        return Owners(os.dup(self.fd))

    def word(self, side: int) -> int:
        return self._words[side]

    def claim(self, side: int) -> None:
        """This process uses the end: it holds it from now on."""
        mine = _Me.word(HELD)
        if self._words[side] != mine:
            with self._lock.held():
                self._words[side] = mine

    def hand(self, side: int) -> int:
        """The end is being handed over by this process; returns the word that says so."""
        handing = _Me.word(HANDED)
        with self._lock.held():
            self._words[side] = handing
        return handing

    def settle(self, side: int, handing: int, pid: int) -> None:
        """A handover went to process ``pid``: it holds the end, unless someone has used
        or closed it since (the child itself, most often, with the same result)."""
        with self._lock.held():
            if self._words[side] == handing:
                self._words[side] = pack(pid, HELD, start_ticks(pid) or 0)

    def release(self, side: int) -> None:
        """This process closes its end: if it held it, the end is gone."""
        if self._words[side] == _Me.word(HELD):
            with self._lock.held():
                if self._words[side] == _Me.word(HELD):
                    self._words[side] = _Me.word(CLOSED)

    def close(self) -> None:
        self._words.release()
        self._map.close()
        self._lock.close()
        os.close(self.fd)


class HolderWatch:
    """Whether the holder of an end is gone, and a descriptor to wait on until it is.

    ``follow(word)`` is called with the end's word before each wait; a new holder opens a
    new ``pidfd`` (readable once the process has exited, zombie or not), checked against
    the start time so that a reused pid does not pass for the holder.
    """

    def __init__(self) -> None:
        self._word: int | None = None
        self._pid = 0
        self.fd: int | None = None
        self._gone = False
        self.closed = False  # gone because its holder closed it (not because it died)

    def follow(self, word: int) -> None:
        if word == self._word:
            return
        self._forget_fd()
        self._word = word
        pid, state, start = unpack(word)
        self._pid = pid
        self.closed = self._gone = state == CLOSED
        if self._gone or pid == current_pid():
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone = True
            return
        except (AttributeError, OSError):  # no pidfds here: gone() asks /proc instead
            fd = None
        if start_ticks(pid) != start:
            self._gone = True  # the holder is gone and its pid is someone else's now
        if fd is not None and not self._gone:
            self.fd = fd
        elif fd is not None:
            os.close(fd)

    def gone(self) -> bool:
        if self._gone or self._word is None:
            return self._gone
        if self.fd is not None:
            ready = select.poll()
            ready.register(self.fd, select.POLLIN)
            self._gone = bool(ready.poll(0))
        elif self._pid != current_pid():
            self._gone = not alive(self._pid)
        return self._gone

    @property
    def pid(self) -> int:
        return self._pid

    def _forget_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self._forget_fd()
        self._word = None


__all__ = ["CLOSED", "HANDED", "HELD", "HolderWatch", "Owners", "pack", "unpack"]
