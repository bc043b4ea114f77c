"""This process's row in a queue's books: the counters only it writes.

Threads of one process share the row, so each update takes a thread lock; processes
never do (``_books.py``). The busy bit of ``gets`` is set before a receive and cleared,
with the count moved, in the same store after it (``_Side.take_now``); ``puts`` counts
after each send.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from ._books import (
    R_BLOCKED_NS,
    R_CONSUMERS,
    R_DONE,
    R_GETS,
    R_PRODUCERS,
    R_PUTS,
    R_SPILLED,
    Books,
    row_base,
)

T = TypeVar("T")


class Row:
    def __init__(self, books: Books) -> None:
        self._words = books.words
        self._base = row_base(books.claim_row())
        self.lock = threading.Lock()
        # The words every put and get touch, as indexes (the hot path does no arithmetic).
        self.puts_index = self._base + R_PUTS
        self.gets_index = self._base + R_GETS

    def _add(self, word: int, delta: int) -> None:
        index = self._base + word
        with self.lock:
            self._words[index] += delta

    def put_sent(self) -> None:
        # Counted after the send: a process killed between the two leaves an item in
        # the queue that the books do not show yet, never one they show and it lacks.
        with self.lock:
            self._words[self.puts_index] += 2

    def spilled(self, delta: int) -> None:
        self._add(R_SPILLED, delta)

    def sent_from_backlog(self) -> None:
        index = self._base
        with self.lock:
            self._words[index + R_PUTS] += 2
            self._words[index + R_SPILLED] -= 1

    def task_done(self) -> None:
        self._add(R_DONE, 1)

    def blocked(self, seconds: float) -> None:
        self._add(R_BLOCKED_NS, int(seconds * 1e9))

    def producers(self, delta: int) -> None:
        self._add(R_PRODUCERS, delta)

    def consumers(self, delta: int) -> None:
        self._add(R_CONSUMERS, delta)


__all__ = ["Row"]
