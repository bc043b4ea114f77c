"""Chunk sizing: how many of a job's tasks travel to a worker together.

Chunk size adapts to how long tasks take (measured in the worker), so tiny tasks travel
in big batches and slow ones one at a time, with no tuning; see
``docs/architecture.md#chunking``. What was learnt about a function outlives its job
(``Estimates``), so the next ``map`` or ``submit`` of it needs no one-task probe chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._identity import IdentityCache

# A chunk should keep a worker busy this long: long enough that the ~100 us of overhead
# per chunk is ~1%, short enough that progress, cancellation and load balance stay smooth.
TARGET_CHUNK_S = 0.01
# Guided chunking stops shrinking chunks at this much work.
MIN_CHUNK_S = 0.002
# Chunks bigger than this (pickled) are split: they would stall the worker's socket for the others.
MAX_CHUNK_BYTES = 4 << 20
# Lazy input is never read further ahead than this many items per chunk.
MAX_LAZY_CHUNK = 4096
# Below this estimated chunk time a worker is given a second chunk to hold while it runs
# the first, hiding the round trip; above it, prefetch would only hurt load balance.
PREFETCH_BELOW_S = 0.05
# A worker holds enough short chunks behind the running one to stay busy this long while
# the parent settles the others (many callers submitting tiny tasks), up to a number.
HOLD_S = 0.001
MAX_HELD_CHUNKS = 8
MAX_HELD_BYTES = 1 << 20
_EWMA_WEIGHT = 0.5


@dataclass(frozen=True)
class Pacing:
    """How big chunks are and how many a worker holds, for one backend's overheads.

    The defaults (the constants above) suit workers on this machine, ~100 us a chunk. A
    backend whose chunk costs milliseconds (Dask: a scheduler between the parent and the
    worker) aims at longer chunks and holds more of them, to hide a longer round trip.
    """

    target_chunk_s: float = TARGET_CHUNK_S
    min_chunk_s: float = MIN_CHUNK_S
    prefetch_below_s: float = PREFETCH_BELOW_S
    hold_s: float = HOLD_S
    max_held_chunks: int = MAX_HELD_CHUNKS
    max_held_bytes: int = MAX_HELD_BYTES


LOCAL_PACING = Pacing()


class ChunkSizer:
    """Chooses chunk sizes from measured per-item time (EWMA), bytes per item and what is left.

    Until the first measurement arrives, chunks hold one item: a first guess that is too
    large costs load balance for the whole run, one that is too small costs one round trip.
    """

    def __init__(self, fixed: int | None, workers: int, pacing: Pacing = LOCAL_PACING) -> None:
        self.fixed = fixed
        self.workers = workers
        self.pacing = pacing
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
        size = self.pacing.target_chunk_s / max(self.item_s, 1e-9)
        if self.item_bytes:
            size = min(size, MAX_CHUNK_BYTES / self.item_bytes)
        if remaining is None:
            size = min(size, MAX_LAZY_CHUNK)
        else:
            # Guided self-scheduling: chunks shrink as the end nears, so no worker is left
            # with a long tail while the others idle; but not below MIN_CHUNK_S of work,
            # or the tail would be W*log(N) chunks of overhead (700 for 1M tiny tasks on
            # 32 workers), and a tail of that length costs no balance worth having.
            guided = math.ceil(remaining / (2 * self.workers))
            floor = self.pacing.min_chunk_s / max(self.item_s, 1e-9)
            size = min(size, max(guided, floor))
        return max(1, int(size))

    def chunk_seconds(self, size: int) -> float:
        return (self.item_s or 0.0) * size


class Estimates:
    """Seconds and pickled bytes per task, for the functions the engine ran lately.

    A job's sizer starts from what the last job of the same function measured, instead
    of a one-task probe chunk; its own measurements take over from the first result.
    """

    def __init__(self, size: int = 256) -> None:
        self._known: IdentityCache[tuple[float, float | None]] = IdentityCache(size)

    def seed(self, fn: Callable[..., Any], sizer: ChunkSizer) -> None:
        known = self._known.get(fn)
        if known is not None and sizer.item_s is None:
            sizer.item_s, sizer.item_bytes = known

    def learn(self, fn: Callable[..., Any], sizer: ChunkSizer) -> None:
        if sizer.item_s is not None:
            self._known.put(fn, (sizer.item_s, sizer.item_bytes))


__all__ = [
    "LOCAL_PACING",
    "MAX_CHUNK_BYTES",
    "PREFETCH_BELOW_S",
    "TARGET_CHUNK_S",
    "ChunkSizer",
    "Estimates",
    "Pacing",
]
