"""Frozen snapshots of a pool's counters, returned by ``stats()`` on every pool."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerStats:
    """One worker's counters.

    ``busy_s`` is time spent running tasks, measured in the worker; ``uptime_s`` is how
    long the worker has existed; the rest, ``waiting_s``, it spent waiting for work (or
    for the parent to read its results).
    """

    slot: int
    pid: int | None
    alive: bool
    tasks_done: int
    chunks_done: int
    busy_s: float
    started_at: float
    uptime_s: float = 0.0

    @property
    def waiting_s(self) -> float:
        return max(0.0, self.uptime_s - self.busy_s)


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool: what ran, what failed, what moved, and how it was chunked.

    Example::

        s = pool.stats()
        print(s.tasks_done, s.mean_chunk_size, [w.busy_s for w in s.workers])
    """

    backend: str
    size: int
    tasks_submitted: int
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_cancelled: int
    worker_crashes: int
    task_timeouts: int
    workers_started: int
    workers_recycled: int
    chunks_sent: int
    bytes_sent: int
    bytes_received: int
    last_chunk_size: int
    uptime_s: float
    workers: tuple[WorkerStats, ...] = field(default_factory=tuple)

    @property
    def mean_chunk_size(self) -> float:
        return self.tasks_done / self.chunks_sent if self.chunks_sent else 0.0

    @property
    def busy_fraction(self) -> float:
        """Share of worker-time spent running tasks (1.0: never waiting)."""
        total = self.uptime_s * max(1, self.size)
        return min(1.0, sum(w.busy_s for w in self.workers) / total) if total else 0.0


@dataclass
class Counters:
    """The engine's live counters (mutated under the engine lock)."""

    tasks_submitted: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_retried: int = 0
    tasks_cancelled: int = 0
    worker_crashes: int = 0
    task_timeouts: int = 0
    workers_started: int = 0
    workers_recycled: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    last_chunk_size: int = 0
    retired_busy_s: float = 0.0
