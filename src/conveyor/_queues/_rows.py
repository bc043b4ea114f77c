"""This process's row in a queue's books: the counters only it writes.

Threads of one process share the row, so each update takes a thread lock; processes
never do (``_books.py``). The busy bit of ``puts`` and ``gets`` is set before the
operation and cleared, with the count moved, in the same store after it.
"""

from __future__ import annotations

import threading

from ._books import R_BLOCKED_NS, R_DONE, R_GETS, R_PUTS, R_SPILLED, Books, row_base


class Row:
    def __init__(self, books: Books) -> None:
        self._words = books.words
        self._base = row_base(books.claim_row())
        self._lock = threading.Lock()

    def _add(self, word: int, delta: int) -> None:
        index = self._base + word
        with self._lock:
            self._words[index] += delta

    def begin_put(self) -> None:
        self._add(R_PUTS, 1)  # busy bit on

    def end_put(self, sent: bool) -> None:
        self._add(R_PUTS, 1 if sent else -1)  # count + 1 and busy off, or busy off

    def spilled(self, delta: int) -> None:
        self._add(R_SPILLED, delta)

    def sent_from_backlog(self) -> None:
        index = self._base
        with self._lock:
            self._words[index + R_PUTS] += 2
            self._words[index + R_SPILLED] -= 1

    def begin_get(self) -> None:
        self._add(R_GETS, 1)

    def end_get(self, got: bool) -> None:
        self._add(R_GETS, 1 if got else -1)

    def task_done(self) -> None:
        self._add(R_DONE, 1)

    def blocked(self, seconds: float) -> None:
        self._add(R_BLOCKED_NS, int(seconds * 1e9))


__all__ = ["Row"]
