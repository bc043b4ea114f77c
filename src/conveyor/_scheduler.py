"""Jobs, chunks and chunk sizing: what to send next, and how much of it.

A *job* is one call of ``submit``/``apply_async`` (one item) or ``map``/``imap`` (many
items) with one function and one set of options. The engine cuts jobs into *chunks*, the
unit sent to a worker. Chunk size adapts to how long items take (measured in the worker),
so tiny tasks travel in big batches and slow ones one at a time, with no tuning; see
``docs/architecture.md#chunking``.

Nothing here blocks or owns a thread; the engine calls it under its lock.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._execute import CallMode

# A chunk should keep a worker busy this long: long enough that the ~100 us of overhead
# per chunk is ~1%, short enough that progress, cancellation and load balance stay smooth.
TARGET_CHUNK_S = 0.01
# Chunks bigger than this (pickled) are split: they would stall the channel for the others.
MAX_CHUNK_BYTES = 4 << 20
# Lazy input is never read further ahead than this many items per chunk.
MAX_LAZY_CHUNK = 4096
# Below this estimated chunk time a worker is given a second chunk to hold while it runs
# the first, hiding the round trip; above it, prefetch would only hurt load balance.
PREFETCH_BELOW_S = 0.05
_EWMA_WEIGHT = 0.5


@dataclass(frozen=True)
class TaskOptions:
    """Per-task policy. ``timeout``: seconds per task; ``retries``: re-runs after a crash."""

    timeout: float | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        timeout = self.timeout
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
                    f" {timeout!r}"
                )
            if not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise TypeError(
                f"retries must be an int, not {type(self.retries).__name__} {self.retries!r}"
            )
        if self.retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {self.retries!r}")


class Sink(Protocol):
    """Where a job's outcomes go. Called outside the engine lock, from any thread."""

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None: ...

    def fail(self, index: int, exc: BaseException) -> None: ...

    def input_failed(self, index: int, exc: BaseException) -> None: ...

    def close(self, total: int) -> None: ...

    def abort(self, exc: BaseException) -> None:
        """No more outcomes will come: everything not yet delivered fails with ``exc``."""

    def claim(self) -> bool:
        """Called just before items are sent; False withdraws them (a cancelled future)."""


class ChunkSizer:
    """Chooses chunk sizes from measured per-item time (EWMA), bytes per item and what is left.

    Until the first measurement arrives, chunks hold one item: a first guess that is too
    large costs load balance for the whole run, one that is too small costs one round trip.
    """

    def __init__(self, fixed: int | None, workers: int) -> None:
        self.fixed = fixed
        self.workers = workers
        self.item_s: float | None = None
        self.item_bytes: float | None = None

    def observe(self, items: int, compute_s: float, nbytes: int) -> None:
        if items <= 0:
            return
        per_item = compute_s / items
        self.item_s = (
            per_item
            if self.item_s is None
            else (_EWMA_WEIGHT * per_item + (1 - _EWMA_WEIGHT) * self.item_s)
        )
        self.item_bytes = nbytes / items

    def size(self, remaining: int | None) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.item_s is None:
            return 1
        size = TARGET_CHUNK_S / max(self.item_s, 1e-9)
        if self.item_bytes:
            size = min(size, MAX_CHUNK_BYTES / self.item_bytes)
        if remaining is None:
            size = min(size, MAX_LAZY_CHUNK)
        else:
            # Guided self-scheduling: chunks shrink as the end nears, so no worker is left
            # with a long tail while the others idle.
            size = min(size, math.ceil(remaining / (2 * self.workers)))
        return max(1, int(size))

    def chunk_seconds(self, size: int) -> float:
        return (self.item_s or 0.0) * size


class Chunk:
    """Items of one job sent to one worker as a unit."""

    __slots__ = (
        "attempt",
        "expected_s",
        "id",
        "indices",
        "items",
        "job",
        "nbytes",
        "sent_at",
        "started_at",
    )

    def __init__(self, cid: int, job: Job, indices: Sequence[int], items: list[Any], attempt: int):
        self.id = cid
        self.job = job
        self.indices = indices
        self.items = items
        self.attempt = attempt
        self.nbytes = 0
        self.sent_at = 0.0
        self.started_at: float | None = None
        self.expected_s = 0.0  # expected run time beyond one task's (timeout slack)

    def __len__(self) -> int:
        return len(self.items)


class Job:
    """A stream of calls of one function; the engine takes chunks from it.

    Items come from a sequence (sliced on demand, nothing copied up front), or are pushed
    by a feeder thread reading a lazy iterable. Items to run again after a crash take
    precedence, one per chunk.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: CallMode,
        sink: Sink,
        options: TaskOptions,
        sizer: ChunkSizer,
        items: Sequence[Any] | None = None,
    ) -> None:
        if not callable(fn):
            # Here, at submit, where the caller can see which call it was; in a worker
            # it would surface later, once per task, as "'int' object is not callable".
            raise TypeError(
                f"the task's function must be callable, not {type(fn).__name__} {fn!r:.80}"
            )
        self.id = next(Job._ids)
        self.fn = fn
        self.mode = mode
        self.sink = sink
        self.options = options
        self.sizer = sizer
        self.func_id = 0  # set by the engine
        self.func_bytes: bytes | None = None  # the pickled function, for process workers
        self.cancelled = False
        self._sequence = items
        self._next_index = 0
        self._batches: deque[list[Any]] = deque()
        self._retry: deque[tuple[Sequence[int], list[Any], int]] = deque()
        self.input_done = items is not None
        self.total = len(items) if items is not None else None
        self.finished = 0  # items with an outcome (result or error)

    # --- input -----------------------------------------------------------------------

    def push(self, batch: list[Any]) -> None:
        self._batches.append(batch)

    def end_input(self, total: int) -> None:
        self.input_done = True
        self.total = total

    def has_ready_items(self) -> bool:
        return bool(self._retry) or self._queued() > 0

    def _queued(self) -> int:
        if self._sequence is not None:
            return max(0, len(self._sequence) - self._next_index)
        return sum(len(b) for b in self._batches)

    def remaining_hint(self) -> int | None:
        """Items not yet sent, when the input's length is known (for guided chunking)."""
        if self._sequence is None:
            return None
        return self._queued()

    # --- cutting chunks ----------------------------------------------------------------

    def next_chunk(self, cid: int, size: int) -> Chunk:
        if self._retry:
            indices, items, attempt = self._retry.popleft()
            return Chunk(cid, self, indices, items, attempt)
        start = self._next_index
        if self._sequence is not None:
            stop = min(start + size, len(self._sequence))
            items = list(self._sequence[start:stop])
        else:
            items = self._take_batched(size)
            stop = start + len(items)
        self._next_index = stop
        return Chunk(cid, self, range(start, stop), items, 0)

    def _take_batched(self, size: int) -> list[Any]:
        head = self._batches[0]
        if len(head) <= size:
            self._batches.popleft()
            return head
        self._batches[0] = head[size:]
        return head[:size]

    def requeue(self, indices: Sequence[int], items: list[Any], attempt: int) -> None:
        """Send these items again (after their worker died), ahead of new ones."""
        self._retry.append((indices, items, attempt))

    def withdraw(self) -> int:
        """Drop every item not yet sent; return how many were dropped."""
        dropped = sum(len(items) for _, items, _ in self._retry) + self._queued()
        self._retry.clear()
        self._batches.clear()
        if self._sequence is not None:
            self._next_index = len(self._sequence)
        return dropped

    def release(self) -> None:
        """Drop the references to the job's input (it is complete or abandoned)."""
        self._sequence = None
        self._batches.clear()
        self._retry.clear()

    @property
    def complete(self) -> bool:
        return self.input_done and self.total is not None and self.finished >= self.total
