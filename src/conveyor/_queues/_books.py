"""A queue's books: counters every participant can read, in one shared memory page.

Every process that uses a queue gets a row of its own and is the only writer of it, so
no counter needs a lock or an atomic add: a row's words are plain 8-byte stores, and a
process killed between two stores leaves each word whole. Totals are sums over rows.
Two facts share a word where a death must not split them: ``gets`` holds
``count * 2 + busy``, the busy bit set while the process is taking a message (``puts``
holds ``count * 2``). A dead process whose busy bit is set was killed inside a ``get``,
which may have cost one item (``statistics().interrupted``): the only loss the kernel
cannot rule out.

Rows are handed out under ``flock`` (released by the kernel when its holder dies); a
row whose process is gone is reused, its counts folded into the header first.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager

from ._lock import SharedLock
from ._pid import alive as _alive
from ._pid import current_pid

MAGIC = 0x636F6E7665796F72  # "conveyor"
PAGE_BYTES = 4096
ROW_WORDS = 8  # 64 bytes: a cache line, so two processes' rows never share one
MAX_ROWS = 1024
TOTAL_BYTES = PAGE_BYTES + MAX_ROWS * ROW_WORDS * 8

# Header words.
H_MAGIC, H_MAXSIZE, H_ROWS, H_SHUTDOWN = 0, 1, 2, 3
H_RETIRED_PUTS, H_RETIRED_GETS, H_RETIRED_DONE = 4, 5, 6
H_INTERRUPTED, H_DISCARDED, H_STRANDED, H_ROOM_WAITERS, H_JOIN_WAITERS = 7, 8, 9, 10, 11
H_ABANDONED = 12
_HEADER_WORDS = PAGE_BYTES // 8  # where the rows start, in words

# Row words.
R_PID, R_PUTS, R_GETS, R_DONE, R_SPILLED, R_BLOCKED_NS = 0, 1, 2, 3, 4, 5
# How many producers and consumers the process is: 0 or 1 for a queue (it has put and
# not closed; it has taken), its open handles for a channel. A dead row counts none.
R_PRODUCERS, R_CONSUMERS = 6, 7

SHUTDOWN = 1
SHUTDOWN_IMMEDIATE = 2


class Books:
    """The shared page of one queue, mapped into this process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, TOTAL_BYTES)
        self.words = memoryview(self._map).cast("q")
        self._lock = SharedLock(fd)

    @classmethod
    def create(cls, maxsize: int) -> Books:
        fd = os.memfd_create("conveyor-queue-books", os.MFD_CLOEXEC)
        os.ftruncate(fd, TOTAL_BYTES)
        books = cls(fd)
        books.words[H_MAGIC] = MAGIC
        books.words[H_MAXSIZE] = maxsize
        return books

    @property
    def maxsize(self) -> int:
        return self.words[H_MAXSIZE]

    # --- rows ----------------------------------------------------------------------------

    def claim_row(self) -> int:
        """A row for this process: a free one, or one whose process is gone."""
        pid = current_pid()
        words = self.words
        with self.locked():
            used = words[H_ROWS]
            for row in range(used):
                if not _alive(words[row_base(row) + R_PID]):
                    self._retire(row)
                    words[row_base(row) + R_PID] = pid
                    return row
            if used == MAX_ROWS:
                raise OSError(
                    f"conveyor: more than {MAX_ROWS} live processes use this queue at once"
                )
            words[row_base(used) + R_PID] = pid
            words[H_ROWS] = used + 1
            return used

    def _retire(self, row: int) -> None:
        """Fold a dead process's row into the header (under the lock), then clear it."""
        words = self.words
        base = row_base(row)
        puts, gets = words[base + R_PUTS], words[base + R_GETS]
        words[H_INTERRUPTED] += gets & 1
        words[H_STRANDED] += words[base + R_SPILLED]
        words[H_RETIRED_PUTS] += puts >> 1
        words[H_RETIRED_GETS] += (gets + 1) >> 1
        done = words[base + R_DONE]
        abandoned = max(0, ((gets + 1) >> 1) - done)  # taken, never marked done: never will be
        words[H_ABANDONED] += abandoned
        words[H_RETIRED_DONE] += done + abandoned
        for offset in range(ROW_WORDS):
            words[base + offset] = 0

    # --- totals --------------------------------------------------------------------------

    def total(self, word: int) -> int:
        """The sum of one row word over every row (counts only: busy bits dropped)."""
        rows = self.words[_HEADER_WORDS + word :: ROW_WORDS][: self.words[H_ROWS]]
        if word == R_PUTS:
            return sum(value >> 1 for value in rows)  # a put in progress: not in yet
        if word == R_GETS:
            # A get in progress counts as taken: a consumer killed between receiving and
            # counting must not leave the queue looking fuller than it is, which could
            # keep a bounded queue's producers waiting forever.
            return sum((value + 1) >> 1 for value in rows)
        return sum(rows)

    def depth(self) -> int:
        """Items in the queue: put (and sent) minus taken, over every process ever."""
        words = self.words
        puts = self.total(R_PUTS) + words[H_RETIRED_PUTS]
        gets = self.total(R_GETS) + words[H_RETIRED_GETS]
        return max(0, puts - gets)

    def unfinished(self) -> int:
        """Items put and not yet marked done (``JoinableQueue``).

        An item a process took and had not marked done when it died never will be: it
        counts as done (and as ``abandoned``), or ``join()`` would wait forever, as the
        stdlib's does. Items stranded in a dead process's backlog never came in.
        """
        words = self.words
        puts = self.total(R_PUTS) + words[H_RETIRED_PUTS] + self.waiting_to_send()
        done = self.total(R_DONE) + words[H_RETIRED_DONE] + self._abandoned_by_the_dead()
        return puts - done

    def abandoned(self) -> int:
        return self.words[H_ABANDONED] + self._abandoned_by_the_dead()

    def _abandoned_by_the_dead(self) -> int:
        words = self.words
        count = 0
        for base in self._dead_rows():
            taken = (words[base + R_GETS] + 1) >> 1
            count += max(0, taken - words[base + R_DONE])
        return count

    def interrupted(self) -> int:
        """Gets a death cut short: those of dead rows still here, and of rows retired."""
        words = self.words
        return words[H_INTERRUPTED] + sum(words[base + R_GETS] & 1 for base in self._dead_rows())

    def waiting_to_send(self) -> int:
        """Items live processes have put that still wait in their backlogs."""
        words = self.words
        count = 0
        for row in range(words[H_ROWS]):
            base = row_base(row)
            spilled = words[base + R_SPILLED]
            if spilled and _alive(words[base + R_PID]):
                count += spilled
        return count

    def stranded(self) -> int:
        """Items put by processes that died before their local backlog was sent."""
        words = self.words
        return words[H_STRANDED] + sum(words[base + R_SPILLED] for base in self._dead_rows())

    def live_total(self, word: int) -> int:
        """The sum of one row word over the rows of live processes."""
        words = self.words
        count = 0
        for row in range(words[H_ROWS]):
            base = row_base(row)
            value = words[base + word]
            if value and _alive(words[base + R_PID]):
                count += value
        return count

    def _dead_rows(self) -> Iterator[int]:
        """The first word of each row whose process is gone (not yet retired)."""
        words = self.words
        for row in range(words[H_ROWS]):
            base = row_base(row)
            pid = words[base + R_PID]
            if pid and not _alive(pid):
                yield base

    # --- the lock ------------------------------------------------------------------------

    def locked(self) -> AbstractContextManager[None]:
        """Exclusive across processes; the kernel releases it if the holder dies."""
        return self._lock.held()

    def close(self) -> None:
        self.words.release()
        self._map.close()
        self._lock.close()


def row_base(row: int) -> int:
    """The index of a row's first word."""
    return _HEADER_WORDS + row * ROW_WORDS


__all__ = ["Books", "row_base"]
