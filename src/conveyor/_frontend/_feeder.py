"""Lazy input: read an iterable on a feeder thread, never far ahead of the consumer.

The feeder counts items it has read but the consumer has not yet taken ("outstanding").
When that reaches the window (a few chunks per worker) it waits, so a 10-million-item
generator costs O(workers x chunk) memory whether the consumer is fast, stalls, or stops;
when the consumer stops for good the feeder stops reading too.

Each feeder thread (``conveyor-feeder-<job>``) is owned by one ``imap``-like call. It ends
when the input ends, when the consumer goes away (``stop``), or when the pool stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from .._engine._engine import Engine
from .._engine._jobs import Job

# The window: how many chunks per worker may be read ahead of the consumer.
WINDOW_CHUNKS_PER_WORKER = 4
MIN_WINDOW_ITEMS = 16


class Feeder:
    """Pushes items from ``iterator`` into ``job`` as the consumer makes room."""

    def __init__(
        self,
        engine: Engine,
        job: Job,
        iterator: Iterator[Any],
        *,
        align: int | None = None,
        on_first: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self._engine = engine
        # Shown the first batch read, before it is pushed (the pool holds the queues in it).
        self._on_first = on_first
        # With ``align`` (a fixed chunk size) items are read in whole chunks, and an input
        # error replaces the chunk it interrupted: multiprocessing's semantics.
        self._align = align
        self._job = job
        self._iterator = iterator
        self._cond = threading.Condition()
        self._outstanding = 0
        self._unbounded = False
        self._stopped = False
        self.items_read = 0
        self._thread = threading.Thread(
            target=self._run, name=f"conveyor-feeder-{job.id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def release(self, count: int = 1) -> None:
        """The consumer took ``count`` results: make room for as many new items."""
        with self._cond:
            self._outstanding -= count
            self._cond.notify()

    def unbound(self) -> None:
        """Read the rest without waiting for the consumer (``join`` must finish everything)."""
        with self._cond:
            self._unbounded = True
            self._cond.notify()

    def stop(self) -> None:
        """The consumer is gone: read nothing more."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it did (it may be inside the input)."""
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _window(self) -> int:
        per_chunk = self._job.sizer.size(None)
        return max(MIN_WINDOW_ITEMS, WINDOW_CHUNKS_PER_WORKER * self._engine.size * per_chunk)

    def _wait_for_room(self) -> int:
        """Block until items may be read; return how many (0: stop reading)."""
        with self._cond:
            while True:
                if self._stopped or self._job.cancelled:
                    return 0
                if self._unbounded:
                    return self._aligned(max(MIN_WINDOW_ITEMS, self._job.sizer.size(None)))
                room = self._window() - self._outstanding
                if room > 0:
                    return self._aligned(room)
                # Time-boxed wait: a missed notify can cost a little latency, never a hang.
                self._cond.wait(0.5)

    def _aligned(self, room: int) -> int:
        if not self._align:
            return room
        return max(self._align, room - room % self._align)

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                room = self._wait_for_room()
                if room == 0:
                    break
                batch: list[Any] = []
                try:
                    # extend() keeps the items read before an exception.
                    batch.extend(islice(self._iterator, room))
                except Exception as exc:
                    error = exc
                    if self._align:  # the interrupted chunk is lost, as in the stdlib
                        del batch[len(batch) - len(batch) % self._align :]
                if batch:
                    if self._on_first is not None:
                        self._on_first(batch)
                        self._on_first = None
                    with self._cond:
                        self._outstanding += len(batch)
                    self.items_read += len(batch)
                    self._engine.push(self._job, batch)
                if error is not None or len(batch) < room:
                    break
        finally:
            self._engine.end_input(self._job, self.items_read, error)
